-- bench/row-writes: each write the schema makes for a delivered row, as a procedure that does it
-- for every row, BATCH rows a transaction, in plain SQL; and record_outcomes() doing the same
-- rows' outcome writes from the JSON the daemon sends (built here by outcomes(), whose own cost
-- build_only measures). Loaded after the schema (sql/0*.sql).

-- The move's insert into the outbox (its three index entries; no capture row to delete).
CREATE PROCEDURE bench_insert(n int, total int) LANGUAGE plpgsql AS $$
DECLARE lo int := 1;
BEGIN
    WHILE lo <= total LOOP
        INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, new_data)
        SELECT 'crm', 1, 'C' || g, 'insert',
               jsonb_build_object('customer_no', 'C' || g, 'first_name', 'Ann',
                                  'last_name', 'Smith', 'email', 'c' || g || '@example.com')
        FROM generate_series(lo, lo + n - 1) g;
        COMMIT;
        lo := lo + n;
    END LOOP;
END $$;

-- The claim's lease (HOT since sql/008).
CREATE PROCEDURE bench_lease(n int) LANGUAGE plpgsql AS $$
DECLARE lo bigint; hi bigint;
BEGIN
    SELECT min(id), max(id) INTO lo, hi FROM omnisync.outbox;
    WHILE lo <= hi LOOP
        UPDATE omnisync.outbox SET locked_until = now() + interval '1 hour', locked_by = 'p1'
        WHERE id = ANY (ARRAY(SELECT generate_series(lo, lo + n - 1))) AND status = 'pending';
        COMMIT;
        lo := lo + n;
    END LOOP;
END $$;

-- The done update of the rows ids, as record_outcomes() writes it (not HOT: status and
-- delivered_at are indexed).
CREATE PROCEDURE bench_set_done(ids bigint[]) LANGUAGE plpgsql AS $$
BEGIN
    UPDATE omnisync.outbox t SET status = 'done', delivered_at = now(),
        attempts = t.attempts + 1, locked_until = NULL, locked_by = NULL, last_error = NULL,
        last_http_status = 200, result = 'created', coalesced_into = NULL
    WHERE t.id = ANY (ids) AND t.locked_by = 'p1' AND t.status = 'pending';
END $$;

-- The done update of every row. hot = true first drops the indexes on status and delivered_at:
-- what a HOT done update would cost.
CREATE PROCEDURE bench_done(n int, hot boolean) LANGUAGE plpgsql AS $$
DECLARE lo bigint; hi bigint; ids bigint[];
BEGIN
    IF hot THEN
        DROP INDEX omnisync.outbox_pending, omnisync.outbox_failed, omnisync.outbox_finished;
        COMMIT;
    END IF;
    SELECT min(id), max(id) INTO lo, hi FROM omnisync.outbox;
    WHILE lo <= hi LOOP
        ids := ARRAY(SELECT generate_series(lo, lo + n - 1));
        CALL bench_set_done(ids);
        COMMIT;
        lo := lo + n;
    END LOOP;
END $$;

-- A pending table of its own, the other half of a HOT done update: the claim would walk it
-- instead of the outbox's partial index on status, so each row would also get an insert into it
-- at the move and a delete from it at done. Both, for every row, BATCH rows a transaction.
CREATE TABLE bench_due (id bigint PRIMARY KEY);
CREATE PROCEDURE bench_due(n int) LANGUAGE plpgsql AS $$
DECLARE lo bigint; hi bigint; at bigint;
BEGIN
    SELECT min(id), max(id) INTO lo, hi FROM omnisync.outbox;
    at := lo;
    WHILE at <= hi LOOP
        INSERT INTO bench_due SELECT generate_series(at, at + n - 1);
        COMMIT;
        at := at + n;
    END LOOP;
    at := lo;
    WHILE at <= hi LOOP
        DELETE FROM bench_due WHERE id = ANY (ARRAY(SELECT generate_series(at, at + n - 1)));
        COMMIT;
        at := at + n;
    END LOOP;
END $$;

-- The attempt.
CREATE PROCEDURE bench_attempt(n int) LANGUAGE plpgsql AS $$
DECLARE lo bigint; hi bigint;
BEGIN
    SELECT min(id), max(id) INTO lo, hi FROM omnisync.outbox;
    WHILE lo <= hi LOOP
        INSERT INTO omnisync.delivery_attempt
            (outbox_id, at, step, http_status, outcome, error, duration_ms, process)
        SELECT g, now(), 'create', 200, 'ok', NULL, 3, 'p1' FROM generate_series(lo, lo + n - 1) g;
        COMMIT;
        lo := lo + n;
    END LOOP;
