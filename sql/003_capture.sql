-- omnisync schema, version 3: the CRM's transactions append to omnisync.capture; the daemon
-- moves what they committed into omnisync.outbox (issue 14). Applied by `omnisync migrate` like
-- 001 (one transaction, advisory lock); never edit it once applied. The same migrate run then
-- replaces every source's capture triggers (sql/trigger_template.sql): from version 3 on they
-- write here, not to the outbox.
--
-- Why a second table: every index, default and constraint of the outbox is paid by the CRM's
-- transaction when the trigger writes there, once per changed row (bench/trigger-overhead
-- --decompose). The capture table has no index, no primary key, no status and no check: an
-- append is all the CRM pays. The outbox keeps its rows, columns and indexes, so delivery and
-- every operator command work on the same rows as before; the move pays the outbox's indexes
-- once per batch, outside the CRM's transactions.
--
-- Order. seq comes from a sequence without a session cache, so it grows with the time each row
-- was captured across all sessions. The trigger takes one seq per statement: a statement changes
-- each customer at most once, so rows sharing a seq are of different customers. Per customer, capture order is commit order: a trigger
-- captures a customer's change while its transaction holds that customer's row lock (the row
-- was just inserted, updated or deleted; a new row's key is held through the unique index),
-- and the lock is held until commit, so of two transactions changing the same customer the
-- second captures only after the first committed. The move inserts into the outbox in seq
-- order, so outbox ids follow capture order, and the advisory lock below serialises moves, so
-- a later move's ids are greater than an earlier move's.
--
-- Nothing is skipped. A DELETE sees only rows committed when its statement started; a
-- transaction that commits late leaves its rows in capture and a later move takes them. Its
-- rows can land after rows of other transactions with a greater seq, which is harmless: per
-- customer, no row with a greater seq can have committed before it (above), so the later
-- move cannot put one of its rows after a newer row of the same customer. (Any snapshot that
-- sees the newer transaction's commit sees the older one's: the older one released the row lock
-- only after its commit was visible.) A rolled-back transaction's rows are dead: never moved.
CREATE SEQUENCE omnisync.capture_seq CACHE 1;

CREATE TABLE omnisync.capture (
    seq          bigint      NOT NULL DEFAULT nextval('omnisync.capture_seq'),
    source       text        NOT NULL,
    brand_id     bigint      NOT NULL,
    primary_id   text        NOT NULL,
    op           text        NOT NULL,
    -- The mapped columns: Omnidesk field names and the values before and after, as text
    -- (omnisync.captured_data() makes the outbox's jsonb of them).
    keys         text[]      NOT NULL,
    old_values   text[],
    new_values   text[],
    txid         bigint      NOT NULL DEFAULT txid_current(),
    captured_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)
-- Every row is deleted soon after it was written: vacuum after every 1,000 dead rows whatever
-- the table's size, without the cost-based pauses, so the table stays a few pages long and the
-- move's scan of it stays cheap.
WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
      autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000,
      autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0,
      autovacuum_analyze_threshold = 10000);
-- No statement plans on the payload's statistics (the move reads the whole table or a batch by
-- seq), and ANALYZE's element statistics of three text[] columns cost: 1.2 - 1.4 s of CPU for a
-- 50,000-row table against 0.3 s without them, taken from the CRM's cores.
ALTER TABLE omnisync.capture ALTER COLUMN keys SET STATISTICS 0,
    ALTER COLUMN old_values SET STATISTICS 0, ALTER COLUMN new_values SET STATISTICS 0;

-- The outbox's jsonb payload of captured keys and values: what the trigger of version 2 built
-- with jsonb_build_object, the erase flag a boolean again (delivery reads the rest as strings).
CREATE FUNCTION omnisync.captured_data(p_keys text[], p_values text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN j ? 'erase'
                THEN jsonb_set(j, '{erase}', coalesce(to_jsonb((j->>'erase')::boolean), 'null'))
                ELSE j END
    FROM (SELECT jsonb_object(p_keys, p_values) AS j) x
$$;

-- Moves committed captured rows into the outbox, in seq order: all of them (p_limit NULL: the
-- operator's commands, which must see every change), or at most p_limit of the lowest seqs (the
-- daemon's claim below). Returns how many. Another process moving right now (the try-lock fails)
-- means there is nothing for us to move: we skip. A claim first waits up to p_wait_ms for that
-- move to end: its rows are in the outbox once its claim commits, and a daemon woken by the same
-- ring then claims those the mover left, as two daemons split a backlog written straight into
-- the outbox (a batch takes 30 - 65 ms; an operator's move of everything may take longer, and
-- the claim does not wait for it past p_wait_ms).
--
-- Why the claim moves in batches: the claim runs on the daemon's work connection, which also
-- renews the leases of the rows in flight. One 200,000-row statement took 15 - 28 s to move at
-- once (bench/bulk-capture, loaded machine), a million rows would outlast a lease, and nothing
-- could be sent before the whole move ended. A batch is the p_limit lowest seqs: rows sharing
-- a seq are of one statement and so of different customers, and a customer's rows with a lower
-- seq are taken before (or with) those with a greater one, so a batch never puts a customer's
-- change ahead of an earlier one still in capture (a late commit is the case argued above).
CREATE FUNCTION omnisync.move_captured(p_limit integer DEFAULT NULL, p_wait_ms integer DEFAULT 0)
RETURNS integer LANGUAGE plpgsql SET enable_sort = on AS $$
DECLARE
    moved integer;
    waited integer := 0;
BEGIN
    WHILE NOT pg_try_advisory_xact_lock(hashtext('omnisync capture move')) LOOP
        IF waited >= p_wait_ms THEN
            RETURN 0;
        END IF;
        PERFORM pg_sleep(0.005);
        waited := waited + 5;
    END LOOP;
    IF p_limit IS NULL THEN
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
        -- The batch by row address: a Tid scan of the rows the top-p_limit sort chose.
        WITH taken AS (
            DELETE FROM omnisync.capture c
            WHERE c.ctid = ANY (ARRAY(SELECT x.ctid FROM omnisync.capture x
                                      ORDER BY x.seq LIMIT p_limit))
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

-- The claim of version 1 keeps its body under a new name; claim() moves first, then claims, in
-- the same statement and transaction, so lib/dispatcher.c's claim call is unchanged.
ALTER FUNCTION omnisync.claim(integer, bigint, text, integer, text[], integer)
    RENAME TO claim_outbox;

CREATE FUNCTION omnisync.claim(p_limit integer, p_lease_ms bigint, p_process text,
                               p_per_customer integer, p_sources text[], p_scan integer)
RETURNS TABLE (id bigint, head_id bigint, source text, brand_id bigint, primary_id text,
               op text, old_data text, new_data text, attempts integer, orphaned boolean,
               created_epoch double precision, sync text)
LANGUAGE plpgsql AS $$
BEGIN
    -- At most 2,000 rows a claim (30 - 65 ms): a bulk statement's backlog is moved over the
    -- following claims while the first rows go out. Another daemon's move is waited for, up to
    -- 200 ms, so that a daemon woken by the same ring claims what that one leaves.
    PERFORM omnisync.move_captured(2000, 200);
    RETURN QUERY SELECT * FROM omnisync.claim_outbox(p_limit, p_lease_ms, p_process,
                                                     p_per_customer, p_sources, p_scan);
END
$$;
