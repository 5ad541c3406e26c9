-- Capture triggers of one source. `omnisync migrate` fills the dollar-brace slots with quoted
-- identifiers and literals (never raw config text) and runs it in its transaction.
-- SECURITY DEFINER with a pinned search_path: the CRM's roles need no grant on schema omnisync,
-- and no object of theirs can shadow what this function calls.
--
-- The payload is the mapped columns' values as text[] with their keys (omnisync.captured_data()
-- in sql/003_capture.sql turns them into the outbox's jsonb when the daemon moves them): building
-- jsonb in the CRM's statement cost about 15 times as much as the array (and was most of what
-- capture added to a bulk statement). Text-typed columns go in as they are; others through
-- to_jsonb, so a value reads as it did in the jsonb payload (no DateStyle of the CRM's session).
--
-- Statement-level triggers with transition tables: a statement, whatever its size, costs one
-- trigger call and one INSERT ... SELECT into omnisync.capture (sql/003_capture.sql: no index,
-- the daemon moves the rows into the outbox). A single-row statement pays the same call as a row
-- trigger would; a 200,000-row statement pays one call instead of 200,000 (bench/bulk-capture).
-- Statement triggers have no WHEN clause, and PostgreSQL refuses transition tables on a trigger
-- with a column list (UPDATE OF ...), so a single-row UPDATE keeps its row only if a mapped
-- column changed (${changed}), and an update of unmapped columns of one row captures nothing.
--
-- A multi-row UPDATE or DELETE is written as statement rows, which the daemon's move expands into
-- the rows a single-row statement writes (sql/007_statement_deletes.sql, sql/010_statement_updates.sql):
-- a DELETE as the primary ids it deleted, an UPDATE as its customers' old and new versions, each
-- numbered by its position in the statement, 10,000 customers a row. Old and new versions are
-- paired by that position: PostgreSQL appends both versions of each updated row to the two
-- transition tables in the same step, and a read of a transition table returns its rows in the
-- order they were appended. (A join on the primary id could not pair the row of an update that
-- changes the primary id, which must stay one update: delivery reports it.) The move pairs them
-- and drops the pairs whose mapped values did not change; the CRM's statement pays for two reads
-- of the transition tables and a few rows, not for a join of both and a row per customer (1.5 x
-- the bare statement's time added at 200,000 rows, against 0.7 - 0.9 x now).
--
-- Both sides go through one aggregate, grouped by chunk (array_agg ... FILTER): no join, so no
-- plan that PL/pgSQL keeps from a session's first, small statements can pair them badly (a
-- nested loop made for two rows), and the chunks' arrays are not spilled to disk a second time
-- by a join (a FULL JOIN of the two sides' aggregates wrote 60 MB of temp for a 200,000-row
-- UPDATE at the default work_mem). Each side's values are computed where its rows are
-- numbered, so the numbering and the aggregate (which spills at the session's work_mem) carry
-- them, not the CRM's whole row.

-- What a statement costs besides its INSERT is kept to few PL/pgSQL expressions (each is set up
-- again in every transaction): one seq per statement; the transaction id and the time come from
-- the capture table's column defaults (per row, a few nanoseconds each).
CREATE FUNCTION omnisync.${function}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $omnisync$
#variable_conflict use_variable
DECLARE
    -- One seq per statement, not per row: a statement changes each customer at most once, so
    -- its rows need no order among themselves (sql/003_capture.sql), and the column default
    -- would cost a sequence access per row. (use_variable: every column the queries below name
    -- is qualified, so a CRM column named like a variable is never ambiguous.)
    v_seq bigint := nextval('omnisync.capture_seq');
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT FROM omnisync_new OFFSET 1) THEN
            -- One row (or none) in each table: they are the pair.
            INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys, old_values,
                                          new_values)
            SELECT v_seq, ${source}, ${brand_new}, coalesce((n.${pk})::text, ''), 'update',
                   ${keys}, ARRAY[${old_values}], ARRAY[${new_values}]
            FROM omnisync_new n, omnisync_old o
            WHERE ${changed};
        ELSE
            -- Many rows: a row per 10,000 customers holding both versions of each, which the
            -- daemon's move pairs by position and filters (sql/010_statement_updates.sql).
            INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys, old_rows,
                                          new_rows)
            SELECT v_seq, ${source}, 0, '', 'update_many', ${keys},
                   array_agg(s.omnisync_row) FILTER (WHERE NOT s.omnisync_new),
                   array_agg(s.omnisync_row) FILTER (WHERE s.omnisync_new)
            FROM (SELECT true AS omnisync_new, n.omnisync_pos,
                         ROW(n.omnisync_pos, n.omnisync_id, n.omnisync_brand,
                             n.omnisync_values)::omnisync.captured_row AS omnisync_row
                  FROM (SELECT (row_number() OVER ())::integer AS omnisync_pos,
                               coalesce((n.${pk})::text, '') AS omnisync_id,
                               ${brand_new} AS omnisync_brand,
                               ARRAY[${new_values}] AS omnisync_values
                        FROM omnisync_new n) n
                  UNION ALL
                  SELECT false, o.omnisync_pos,
                         ROW(o.omnisync_pos, NULL, NULL,
                             o.omnisync_values)::omnisync.captured_row
                  FROM (SELECT (row_number() OVER ())::integer AS omnisync_pos,
                               ARRAY[${old_values}] AS omnisync_values
                        FROM omnisync_old o) o) s
            GROUP BY (s.omnisync_pos - 1) / 10000;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys, new_values)
        SELECT v_seq, ${source}, ${brand_new}, coalesce((n.${pk})::text, ''), 'insert',
               ${keys}, ARRAY[${new_values}]
        FROM omnisync_new n;
    ELSIF TG_OP = 'DELETE' THEN
        -- A delete is sent as a purge by primary id (or ignored: on_delete); the deleted
        -- person's other columns are not needed, so they are not kept (and not paid for: a
        -- DELETE itself writes little, so the payload would be most of what capture adds).
        IF NOT EXISTS (SELECT FROM omnisync_old OFFSET 1) THEN
            INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys, old_values)
            SELECT v_seq, ${source}, ${brand_old}, coalesce((o.${pk})::text, ''), 'delete',
                   '{primary_id}'::text[], ARRAY[(o.${pk})::text]
            FROM omnisync_old o;
        ELSE
            -- Many rows: one row per brand holding the primary ids, which the daemon's move
            -- expands into the rows above (sql/007_statement_deletes.sql). A row per customer
            -- cost the statement 5 times as much as this array.
            INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys, old_values)
            SELECT v_seq, ${source}, ${brand_old}, '', 'delete_many', '{primary_id}'::text[],
                   array_agg(coalesce((o.${pk})::text, ''))
            FROM omnisync_old o
            GROUP BY 3;
        END IF;
    ELSE
        INSERT INTO omnisync.capture (seq, source, brand_id, primary_id, op, keys)
        VALUES (v_seq, ${source}, 0, '', 'truncate', '{}');
    END IF;
    -- The doorbell (NOTIFY omnisync) wakes the daemon at commit; the captured row is the truth.
    -- NOTIFY takes a database-wide lock at commit, so ringing it in every transaction would
    -- serialize the CRM's writers: a session rings at most once per 10 ms slot of the clock. The
    -- slot is a session setting, so a rolled-back ring is forgotten and the next change rings.
    -- Eight busy sessions still rang hundreds of times a second and queued on that lock (29 % of
    -- their samples in bench/trigger-overhead), so a ring also needs a transaction-level
    -- advisory lock that no other transaction holds: one ringing transaction at a time, and it
    -- is released with the NOTIFY lock, so no writer ever waits for either. A transaction that
    -- skips the ring commits close to one that rang (its own session's within 10 ms, or the
    -- one holding the lock), and the daemon claims again 50 ms after every ring; only a
    -- transaction still open by then waits for the next ring or for the poll
    -- ([delivery] poll_interval).
    -- (FOUND: something was captured; nothing captured rings no doorbell.)
    IF FOUND AND current_setting('omnisync.rang', true) IS DISTINCT FROM
                 (date_part('epoch', clock_timestamp()) * 100)::bigint::text THEN
        IF pg_try_advisory_xact_lock(hashtext('omnisync doorbell')) THEN
            PERFORM pg_notify('omnisync', '');
            PERFORM set_config('omnisync.rang',
                               (date_part('epoch', clock_timestamp()) * 100)::bigint::text, false);
        END IF;
    END IF;
    RETURN NULL;
END
$omnisync$;
REVOKE ALL ON FUNCTION omnisync.${function}() FROM PUBLIC;
CREATE TRIGGER ${trigger_insert} AFTER INSERT ON ${table}
    REFERENCING NEW TABLE AS omnisync_new
    FOR EACH STATEMENT EXECUTE FUNCTION omnisync.${function}();
CREATE TRIGGER ${trigger_update} AFTER UPDATE ON ${table}
    REFERENCING OLD TABLE AS omnisync_old NEW TABLE AS omnisync_new
    FOR EACH STATEMENT EXECUTE FUNCTION omnisync.${function}();
CREATE TRIGGER ${trigger_delete} AFTER DELETE ON ${table}
    REFERENCING OLD TABLE AS omnisync_old
    FOR EACH STATEMENT EXECUTE FUNCTION omnisync.${function}();
CREATE TRIGGER ${trigger_truncate} AFTER TRUNCATE ON ${table}
    FOR EACH STATEMENT EXECUTE FUNCTION omnisync.${function}();
