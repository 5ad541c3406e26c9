-- omnisync schema 11: an attempt no longer checks its outbox row by a foreign key; the rows'
-- deletion takes their attempts with them by a statement trigger instead (issue 15).
--
-- Every delivered row writes at least one row of omnisync.delivery_attempt, in the outcome write
-- that marks the row done. The foreign key from delivery_attempt.outbox_id to omnisync.outbox
-- made each of those inserts run PostgreSQL's referential check: a query per attempt that looks
-- the outbox row up and locks it FOR KEY SHARE, the lock a heap write and a WAL record of its
-- own, on a row the same statement has just updated. The check can never fail: omnisync writes
-- attempts only in the statements that have just found and updated their outbox row
-- (record_outcomes, reserve_purge). bench/drain, one binary with the key put back or not,
-- alternated: PostgreSQL's CPU per delivered row 8 - 19 % lower without it, in every cell
-- (bench/results/drain-attempts-ab.txt).
--
-- What the key gave besides, ON DELETE CASCADE, outbox_deleted() below keeps: a statement
-- trigger that deletes the attempts of the rows a DELETE took, whoever runs it (the retention
-- prune of this version or of an older daemon still running until its restart, an operator's
-- own DELETE), and costs nothing on insert or update. TRUNCATE of the outbox alone no longer
-- needs CASCADE and leaves the attempts: truncate both.
--
-- The constraint's name is PostgreSQL's default (delivery_attempt_outbox_id_fkey) unless somebody
-- renamed it; it is looked up, not assumed.
DO $$
DECLARE
    c name;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'omnisync.delivery_attempt'::regclass
               AND confrelid = 'omnisync.outbox'::regclass AND contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE omnisync.delivery_attempt DROP CONSTRAINT %I', c);
    END LOOP;
END
$$;

-- The array makes the plan an index lookup per deleted row (delivery_attempt_outbox) whatever
-- the estimates of the transition table say. It runs as the schema's owner, as the cascade did.
CREATE FUNCTION omnisync.outbox_deleted() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM omnisync.delivery_attempt
    WHERE outbox_id = ANY (ARRAY(SELECT g.id FROM outbox_gone g));
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION omnisync.outbox_deleted() FROM PUBLIC;

CREATE TRIGGER outbox_deleted AFTER DELETE ON omnisync.outbox
    REFERENCING OLD TABLE AS outbox_gone
    FOR EACH STATEMENT EXECUTE FUNCTION omnisync.outbox_deleted();
