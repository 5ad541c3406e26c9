-- omnisync schema 7: a multi-row DELETE is captured as one row holding its keys (issue 14).
--
-- Up to version 6 the capture trigger wrote one omnisync.capture row per deleted customer. For a
-- DELETE that row is most of what capture adds, as a DELETE itself writes little (bench/bulk-capture,
-- 200,000 rows: 2.9 x the bare statement's time added). From this version the trigger
-- (sql/trigger_template.sql) writes, for a DELETE of more than one row, one row per statement
-- and brand: op 'delete_many', keys '{primary_id}', and in old_values the primary ids of all the
-- customers it deleted, primary_id ''. What that costs the CRM's statement is a read of the
-- transition table and one array. Backend CPU of a 200,000-row DELETE (scratch cluster, medians
-- of 3 - 5 interleaved runs): no trigger 117 ms; the transition table PostgreSQL fills for any
-- trigger that asks for one, before the trigger runs, +77 ms; reading it in the trigger +21 ms
-- more; the array +21 ms more; this capture in all +130 ms (1.1 x), against +331 ms (2.8 x) for a
-- row per customer. pglz compressing the array added 37 ms, hence STORAGE EXTERNAL below. A
-- single-row DELETE keeps the row of version 3: one row, one key, the same as before.
--
-- The daemon's move expands a statement row into the rows of version 3 (op 'delete', one primary
-- id each, the statement's seq, txid and captured_at), so the outbox, delivery, the purge guard
-- and every operator command see exactly the rows they saw before. Rows of the old shape
-- (captured before the upgrade, not yet moved) are moved as they were.
--
-- Order. The expanded rows keep the statement's seq: the argument of sql/003_capture.sql holds
-- unchanged (rows sharing a seq are one statement's, of different customers; per customer, seq
-- order is commit order). What is new is that one captured row stands for many seq-ordered
-- rows. A batch (p_limit) is the p_limit first rows in seq order with a statement row last
-- among the rows of its seq; if a statement row falls into it, the move first expands that
-- row's first keys (at most max(p_limit, 50,000)) into rows of their own in capture, with the
-- same seq, keeping the rest in the statement row, and chooses again. A batch that no statement
-- row falls into holds rows that all come before every key still in a statement row, so no
-- customer's later change is moved ahead of its delete. The slice bounds a claim's work (a
-- slice of 50,000 rows is written in about the time of a batch) and the rewrites of the
-- remaining array (a million keys: 20 slices). A move of everything (p_limit NULL: operator
-- commands) expands every statement row first, in the statement that takes them out, so a
-- statement row committed meanwhile is neither lost nor expanded twice.
--
-- Nothing is skipped, and a rollback leaves nothing: the statement row is written in the CRM's
-- transaction like the rows it replaces, and a late commit is the case of sql/003_capture.sql.

-- The array of a big DELETE goes out of line uncompressed: pglz spent more than the rest of the
-- capture did (above). Only rows written from now on; a small array stays in the row.
ALTER TABLE omnisync.capture ALTER COLUMN old_values SET STORAGE EXTERNAL;

CREATE OR REPLACE FUNCTION omnisync.move_captured(p_limit integer DEFAULT NULL,
                                                  p_wait_ms integer DEFAULT 0)
RETURNS integer LANGUAGE plpgsql SET enable_sort = on AS $$
DECLARE
    moved integer;
    waited integer := 0;
    picked tid[];
    many boolean;
    s record;
    slice integer := greatest(p_limit, 50000);
BEGIN
    WHILE NOT pg_try_advisory_xact_lock(hashtext('omnisync capture move')) LOOP
        IF waited >= p_wait_ms THEN
            RETURN 0;
        END IF;
        PERFORM pg_sleep(0.005);
        waited := waited + 5;
    END LOOP;
    IF p_limit IS NULL THEN
        -- Every statement row into rows of their own, then everything, as version 3 did.
        WITH many AS (
            DELETE FROM omnisync.capture c WHERE c.op = 'delete_many' RETURNING c.*
        )
        INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys, old_values,
                                      txid, captured_at)
        SELECT m.seq, m.source, m.brand_id, k.id, 'delete', '{primary_id}'::text[], ARRAY[k.id],
               m.txid, m.captured_at
        FROM many m CROSS JOIN LATERAL unnest(m.old_values) AS k(id);
        WITH taken AS (
            DELETE FROM omnisync.capture RETURNING *
        )
        INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, old_data, new_data, txid,
                                     created_at)
        SELECT t.source, t.brand_id, t.primary_id, t.op,
               omnisync.captured_data(t.keys, t.old_values),
               omnisync.captured_data(t.keys, t.new_values), t.txid, t.captured_at
        FROM taken t
        ORDER BY t.seq;
    ELSE
        LOOP
            -- The batch: the p_limit first rows by seq, a statement row after the rest of its
            -- seq (the rows expanded from it).
            SELECT array_agg(x.ctid), coalesce(bool_or(x.op = 'delete_many'), false)
            INTO picked, many
            FROM (SELECT c.ctid, c.op FROM omnisync.capture c
                  ORDER BY c.seq, c.op = 'delete_many' LIMIT p_limit) x;
            EXIT WHEN NOT many;
            -- A statement row is in it: its first keys into rows of their own, then again.
            SELECT c.ctid, c.seq, c.source, c.brand_id, c.old_values, c.txid, c.captured_at
            INTO s
            FROM omnisync.capture c
            WHERE c.ctid = ANY (picked) AND c.op = 'delete_many'
            ORDER BY c.seq
            LIMIT 1;
            INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys, old_values,
                                          txid, captured_at)
            SELECT s.seq, s.source, s.brand_id, k.id, 'delete', '{primary_id}'::text[],
                   ARRAY[k.id], s.txid, s.captured_at
            FROM unnest(s.old_values[1:slice]) AS k(id);
            IF cardinality(s.old_values) > slice THEN
                UPDATE omnisync.capture c SET old_values = s.old_values[slice + 1:]
                WHERE c.ctid = s.ctid;
            ELSE
                DELETE FROM omnisync.capture c WHERE c.ctid = s.ctid;
            END IF;
        END LOOP;
        -- The batch by row address (the advisory lock keeps every other mover out, so the rows
        -- picked are still there).
        WITH taken AS (
            DELETE FROM omnisync.capture c WHERE c.ctid = ANY (picked)
            RETURNING c.*
        )
        INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, old_data, new_data, txid,
                                     created_at)
        SELECT t.source, t.brand_id, t.primary_id, t.op,
               omnisync.captured_data(t.keys, t.old_values),
               omnisync.captured_data(t.keys, t.new_values), t.txid, t.captured_at
        FROM taken t
        ORDER BY t.seq;
    END IF;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;
