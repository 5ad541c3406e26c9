-- omnisync schema 5: the daemon's claim says what it left behind, and moves captured rows only
-- when there are some (issues 14 and 15).
--
-- The daemon of this version calls omnisync.claim_batch(): claim() of version 3 with two answers
-- more. claim() stays, for a daemon of an earlier version still running between `omnisync
-- migrate` and its restart, as claim_batch() without them; claim_outbox(), which held the claim
-- since version 3, goes: claim_batch() holds it now, in one PL/pgSQL call instead of three
-- nested ones (claim() -> move_captured() -> claim_outbox()).
--
-- What it left behind. The daemon claimed again after every recorded outcome, because an outcome
-- may make its customer's later rows due: at one request slot that was one claim per delivered
-- row, most of them finding nothing (bench/drain: 1,120 claims per 1,000 rows at L = 100 ms).
-- It now claims after an outcome only when rows may be due that no wake-up (NOTIFY, poll,
-- reconnect) will announce (lib/dispatcher.c, "Claim scheduling"), and two of those only the
-- claim can see, so it says them in a status row:
-- - captured_left: captured rows may still be in omnisync.capture. Their ring has been heard,
--   and the claim moved only the first 2,000 (or another process held the move and the claim
--   gave up waiting). The daemon claims again (at its low-water mark) while it is true: while
--   an operator's command moves a large capture at once, that is a claim every 200 ms.
-- - passed_over: the claim passed over due rows that this process's outcomes will make
--   claimable: rows behind an earlier row of their customer that this process holds (a change
--   committed while that customer was in flight), or rows beyond p_scan. The daemon claims
--   again after its next recorded outcome. Rows behind another process's row, a row in backoff
--   or a held row are not counted: no outcome of this process releases them (the other
--   process's claim after its outcome, the retry's own outcome and the operator's ring do).
--
-- Moving only when there is something to move. move_captured() takes an advisory lock and runs
-- its DELETE ... INSERT; run by every claim, also with nothing captured, it raised PostgreSQL's
-- CPU per delivered row from 0.12 - 0.14 ms to 0.15 - 0.23 ms (bench/drain, M = 64). The claim
-- now first looks whether capture holds a committed row, with the statement's snapshot as the
-- move would: it misses no row the move would have taken, and a row committed after the look is
-- one the move would have missed too. Such a row's transaction rings after its commit (or is
-- covered by its session's ring 10 ms before, the daemon's claim 50 ms after each ring, or the
-- poll), and the claim that starts sees it (sql/003_capture.sql, "Nothing is skipped"). Rows
-- another process is moving right now stay visible here until it commits, so the claim still
-- waits up to 200 ms for that move. What the look never does is skip the move because the
-- outbox has rows enough: a captured change must not wait behind rows written straight into the
-- outbox (a backfill). Everything sql/003_capture.sql says of the move holds unchanged: the same
-- function, at most 2,000 rows a claim in seq order, under the same lock, in the claim's
-- transaction, before the claim looks at the outbox.
--
-- The answer: the claimed rows as claim() returns them (the two columns more NULL), then one
-- status row: id and every other column NULL but captured_left and passed_over. lib/outbox.c
-- reads it (outbox_claim_row, outbox_claim_left, outbox_claim_passed_over).
--
-- The claim itself is claim_outbox() of version 4 (sql/004_claim_plans.sql says why the member
-- lookup reads as it does), with passed_over counted where it skips a row.
CREATE FUNCTION omnisync.claim_batch(p_limit integer, p_lease_ms bigint, p_process text,
                                     p_per_customer integer, p_sources text[], p_scan integer)
RETURNS TABLE (id bigint, head_id bigint, source text, brand_id bigint, primary_id text,
               op text, old_data text, new_data text, attempts integer, orphaned boolean,
               created_epoch double precision, sync text, captured_left boolean,
               passed_over boolean)
-- Statistics lag behind a bulk enqueue (a backfill, a burst after an outage): then every plan
-- looks cheap and the planner may sort the whole backlog. Without sorts, the only plan left is
-- the walk of the pending index in id order that the loop needs. (move_captured() sets
-- enable_sort back on for its own top-N sort.)
LANGUAGE plpgsql SET enable_sort = off SET enable_seqscan = off SET jit = off AS $$
DECLARE
    r record;
    heads bigint[] := '{}';
    paused_sources text[];
    scanned integer := 0;
    moved integer;
    v_captured_left boolean := false;
    v_passed_over boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM omnisync.capture) THEN
        moved := omnisync.move_captured(2000, 200);
        -- Nothing moved although rows were there: another process holds the move.
        v_captured_left := moved = 0 OR moved >= 2000;
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

-- The claim of versions 3 and 4, for a daemon of an earlier version: the same rows, without the
-- status row.
CREATE OR REPLACE FUNCTION omnisync.claim(p_limit integer, p_lease_ms bigint, p_process text,
                                          p_per_customer integer, p_sources text[],
                                          p_scan integer)
RETURNS TABLE (id bigint, head_id bigint, source text, brand_id bigint, primary_id text,
               op text, old_data text, new_data text, attempts integer, orphaned boolean,
               created_epoch double precision, sync text)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT b.id, b.head_id, b.source, b.brand_id, b.primary_id, b.op, b.old_data,
                        b.new_data, b.attempts, b.orphaned, b.created_epoch, b.sync
                 FROM omnisync.claim_batch(p_limit, p_lease_ms, p_process, p_per_customer,
                                           p_sources, p_scan) b
                 WHERE b.id IS NOT NULL;
END
$$;

DROP FUNCTION omnisync.claim_outbox(integer, bigint, text, integer, text[], integer);
