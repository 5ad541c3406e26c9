-- lib/dispatcher.c: claim due rows, oldest first, one customer's pending rows together.
-- $1 customers to claim, $2 lease in milliseconds, $3 this process, $4 rows per customer at most,
-- $5 the configured sources (rows of a source no longer configured wait untouched).
--
-- A head is a customer's earliest unfinished row; a customer whose earliest unfinished row is
-- leased, in backoff or held has no head, so per-customer order holds across processes.
-- SKIP LOCKED lets several processes claim at once without waiting on each other.
WITH heads AS (
    SELECT o.id, o.source, o.brand_id, o.primary_id
    FROM omnisync.outbox o
    WHERE o.status = 'pending'
      AND o.source = ANY ($5::text[])
      AND o.next_attempt_at <= now()
      AND (o.locked_until IS NULL OR o.locked_until < now())
      AND NOT EXISTS (
          SELECT 1 FROM omnisync.outbox p
          WHERE p.source = o.source AND p.brand_id = o.brand_id AND p.primary_id = o.primary_id
            AND p.status IN ('pending', 'held') AND p.id < o.id)
      AND NOT EXISTS (
          SELECT 1 FROM omnisync.control c WHERE c.paused AND c.scope IN ('*', o.source))
    ORDER BY o.id
    LIMIT $1
    FOR UPDATE OF o SKIP LOCKED
), members AS (
    SELECT m.id, m.locked_by AS prev_locked_by, h.id AS head_id
    FROM heads h
    CROSS JOIN LATERAL (
        SELECT m.id, m.locked_by FROM omnisync.outbox m
        WHERE m.source = h.source AND m.brand_id = h.brand_id AND m.primary_id = h.primary_id
          AND m.status = 'pending' AND m.id >= h.id
        ORDER BY m.id
        LIMIT $4) m
)
UPDATE omnisync.outbox o
SET locked_until = now() + $2::bigint * interval '1 millisecond', locked_by = $3
FROM members
WHERE o.id = members.id
RETURNING o.id, members.head_id, o.source, o.brand_id, o.primary_id, o.op,
          o.old_data::text, o.new_data::text, o.attempts,
          members.prev_locked_by IS NOT NULL AS orphaned,
          extract(epoch FROM o.created_at)::double precision AS created_epoch,
          (SELECT row_to_json(s)::text FROM omnisync.sync_state s
           WHERE s.source = o.source AND s.brand_id = o.brand_id
             AND s.primary_id = o.primary_id) AS sync;
