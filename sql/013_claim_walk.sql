-- omnisync schema 13: the claim walks the due rows a batch at a time, not a row at a time
-- (issue 15).
--
-- claim_batch() of version 12 walked the due rows in a PL/pgSQL loop and ran two statements for
-- each: whether an earlier row of the same customer is still pending or held (then the row waits
-- behind it), and the row's lock (FOR UPDATE SKIP LOCKED, re-checked on its newest version).
-- Each statement had its executor start-up and its snapshot, and the loop its fetch: about 5 us
-- of PostgreSQL's CPU per claimed row, a sixth of the claim (bench/row-writes' claim step, one
-- session claiming 64,000 rows 64 at a time and marking them done: 30.9 - 33.3 us a row with the
-- loop, 25.5 - 26.4 with this walk).
--
-- This version takes the next due rows in id order with one statement, up to the heads still
-- wanted, and tests all of them there for an earlier row of their customer (and, for one that
-- waits, whether this process holds that row: passed_over, as before); then it locks the rows
-- that do not wait with one statement (FOR UPDATE SKIP LOCKED, on their newest version). When
-- some waited or were taken meanwhile, the walk goes on after the last row it read, until it has
-- p_limit heads, the due rows run out or it has read p_scan rows. What a claim returns is what
-- version 12 returned: the same heads in the same order, each with its customer's next pending
-- rows. Two differences, both at the edges:
-- - the earlier-row test runs on the walk's snapshot, where the loop took a new one per row a
--   moment later: a row of the customer committed in between (by a backfill or a reconcile,
--   whose rows do not pass through the move) is seen by the next claim instead;
-- - a walk that ends at exactly p_scan rows says passed_over (one claim more, at most) where the
--   loop looked one row further first.
-- Its signature, and so every daemon of version 12 still running until its restart, is
-- unchanged.
CREATE OR REPLACE FUNCTION omnisync.claim_batch(p_limit integer, p_lease_ms bigint,
                                                p_process text, p_per_customer integer,
                                                p_sources text[], p_scan integer,
                                                p_move integer)
RETURNS TABLE (id bigint, head_id bigint, source text, brand_id bigint, primary_id text,
               op text, old_data text, new_data text, attempts integer, orphaned boolean,
               created_epoch double precision, sync text, captured_left boolean,
               passed_over boolean)
LANGUAGE plpgsql SET enable_sort = off SET enable_seqscan = off SET jit = off
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    heads bigint[] := '{}';
    found bigint[];
    behind_ours boolean;
    walked integer;
    last_id bigint;
    paused_sources text[];
    scanned integer := 0;
    after_id bigint := 0;
    want integer;
    moved integer;
    v_captured_left boolean := false;
    v_passed_over boolean := false;
BEGIN
    IF p_move > 0 AND EXISTS (SELECT 1 FROM omnisync.capture) THEN
        moved := omnisync.move_captured(p_move, 200);
        -- Nothing moved although rows were there: another process holds the move.
        v_captured_left := moved = 0 OR moved >= p_move;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM omnisync.control c WHERE c.paused AND c.scope = '*') THEN
        paused_sources := ARRAY(SELECT c.scope FROM omnisync.control c WHERE c.paused);
        LOOP
            EXIT WHEN cardinality(heads) >= p_limit;
            IF scanned >= p_scan THEN
                v_passed_over := true;
                EXIT;
            END IF;
            want := least(p_limit - cardinality(heads), p_scan - scanned);
            -- The next due rows in id order. One whose customer has an earlier row pending or
            -- held waits for it; if this process holds that row, its outcome makes this one due
            -- (passed_over). `|| ''` keeps that second test off the partial index
            -- outbox_pending, as in sql/004_claim_plans.sql.
            SELECT coalesce(array_agg(w.id ORDER BY w.id) FILTER (WHERE NOT w.waits), '{}'),
                   coalesce(bool_or(w.waits AND EXISTS (
                       SELECT 1 FROM omnisync.outbox p
                       WHERE p.source = w.source AND p.brand_id = w.brand_id
                         AND p.primary_id = w.primary_id
                         AND p.status || '' = 'pending' AND p.id < w.id
                         AND p.locked_by = p_process)), false),
                   count(*), max(w.id)
            INTO found, behind_ours, walked, last_id
            FROM (SELECT o.id, o.source, o.brand_id, o.primary_id,
                         EXISTS (SELECT 1 FROM omnisync.outbox p
                                 WHERE p.source = o.source AND p.brand_id = o.brand_id
                                   AND p.primary_id = o.primary_id
                                   AND p.status IN ('pending', 'held') AND p.id < o.id) AS waits
                  FROM omnisync.outbox o
                  WHERE o.status = 'pending' AND o.next_attempt_at <= now()
                    AND (o.locked_until IS NULL OR o.locked_until < now())
                    AND o.source = ANY (p_sources) AND o.source <> ALL (paused_sources)
                    AND o.id > after_id
                  ORDER BY o.id
                  LIMIT want) w;
            EXIT WHEN walked = 0;
            scanned := scanned + walked;
            after_id := last_id;
            v_passed_over := v_passed_over OR behind_ours;
            -- Locked on their newest version: another process may have leased one since.
            heads := heads || ARRAY(
                SELECT h.id FROM omnisync.outbox h
                WHERE h.id = ANY (found) AND h.status = 'pending'
                  AND (h.locked_until IS NULL OR h.locked_until < now())
                ORDER BY h.id
                FOR UPDATE SKIP LOCKED);
            EXIT WHEN walked < want;
        END LOOP;

        RETURN QUERY
        WITH members AS (
            SELECT m.id, m.locked_by AS prev_locked_by, h.id AS head_id
            FROM omnisync.outbox h
            CROSS JOIN LATERAL (
                SELECT m.id, m.locked_by FROM omnisync.outbox m
                WHERE m.source = h.source AND m.brand_id = h.brand_id
                  -- `|| ''` hides the partial index outbox_pending from this lookup
                  -- (sql/004_claim_plans.sql).
                  AND m.primary_id = h.primary_id AND m.status || '' = 'pending' AND m.id >= h.id
                ORDER BY m.id
                LIMIT p_per_customer) m
            WHERE h.id = ANY (heads)
        )
        UPDATE omnisync.outbox o
        SET locked_until = now() + p_lease_ms * interval '1 millisecond', locked_by = p_process
        FROM members
        WHERE o.id = members.id
        RETURNING o.id, members.head_id, o.source, o.brand_id, o.primary_id, o.op,
                  o.old_data::text, o.new_data::text, o.attempts,
                  members.prev_locked_by IS NOT NULL,
                  extract(epoch FROM o.created_at)::double precision,
                  (SELECT row_to_json(s)::text FROM omnisync.sync_state s
                   WHERE s.source = o.source AND s.brand_id = o.brand_id
                     AND s.primary_id = o.primary_id),
                  NULL::boolean, NULL::boolean;
    END IF;

    -- The status row: the output columns not set here are still NULL.
    captured_left := v_captured_left;
    passed_over := v_passed_over;
    RETURN NEXT;
END
$$;
