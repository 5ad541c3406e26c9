-- omnisync schema 11: an attempt row no longer checks its outbox row by a foreign key (issue 15).
--
-- Every delivered row writes at least one row of omnisync.delivery_attempt, in the outcome write
-- that marks the row done. The foreign key from delivery_attempt.outbox_id to omnisync.outbox
-- made each of those inserts run PostgreSQL's referential check: a query per attempt that looks
-- the outbox row up and locks it FOR KEY SHARE, the lock a heap write and a WAL record of its
-- own, on a row the same statement has just updated. The check can never fail: omnisync writes
-- attempts only in the statements that have just found and updated their outbox row
-- (record_outcomes, reserve_purge). What the key gave besides, ON DELETE CASCADE, the retention
-- prune now does itself: it deletes the attempts of the rows it deletes, in the same statement
-- (lib/outbox.c, outbox_prune). omnisync deletes outbox rows nowhere else.
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
