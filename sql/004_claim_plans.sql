-- omnisync schema 4: claim's member lookup keeps to the customer's rows when the outbox's
-- statistics lag behind a burst.
--
-- Since version 3 (sql/003_capture.sql) omnisync.claim() moves captured rows into the outbox and
-- then calls omnisync.claim_outbox(), which holds the claim of version 1: this migration
-- replaces claim_outbox's body, and claim() stays the wrapper.
--
-- claim's second step finds, for each claimed head, the customer's next pending rows in id
-- order. Two indexes give rows in id order: outbox_customer (source, brand_id, primary_id, id),
-- which reads just that customer's rows, and outbox_pending (id), which walks every pending row
-- from the head on and filters by customer. When a daemon has idled on a small outbox and a
-- burst of thousands of rows arrives (a bulk import, a backlog after an outage), the statistics
-- still describe the small table until autovacuum's ANALYZE, the two look alike to the planner,
-- and it may take outbox_pending: every claim then walks the whole backlog once per head.
-- Measured with bench/peers (STATEMENTS=1 PARTS=drain: the daemon idles on 20 rows, then 4,000
-- arrive in one transaction, L = 20 ms, M = 16): 145 - 242 ms per claim for this one statement
-- (about 19 s for 4,000 rows), the backends at 1.3 - 1.9 ms of CPU per delivered row against
-- 0.4 once the statistics caught up (auto_explain: Index Scan using outbox_pending, Index Cond
-- id >= h.id, Filter on the customer). The lookup's status test is written so that the partial
-- index's predicate does not match it, which leaves outbox_customer; ordering by its whole key
-- does not do it (the planner drops the key columns fixed by the join). The rest of the function
-- is unchanged.
CREATE OR REPLACE FUNCTION omnisync.claim_outbox(p_limit integer, p_lease_ms bigint,
                                                 p_process text, p_per_customer integer,
                                                 p_sources text[], p_scan integer)
RETURNS TABLE (id bigint, head_id bigint, source text, brand_id bigint, primary_id text,
               op text, old_data text, new_data text, attempts integer, orphaned boolean,
               created_epoch double precision, sync text)
-- Statistics lag behind a bulk enqueue (a backfill, a burst after an outage): then every plan
-- looks cheap and the planner may sort the whole backlog. Without sorts, the only plan left is
-- the walk of the pending index in id order that the loop needs.
LANGUAGE plpgsql SET enable_sort = off SET enable_seqscan = off SET jit = off AS $$
DECLARE
    r record;
    heads bigint[] := '{}';
    paused_sources text[];
    scanned integer := 0;
BEGIN
    IF EXISTS (SELECT 1 FROM omnisync.control c WHERE c.paused AND c.scope = '*') THEN
        RETURN;
    END IF;
    paused_sources := ARRAY(SELECT c.scope FROM omnisync.control c WHERE c.paused);
    FOR r IN
        SELECT o.id, o.source, o.brand_id, o.primary_id FROM omnisync.outbox o
        WHERE o.status = 'pending' AND o.next_attempt_at <= now()
          AND (o.locked_until IS NULL OR o.locked_until < now())
          AND o.source = ANY (p_sources) AND o.source <> ALL (paused_sources)
        ORDER BY o.id
    LOOP
        scanned := scanned + 1;
        EXIT WHEN scanned > p_scan;
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM omnisync.outbox p
            WHERE p.source = r.source AND p.brand_id = r.brand_id AND p.primary_id = r.primary_id
              AND p.status IN ('pending', 'held') AND p.id < r.id);
        -- Re-checked on the newest row version: another process may have leased it meanwhile.
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
              -- `|| ''` hides the partial index outbox_pending from this lookup (its predicate
              -- no longer matches): walking it from the head on reads every later pending row
              -- of every customer; outbox_customer reads just this customer's.
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
                 AND s.primary_id = o.primary_id);
END
$$;
