-- Capture trigger of one source. `omnisync migrate` fills the dollar-brace slots with quoted
-- identifiers and literals (never raw config text) and runs it in its transaction.
-- SECURITY DEFINER with a pinned search_path: the CRM's roles need no grant on schema omnisync,
-- and no object of theirs can shadow what this function calls.
CREATE FUNCTION omnisync.${function}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $omnisync$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO omnisync.outbox (source, primary_id, op)
        VALUES (${source}, '', 'truncate');
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, new_data)
        VALUES (${source}, ${brand_new}, coalesce((NEW.${pk})::text, ''), 'insert',
                jsonb_build_object(${new_pairs}));
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, old_data, new_data)
        VALUES (${source}, ${brand_new}, coalesce((NEW.${pk})::text, ''), 'update',
                jsonb_build_object(${old_pairs}), jsonb_build_object(${new_pairs}));
    ELSE
        INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, old_data)
        VALUES (${source}, ${brand_old}, coalesce((OLD.${pk})::text, ''), 'delete',
                jsonb_build_object(${old_pairs}));
    END IF;
    -- The doorbell is rung at commit by omnisync.ring_doorbell (a deferred trigger on the
    -- outbox), not here.
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
