-- Capture trigger of one source. `omnisync migrate` fills the dollar-brace slots with quoted
-- identifiers and literals (never raw config text) and runs it in its transaction.
-- SECURITY DEFINER with a pinned search_path: the CRM's roles need no grant on schema omnisync,
-- and no object of theirs can shadow what this function calls.
-- This runs inside every CRM write, so it is kept lean (bench/trigger-overhead): PL/pgSQL sets up
-- each expression it evaluates anew in every transaction, so the common case (UPDATE) is tested
-- first and the doorbell costs one comparison.
CREATE FUNCTION omnisync.${function}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $omnisync$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, old_data, new_data)
        VALUES (${source}, ${brand_new}, coalesce((NEW.${pk})::text, ''), 'update',
                jsonb_build_object(${old_pairs}), jsonb_build_object(${new_pairs}));
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, new_data)
        VALUES (${source}, ${brand_new}, coalesce((NEW.${pk})::text, ''), 'insert',
                jsonb_build_object(${new_pairs}));
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, old_data)
        VALUES (${source}, ${brand_old}, coalesce((OLD.${pk})::text, ''), 'delete',
                jsonb_build_object(${old_pairs}));
    ELSE
        INSERT INTO omnisync.outbox (source, primary_id, op)
        VALUES (${source}, '', 'truncate');
    END IF;
    -- The doorbell (NOTIFY omnisync) wakes the daemon at commit; the outbox row is the truth.
    -- NOTIFY takes a database-wide lock at commit, so ringing it in every transaction would
    -- serialize the CRM's writers: a session rings at most once per 10 ms slot of the clock. The
    -- slot is a session setting, so a rolled-back ring is forgotten and the next change rings.
    -- A transaction that skips it follows a ring of its own session within 10 ms, and the daemon
    -- claims again 50 ms after every ring; only a transaction still open by then waits for
    -- the next ring of any session or for the poll ([delivery] poll_interval).
    IF current_setting('omnisync.rang', true) IS DISTINCT FROM
       (date_part('epoch', clock_timestamp()) * 100)::bigint::text THEN
        PERFORM pg_notify('omnisync', '');
        PERFORM set_config('omnisync.rang',
                           (date_part('epoch', clock_timestamp()) * 100)::bigint::text, false);
    END IF;
    RETURN NULL;
END
$omnisync$;
REVOKE ALL ON FUNCTION omnisync.${function}() FROM PUBLIC;
CREATE TRIGGER ${trigger_insdel} AFTER INSERT OR DELETE ON ${table}
    FOR EACH ROW EXECUTE FUNCTION omnisync.${function}();
CREATE TRIGGER ${trigger_update} AFTER UPDATE ON ${table}
    FOR EACH ROW WHEN (${changed}) EXECUTE FUNCTION omnisync.${function}();
CREATE TRIGGER ${trigger_truncate} AFTER TRUNCATE ON ${table}
    FOR EACH STATEMENT EXECUTE FUNCTION omnisync.${function}();
