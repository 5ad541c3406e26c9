-- omnisync schema 12: the claim may leave the move of captured rows to another connection
-- (issue 15).
--
-- Up to version 11 every claim that found rows in omnisync.capture first moved up to 2,000 of
-- them into the outbox, in its own transaction, and only then claimed. A move of 2,000 rows takes
-- 30 - 40 ms; while captured rows waited (a burst, a bulk statement, the start after an outage)
-- each claim held the work connection that long, and the request slots ran dry behind it
-- (bench/drain, L = 5 ms, M = 16: about 200 ms of empty slots in the first 0.4 s, 0.82 - 0.87 of
-- the fake's ceiling; the same cell with the backlog moved before the daemon started, 0.88 -
-- 0.90). From this version the daemon moves such a backlog on another connection, move after
-- move, while its claims take what the moves have put in the outbox (lib/dispatcher.c, "Moves
-- apart"). Its claims then ask claim_batch() not to move.
--
-- claim_batch() with p_move: moves at most p_move captured rows before it claims (0: neither
-- moves nor looks into capture; captured_left is then false). Everything else is the claim of
-- version 5, planned as version 9 says. claim_batch() with six arguments stays for a daemon of an
-- earlier version still running between `omnisync migrate` and its restart; it moves 2,000 as
-- before. The daemon's own moves call omnisync.move_apart() (below). The moves themselves are omnisync.move_captured() unchanged: the same advisory lock,
-- so a move here and a claim's move elsewhere (an older daemon, another process) never run at
-- once, in seq order, which is what keeps each customer's rows in commit order
-- (sql/003_capture.sql).
CREATE FUNCTION omnisync.claim_batch(p_limit integer, p_lease_ms bigint, p_process text,
                                     p_per_customer integer, p_sources text[], p_scan integer,
                                     p_move integer)
RETURNS TABLE (id bigint, head_id bigint, source text, brand_id bigint, primary_id text,
               op text, old_data text, new_data text, attempts integer, orphaned boolean,
               created_epoch double precision, sync text, captured_left boolean,
               passed_over boolean)
LANGUAGE plpgsql SET enable_sort = off SET enable_seqscan = off SET jit = off
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    r record;
    heads bigint[] := '{}';
    paused_sources text[];
    scanned integer := 0;
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
        FOR r IN
            SELECT o.id, o.source, o.brand_id, o.primary_id FROM omnisync.outbox o
            WHERE o.status = 'pending' AND o.next_attempt_at <= now()
              AND (o.locked_until IS NULL OR o.locked_until < now())
              AND o.source = ANY (p_sources) AND o.source <> ALL (paused_sources)
            ORDER BY o.id
        LOOP
            scanned := scanned + 1;
            IF scanned > p_scan THEN
                v_passed_over := true;
                EXIT;
            END IF;
            IF EXISTS (
                SELECT 1 FROM omnisync.outbox p
                WHERE p.source = r.source AND p.brand_id = r.brand_id
                  AND p.primary_id = r.primary_id
                  AND p.status IN ('pending', 'held') AND p.id < r.id) THEN
                -- Due once this process records that row's outcome, if it holds the row.
                IF NOT v_passed_over THEN
                    v_passed_over := EXISTS (
                        SELECT 1 FROM omnisync.outbox p
                        WHERE p.source = r.source AND p.brand_id = r.brand_id
                          AND p.primary_id = r.primary_id
                          AND p.status = 'pending' AND p.id < r.id AND p.locked_by = p_process);
                END IF;
                CONTINUE;
            END IF;
            -- Re-checked on the newest row version: another process may have leased it
            -- meanwhile.
            PERFORM 1 FROM omnisync.outbox h
            WHERE h.id = r.id AND h.status = 'pending'
              AND (h.locked_until IS NULL OR h.locked_until < now())
            FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
            heads := heads || r.id;
            EXIT WHEN cardinality(heads) >= p_limit;
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

-- The daemon's move apart: move_captured() without waiting for the lock, and -1 instead of 0 when
-- another process holds it. That process is moving (a move apart of its own, or a claim of a
-- daemon of an earlier version): the daemon keeps its claims off the lock and tries again shortly,
-- where a claim that moves would wait up to 200 ms for it each time. Taking the lock again in the
-- same transaction succeeds when this call's move held it, so -1 means held elsewhere.
CREATE FUNCTION omnisync.move_apart(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    moved integer;
BEGIN
    moved := omnisync.move_captured(p_limit, 0);
    IF moved = 0 AND NOT pg_try_advisory_xact_lock(hashtext('omnisync capture move')) THEN
        RETURN -1;
    END IF;
    RETURN moved;
END
$$;
