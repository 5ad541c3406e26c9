-- omnisync schema 10: a multi-row UPDATE is captured as a few rows holding its customers' old and
-- new values (issue 14).
--
-- Up to version 9 the capture trigger wrote one omnisync.capture row per updated customer, its
-- old and new versions paired by a join of the two transition tables and filtered to the rows
-- whose mapped columns changed. For a 200,000-row UPDATE of a mapped column that was 1.5 x the
-- bare statement's time added (bench/bulk-capture): the pairing join of two 200,000-row tables
-- (spilled to disk at the CRM's work_mem), the arrays, and above all 200,000 rows written, each
-- repeating its source, keys and op. Backend CPU of that UPDATE (scratch cluster, medians of 4
-- interleaved runs each): a row per customer +1,350 ms over 1,554 ms without a trigger; this
-- capture +785 ms over 1,190 ms (bench/bulk-capture: 0.7 - 0.9 x the bare time added).
--
-- From this version the trigger (sql/trigger_template.sql) writes, for an UPDATE of more than one
-- row, one row per 10,000 updated customers: op 'update_many', primary_id '', brand_id 0, the
-- keys as before, and in old_rows and new_rows the old and new versions of those customers as
-- omnisync.captured_row values: the customer's position in the statement, its primary id and
-- brand (new side only), and its mapped values as the row form had them. Each side is read from
-- its transition table once, numbered, and both go through one aggregate by chunk; no join
-- pairs them. The daemon's move pairs old and new by position, drops the pairs whose mapped
-- values are all equal (the filter the trigger applied before) and writes the rows of version 3
-- (op 'update', one customer each, the statement's seq, txid and captured_at), so the outbox,
-- delivery and every operator command see exactly the rows they saw before. What the CRM's
-- statement pays for is two reads of the transition tables, the values and a few rows; an
-- UPDATE of unmapped columns only now writes those rows too, and moves nothing. A single-row
-- UPDATE keeps the row of version 3 (bench/trigger-overhead measures that path).
--
-- Pairing. The positions come from row_number() over each transition table as it is read:
-- PostgreSQL appends both versions of each updated row to the two tables in the same step, and a
-- read returns them in that order (the argument the row form made for its join). Each element
-- carries its position, so the pairing does not depend on the order an aggregate keeps inside a
-- chunk, and a changed primary id stays one update (delivery reports it).
--
-- Order, and what is skipped or lost: as for a multi-row DELETE (sql/007_statement_deletes.sql).
-- The expanded rows keep the statement's seq; a statement row sorts after the other rows of its
-- seq; a batch a statement row falls into expands that row first and chooses again. A chunk of
-- 10,000 customers is expanded whole (below the slice a DELETE's row is cut into). The rows are
-- written in the CRM's transaction, so a rollback leaves nothing and a late commit is the case
-- of sql/003_capture.sql.
--
-- Memory. The chunks bound each value (10,000 customers: about 2 MB) far below PostgreSQL's
-- 1 GB, whatever the statement's size, and the aggregate that builds them spills to disk at the
-- CRM session's work_mem like the join it replaces did.

CREATE TYPE omnisync.captured_row AS (
    pos        integer,  -- the customer's place in its statement (old and new share it)
    primary_id text,     -- new side only: what the row form wrote in capture.primary_id
    brand_id   bigint,   -- new side only: likewise capture.brand_id
    vals       text[]    -- the mapped values, in the order of capture.keys
);

ALTER TABLE omnisync.capture ADD COLUMN old_rows omnisync.captured_row[],
                             ADD COLUMN new_rows omnisync.captured_row[];
ALTER TABLE omnisync.capture ALTER COLUMN old_rows SET STATISTICS 0,
                             ALTER COLUMN new_rows SET STATISTICS 0;
-- Compressed with lz4: a chunk of 10,000 customers' values (bench/trigger-overhead.d/schema.sql)
-- is 1.7 MB as it is and 0.34 MB in lz4, a fifth of the TOAST rows and WAL the CRM's statement
-- writes, for about the CPU that saves. pglz would cost the statement more than the rest of the
-- capture (sql/007), so a server built without lz4 keeps them out of line uncompressed.
DO $$
BEGIN
    ALTER TABLE omnisync.capture ALTER COLUMN old_rows SET COMPRESSION lz4,
                                 ALTER COLUMN new_rows SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE omnisync.capture ALTER COLUMN old_rows SET STORAGE EXTERNAL,
                                 ALTER COLUMN new_rows SET STORAGE EXTERNAL;
END
$$;

-- How many changes a captured row stands for: operator commands and the daemon's counts.
CREATE FUNCTION omnisync.captured_changes(p_op text, p_old_values text[],
                                          p_new_rows omnisync.captured_row[])
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_op WHEN 'delete_many' THEN cardinality(p_old_values)
                     WHEN 'update_many' THEN cardinality(p_new_rows) ELSE 1 END
$$;

-- The rows of version 3 that a statement row stands for (the move's expansion, below): a
-- DELETE's keys from p_first on, at most p_count of them; an UPDATE's customers whose mapped
-- values changed, the whole chunk. Its columns are the ones the move's INSERT lists.
CREATE FUNCTION omnisync.captured_expand(c omnisync.capture, p_first integer, p_count integer)
RETURNS TABLE (seq bigint, source text, brand_id bigint, primary_id text, op text, keys text[],
               old_values text[], new_values text[], txid bigint, captured_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.seq, c.source, c.brand_id, k.id, 'delete', '{primary_id}'::text[], ARRAY[k.id],
           NULL::text[], c.txid, c.captured_at
    FROM unnest(c.old_values[p_first:p_first + p_count - 1]) AS k(id)
    WHERE c.op = 'delete_many'
    UNION ALL
    SELECT c.seq, c.source, n.brand_id, n.primary_id, 'update', c.keys, o.vals, n.vals, c.txid,
           c.captured_at
    FROM unnest(c.new_rows) AS n JOIN unnest(c.old_rows) AS o ON o.pos = n.pos
    WHERE c.op = 'update_many' AND o.vals IS DISTINCT FROM n.vals
$$;

CREATE OR REPLACE FUNCTION omnisync.move_captured(p_limit integer DEFAULT NULL,
                                                  p_wait_ms integer DEFAULT 0)
RETURNS integer LANGUAGE plpgsql SET enable_sort = on SET plan_cache_mode = auto AS $$
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
            DELETE FROM omnisync.capture c WHERE c.op IN ('delete_many', 'update_many')
            RETURNING c AS whole
        )
        INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys, old_values,
                                      new_values, txid, captured_at)
        SELECT e.* FROM many m CROSS JOIN LATERAL
            omnisync.captured_expand(m.whole, 1, cardinality((m.whole).old_values)) e;
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
            SELECT array_agg(x.ctid), coalesce(bool_or(x.many), false)
            INTO picked, many
            FROM (SELECT c.ctid, c.op IN ('delete_many', 'update_many') AS many
                  FROM omnisync.capture c
                  ORDER BY c.seq, c.op IN ('delete_many', 'update_many') LIMIT p_limit) x;
            EXIT WHEN NOT many;
            -- A statement row is in it: into rows of their own (a DELETE's first keys, an
            -- UPDATE's chunk whole), then again.
            SELECT c.ctid AS at, c AS whole INTO s
            FROM omnisync.capture c
            WHERE c.ctid = ANY (picked) AND c.op IN ('delete_many', 'update_many')
            ORDER BY c.seq
            LIMIT 1;
            INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys,
                                          old_values, new_values, txid, captured_at)
            SELECT * FROM omnisync.captured_expand(s.whole, 1, slice);
            IF (s.whole).op = 'delete_many' AND cardinality((s.whole).old_values) > slice THEN
                UPDATE omnisync.capture c SET old_values = (s.whole).old_values[slice + 1:]
                WHERE c.ctid = s.at;
            ELSE
                DELETE FROM omnisync.capture c WHERE c.ctid = s.at;
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
