-- omnisync schema 8: less work per delivered row inside the claim (issue 15).
--
-- Where PostgreSQL's CPU per delivered row goes (bench/drain, M = 64, STATEMENTS=1 and perf on a
-- backend running claim_batch() and record_outcomes() 64 rows at a time): the claim about 45 µs
-- (the move from capture, the walk, the lease), record_outcomes() about 50 µs (the outbox row
-- done, the attempt with its foreign-key check, the sync state). Most of it is row versions and
-- index entries: per row, an outbox insert, the lease, the done update, an attempt and a sync
-- state, twelve index entries among them. Two of those costs are not needed, and this version
-- drops them. Nothing else changes: the same statements, the same rows, the same answers.
--
-- The lease as a HOT update. The claim's UPDATE sets locked_until and locked_by, which no index
-- reads, so PostgreSQL could keep the new row version on its page without new index entries
-- (a heap-only tuple), but only where the page has room. The move fills each page to the
-- brim, so every lease went to another page and wrote an entry into outbox_pkey,
-- outbox_pending and outbox_customer (text keys): 3 of the row's 12 entries. With half of
-- each page left free, a page's rows all find room for their lease versions (a claim leases
-- rows that lie together: they were moved together), and the done update later finds room
-- again once pruning has removed the lease's old versions. On a backend claiming and recording
-- 10,000 rows 64 at a time: 9,535 of 20,000 updates HOT (1,164 before), 7 % less CPU per row;
-- fillfactor 70 made half of them HOT and no difference that could be measured. With the
-- inlining below, bench/drain at L = 5 ms, M = 64: 0.142 -> 0.119 ms per row (bench/README.md).
-- The price is room: outbox pages written from now on hold at most half their rows' worth, so
-- the rows retention keeps (7 days by default) take up to twice the pages, and a scan of the
-- whole table (the service's status count, every 15 s) reads twice the pages for the same rows.
-- The done update stays a non-HOT one: status and delivered_at are read by index predicates and
-- expressions, and those indexes are what claims, operators and retention use. Existing pages
-- keep their fill; only pages written from now on leave the room.
ALTER TABLE omnisync.outbox SET (fillfactor = 50);

-- captured_data() inlined. The move calls it twice per row (old and new values); as written in
-- version 3 (a SELECT with a FROM clause, and to_jsonb(), which is only stable) PostgreSQL ran
-- it as a function of its own each time: an executor started and ended per call, 4 µs each in
-- bench/drain's statement figures. A single expression of immutable functions is inlined into
-- the move's INSERT instead. The same jsonb for every input (checked: keys with and without
-- erase, erase true/false/NULL/repeated, repeated keys, NULL arrays, empty arrays) and the same
-- errors (a NULL key, mismatched arrays, an erase value that is no boolean).
CREATE OR REPLACE FUNCTION omnisync.captured_data(p_keys text[], p_values text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN 'erase' = ANY (p_keys)
                THEN jsonb_set(jsonb_object(p_keys, p_values), '{erase}',
                               CASE (jsonb_object(p_keys, p_values)->>'erase')::boolean
                                    WHEN true THEN 'true'::jsonb
                                    WHEN false THEN 'false'::jsonb
                                    ELSE 'null'::jsonb END)
                ELSE jsonb_object(p_keys, p_values) END
$$;