END $$;

-- The sync state (a new customer: an insert through ON CONFLICT).
CREATE PROCEDURE bench_sync(n int, total int) LANGUAGE plpgsql AS $$
DECLARE lo int := 1;
BEGIN
    WHILE lo <= total LOOP
        INSERT INTO omnisync.sync_state AS ss
            (source, brand_id, primary_id, created, omnidesk_id, channels, last_outbox_id,
             create_unknown)
        SELECT 'crm', 1, 'C' || g, true, 1000000 + g, ARRAY['email:c' || g || '@example.com'], g,
               false
        FROM generate_series(lo, lo + n - 1) g
        ON CONFLICT (source, brand_id, primary_id) DO UPDATE SET created = EXCLUDED.created,
            omnidesk_id = EXCLUDED.omnidesk_id, channels = EXCLUDED.channels,
            last_outbox_id = coalesce(EXCLUDED.last_outbox_id, ss.last_outbox_id),
            create_unknown = EXCLUDED.create_unknown, updated_at = now();
        COMMIT;
        lo := lo + n;
    END LOOP;
END $$;

-- The outcomes of n plain creates from lo, as the daemon's JSON (lib/outbox.c,
-- outbox_outcome_json), passed through text as the daemon's parameter is.
CREATE FUNCTION bench_outcomes(lo bigint, n int) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_agg(jsonb_build_object('sent_id', g, 'source', 'crm', 'brand_id', 1,
        'primary_id', 'C' || g, 'rows', jsonb_build_array(g), 'status', 'done',
        'result', 'created', 'http_status', 200,
        'attempts', jsonb_build_array(jsonb_build_object('at', extract(epoch FROM now()),
            'step', 'create', 'http_status', 200, 'outcome', 'ok', 'duration_ms', 3)),
        'sync', jsonb_build_object('created', true, 'omnidesk_id', 1000000 + g,
            'channels', jsonb_build_array('email:c' || g || '@example.com'),
            'create_unknown', false)))::text::jsonb
    FROM generate_series(lo, lo + n - 1) g
$$;

CREATE PROCEDURE bench_build_only(n int) LANGUAGE plpgsql AS $$
DECLARE lo bigint; hi bigint; o jsonb;
BEGIN
    SELECT min(id), max(id) INTO lo, hi FROM omnisync.outbox;
    WHILE lo <= hi LOOP
        o := bench_outcomes(lo, n);
        COMMIT;
        lo := lo + n;
    END LOOP;
END $$;

CREATE PROCEDURE bench_record(n int) LANGUAGE plpgsql AS $$
DECLARE lo bigint; hi bigint; k integer;
BEGIN
    SELECT min(id), max(id) INTO lo, hi FROM omnisync.outbox;
    WHILE lo <= hi LOOP
        k := omnisync.record_outcomes('p1', bench_outcomes(lo, n));
        COMMIT;
        lo := lo + n;
    END LOOP;
END $$;

-- The daemon's claim, BATCH customers a call as the dispatcher asks at 64 slots (per customer
-- DELIVERY_MAX_ROWS, scan 10,000, no move), each batch then marked done (bench_set_done()), so
-- that the walk meets only the rows still due, as in the daemon: its lease with its walk, its
-- per-row checks and its rows as text. Only the transfer of those rows to a client is missing.
-- With lag > 0 each batch is marked done only lag claims later, so that every walk first passes
-- the rows this process still holds, leased and pending, as the daemon's claims do: at 64 slots
-- it claims again while it holds about 114 customers (dispatcher.c, "Claim scheduling").
CREATE PROCEDURE bench_claim(n int, lag int) LANGUAGE plpgsql AS $$
DECLARE ids bigint[]; held bigint[] := '{}'; sizes integer[] := '{}';
BEGIN
    LOOP
        SELECT array_agg(c.id) INTO ids
        FROM omnisync.claim_batch(n, 3600000, 'p1', 256, ARRAY['crm'], 10000, 0) c
        WHERE c.id IS NOT NULL;
        EXIT WHEN ids IS NULL;
        held := held || ids;
        sizes := sizes || cardinality(ids);
        IF cardinality(sizes) > lag THEN
            CALL bench_set_done(held[1:sizes[1]]);
            held := held[sizes[1] + 1:];
            sizes := sizes[2:];
        END IF;
        COMMIT;
    END LOOP;
    IF cardinality(held) > 0 THEN
        CALL bench_set_done(held);
    END IF;
    COMMIT;
END $$;
