-- omnisync schema, version 1.
-- Applied by `omnisync migrate` inside one transaction under an advisory lock; never edit an
-- applied file: add 002_*.sql instead.

CREATE TABLE omnisync.outbox (
    id               bigserial   PRIMARY KEY,
    source           text        NOT NULL,
    -- 0 means "the configured [omnidesk] brand_id"; set by the trigger when the source maps a
    -- per-row brand column.
    brand_id         bigint      NOT NULL DEFAULT 0,
    primary_id       text        NOT NULL,
    -- insert, update, delete, truncate (the capture trigger) or backfill. No CHECK constraint
    -- here or on status: PostgreSQL re-reads and plans a table's CHECK expressions each time an
    -- INSERT starts, which is once per captured change, and that was 13 % of the trigger's cost.
    -- Only the trigger, backfill and the daemon write these columns.
    op               text        NOT NULL,
    -- The mapped columns only, keyed by Omnidesk field name (primary_id, firstname, ...,
    -- custom_<name>, brand_id, erase). NULL once scrubbed.
    old_data         jsonb,
    new_data         jsonb,
    txid             bigint      NOT NULL DEFAULT txid_current(),
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- pending, held, done, failed or skipped (DESIGN.md §4)
    status           text        NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT '-infinity',
    locked_until     timestamptz,
    locked_by        text,
    last_error       text,
    last_http_status integer,
    delivered_at     timestamptz,
    -- What delivery did, in words: created, updated, purged, coalesced into <id>,
    -- superseded by <id>, nothing to send, ...
    result           text,
    coalesced_into   bigint,
    superseded_by    bigint,
    scrubbed_at      timestamptz,
    -- The last operator action on this row (replay, skip, release); every action is also in
    -- operator_action.
    action           text,
    action_by        text,
    action_at        timestamptz,
    action_reason    text
);

-- Claiming walks pending rows oldest first.
CREATE INDEX outbox_pending ON omnisync.outbox (id) WHERE status = 'pending';
-- A customer's rows in order: "is there an earlier unfinished row of this customer?" (per-customer
-- order), superseding failed rows, scrubbing after a purge, outbox list --primary-id. One index
-- for all of them: each index costs every captured change an entry.
CREATE INDEX outbox_customer ON omnisync.outbox (source, brand_id, primary_id, id);
-- Operators list failed and held rows; retention prunes finished ones.
CREATE INDEX outbox_failed ON omnisync.outbox (id) WHERE status IN ('failed', 'held');
CREATE INDEX outbox_finished ON omnisync.outbox ((coalesce(delivered_at, action_at, created_at)))
    WHERE status IN ('done', 'skipped');

-- Per customer: what Omnidesk is known to hold, so a retry repeats no step.
CREATE TABLE omnisync.sync_state (
    source          text        NOT NULL,
    brand_id        bigint      NOT NULL,
    primary_id      text        NOT NULL,
    created         boolean     NOT NULL DEFAULT false,  -- the customer exists at Omnidesk
    omnidesk_id     bigint,                              -- known after a lookup
    channels        text[]      NOT NULL DEFAULT '{}',   -- 'email:<addr>', 'telephone:<e164>'
    last_outbox_id  bigint,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, brand_id, primary_id)
);

-- Every request made for a row, and its outcome.
CREATE TABLE omnisync.delivery_attempt (
    id           bigserial   PRIMARY KEY,
    outbox_id    bigint      NOT NULL REFERENCES omnisync.outbox (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    step         text        NOT NULL,   -- create, updateCustomer, addChannelOnly, search, purgeData, ...
    http_status  integer,
    outcome      text        NOT NULL,   -- ok, transient, permanent, auth, not_found
    error        text,
    duration_ms  integer,
    process      text
);
CREATE INDEX delivery_attempt_outbox ON omnisync.delivery_attempt (outbox_id);
CREATE INDEX delivery_attempt_purges ON omnisync.delivery_attempt (at)
    WHERE step IN ('purgeData', 'purgedata') AND outcome IN ('ok', 'not_found');

-- Pause flags: scope '*' pauses every source.
CREATE TABLE omnisync.control (
    scope       text        PRIMARY KEY,
    paused      boolean     NOT NULL DEFAULT false,
    changed_by  text        NOT NULL DEFAULT session_user,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    reason      text
);

-- Every operator action: replay, skip, release, pause, resume, backfill.
CREATE TABLE omnisync.operator_action (
    id         bigserial   PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    db_user    text        NOT NULL DEFAULT session_user,
    action     text        NOT NULL,
    outbox_id  bigint,
    source     text,
    reason     text
);

-- Backfill progress per source, so an interrupted backfill resumes where it stopped.
CREATE TABLE omnisync.backfill (
    source         text        PRIMARY KEY,
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_key       text,
    rows_enqueued  bigint      NOT NULL DEFAULT 0,
    finished_at    timestamptz
);

-- The triggers migrate installed, so a changed mapping replaces them and a removed source
-- loses them.
CREATE TABLE omnisync.installed_source (
    source        text        PRIMARY KEY,
    table_name    text        NOT NULL,
    definition    text        NOT NULL,
    installed_at  timestamptz NOT NULL DEFAULT now()
);

-- The purge guard (DESIGN §2): reserves one purge of the hourly budget, or says no. The lock
-- makes the count exact across several omnisync processes.
CREATE FUNCTION omnisync.reserve_purge(p_outbox_id bigint, p_per_hour integer, p_process text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    -- A retry of the same row does not spend the budget twice.
    IF EXISTS (SELECT 1 FROM omnisync.delivery_attempt
               WHERE outbox_id = p_outbox_id AND step = 'purge_reserved') THEN
        RETURN true;
    END IF;
    IF p_per_hour > 0 THEN
        PERFORM pg_advisory_xact_lock(hashtext('omnisync purge guard'));
        IF (SELECT count(*) FROM omnisync.delivery_attempt
            WHERE step = 'purge_reserved' AND at > now() - interval '1 hour') >= p_per_hour THEN
            RETURN false;
        END IF;
    END IF;
    INSERT INTO omnisync.delivery_attempt (outbox_id, step, outcome, process)
    VALUES (p_outbox_id, 'purge_reserved', 'ok', p_process);
    RETURN true;
END
$$;
CREATE INDEX delivery_attempt_reserved ON omnisync.delivery_attempt (at)
    WHERE step = 'purge_reserved';

-- The recorder's one statement: applies a batch of delivery outcomes (a jsonb array built by
-- lib/recorder.c). Only rows still leased by p_process are touched: if our lease ran out and
-- another process took a row over, its outcome is the one that counts.
--
-- The common outcome, a plain "done" (no purge) that is its customer's only outcome in the batch,
-- is applied for the whole batch in one statement: one by one in the loop each took 0.15 - 0.3 ms
-- of the server's CPU, about three times as much. Its effects are those of the loop; customers are
-- independent of each other, so it does not matter that they come before the rest. Everything
-- else (retries, failures, holds, purges, a customer with several outcomes, whose order matters)
-- goes through the loop, in the batch's order.
CREATE FUNCTION omnisync.record_outcomes(p_process text, p_outcomes jsonb)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    plain boolean[]; -- by position in p_outcomes, from 1
    o jsonb;
    s jsonb;
    ids bigint[];
    sent bigint;
    st text;
    k_source text;
    k_brand bigint;
    k_primary text;
    changed integer;
    total integer := 0;
BEGIN
    -- A flag per outcome, not two new arrays: rebuilding a jsonb array of outcomes costs more than
    -- the updates.
    SELECT array_agg(b.plain ORDER BY b.ord) INTO plain
    FROM (SELECT t.ord,
                 coalesce(t.o->>'status' = 'done'
                          AND NOT coalesce((t.o->>'purged')::boolean, false)
                          AND coalesce(jsonb_typeof(t.o->'sync'), 'object') = 'object'
                          AND NOT coalesce((t.o->'sync'->>'reset')::boolean, false)
                          AND count(*) OVER (PARTITION BY t.o->>'source',
                                             (t.o->>'brand_id')::bigint, t.o->>'primary_id') = 1,
                          false) AS plain
          FROM jsonb_array_elements(p_outcomes) WITH ORDINALITY t(o, ord)) b;

    -- The loop's steps for each plain outcome whose rows were still ours: the rows done (or
    -- coalesced into the one sent), the attempts, the sync state, earlier failed rows superseded.
    WITH x AS (
        SELECT x.* FROM jsonb_array_elements(p_outcomes) WITH ORDINALITY t(o, ord)
        CROSS JOIN LATERAL jsonb_to_record(t.o) AS x(sent_id bigint, source text,
            brand_id bigint, primary_id text, "rows" jsonb, result text, http_status integer,
            attempts jsonb, sync jsonb)
        WHERE plain[t.ord]
    ), members AS (
        SELECT r.id::bigint AS id, x.sent_id, x.result, x.http_status
        FROM x CROSS JOIN LATERAL jsonb_array_elements_text(x."rows") r(id)
    ), done AS (
        UPDATE omnisync.outbox t SET status = 'done', delivered_at = now(),
            attempts = t.attempts + 1, locked_until = NULL, locked_by = NULL,
            last_error = NULL, last_http_status = m.http_status,
            result = CASE WHEN t.id = m.sent_id THEN m.result
                          ELSE 'coalesced into ' || m.sent_id END,
            coalesced_into = CASE WHEN t.id = m.sent_id THEN NULL ELSE m.sent_id END
        FROM members m
        -- The array makes the plan an index lookup per row whatever the estimates say.
        WHERE t.id = ANY (ARRAY(SELECT id FROM members)) AND t.id = m.id
          AND t.locked_by = p_process AND t.status = 'pending'
        RETURNING m.sent_id
    ), changed AS (
        SELECT x.*, d.n
        FROM x JOIN (SELECT sent_id, count(*) AS n FROM done GROUP BY sent_id) d USING (sent_id)
    ), attempt AS (
        INSERT INTO omnisync.delivery_attempt
            (outbox_id, at, step, http_status, outcome, error, duration_ms, process)
        SELECT c.sent_id, to_timestamp((a->>'at')::double precision), a->>'step',
               (a->>'http_status')::integer, a->>'outcome', a->>'error',
               (a->>'duration_ms')::integer, p_process
        FROM changed c
        CROSS JOIN LATERAL jsonb_array_elements(coalesce(c.attempts, '[]'::jsonb))
            WITH ORDINALITY e(a, n)
        ORDER BY c.sent_id, e.n
    ), synced AS (
        INSERT INTO omnisync.sync_state AS ss
            (source, brand_id, primary_id, created, omnidesk_id, channels, last_outbox_id)
        SELECT c.source, c.brand_id, c.primary_id, (c.sync->>'created')::boolean,
               (c.sync->>'omnidesk_id')::bigint,
               ARRAY(SELECT jsonb_array_elements_text(coalesce(c.sync->'channels', '[]'::jsonb))),
               c.sent_id
        FROM changed c
        WHERE c.sync IS NOT NULL
        ON CONFLICT (source, brand_id, primary_id) DO UPDATE SET
            created = EXCLUDED.created,
            omnidesk_id = EXCLUDED.omnidesk_id,
            channels = EXCLUDED.channels,
            last_outbox_id = coalesce(EXCLUDED.last_outbox_id, ss.last_outbox_id),
            updated_at = now()
    ), superseded AS (
        UPDATE omnisync.outbox f SET status = 'skipped', superseded_by = c.sent_id,
            result = 'superseded by ' || c.sent_id
        FROM changed c
        WHERE f.source = c.source AND f.brand_id = c.brand_id AND f.primary_id = c.primary_id
          AND f.status = 'failed' AND f.id < c.sent_id
    )
    SELECT coalesce(sum(changed.n), 0) INTO total FROM changed;

    FOR o IN SELECT t.o FROM jsonb_array_elements(p_outcomes) WITH ORDINALITY t(o, ord)
             WHERE NOT plain[t.ord] ORDER BY t.ord LOOP
        ids := ARRAY(SELECT jsonb_array_elements_text(o->'rows')::bigint);
        sent := (o->>'sent_id')::bigint;
        st := o->>'status';
        k_source := o->>'source';
        k_brand := (o->>'brand_id')::bigint;
        k_primary := o->>'primary_id';

        IF st = 'done' THEN
            UPDATE omnisync.outbox SET status = 'done', delivered_at = now(),
                attempts = attempts + 1, locked_until = NULL, locked_by = NULL,
                last_error = NULL, last_http_status = (o->>'http_status')::integer,
                result = CASE WHEN id = sent THEN o->>'result' ELSE 'coalesced into ' || sent END,
                coalesced_into = CASE WHEN id = sent THEN NULL ELSE sent END
            WHERE id = ANY (ids) AND locked_by = p_process AND status = 'pending';
        ELSIF st = 'retry' THEN
            UPDATE omnisync.outbox SET attempts = attempts + (o->>'spend')::integer,
                next_attempt_at = now() + (o->>'delay_ms')::bigint * interval '1 millisecond',
                last_error = coalesce(o->>'error', last_error),
                last_http_status = coalesce((o->>'http_status')::integer, last_http_status),
                locked_until = NULL, locked_by = NULL
            WHERE id = ANY (ids) AND locked_by = p_process AND status = 'pending';
        ELSIF st = 'failed' THEN
            UPDATE omnisync.outbox SET status = 'failed', attempts = attempts + 1,
                last_error = o->>'error', last_http_status = (o->>'http_status')::integer,
                locked_until = NULL, locked_by = NULL
            WHERE id = ANY (ids) AND locked_by = p_process AND status = 'pending';
        ELSIF st = 'held' THEN
            UPDATE omnisync.outbox SET status = 'held', result = o->>'result',
                locked_until = NULL, locked_by = NULL
            WHERE id = ANY (ids) AND locked_by = p_process AND status = 'pending';
        ELSE
            RAISE EXCEPTION 'record_outcomes: unknown status %', st;
        END IF;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed = 0 THEN
            CONTINUE;
        END IF;
        total := total + changed;

        INSERT INTO omnisync.delivery_attempt
            (outbox_id, at, step, http_status, outcome, error, duration_ms, process)
        SELECT sent, to_timestamp((a->>'at')::double precision), a->>'step',
               (a->>'http_status')::integer, a->>'outcome', a->>'error',
               (a->>'duration_ms')::integer, p_process
        FROM jsonb_array_elements(coalesce(o->'attempts', '[]'::jsonb)) a;

        s := o->'sync';
        IF s IS NOT NULL AND (s->>'reset')::boolean THEN
            -- The customer was purged: what we knew of it is personal data too.
            DELETE FROM omnisync.sync_state
            WHERE source = k_source AND brand_id = k_brand AND primary_id = k_primary;
        ELSIF s IS NOT NULL THEN
            INSERT INTO omnisync.sync_state AS ss
                (source, brand_id, primary_id, created, omnidesk_id, channels, last_outbox_id)
            VALUES (k_source, k_brand, k_primary, (s->>'created')::boolean,
                    (s->>'omnidesk_id')::bigint,
                    ARRAY(SELECT jsonb_array_elements_text(coalesce(s->'channels', '[]'::jsonb))),
                    CASE WHEN st = 'done' THEN sent END)
            ON CONFLICT (source, brand_id, primary_id) DO UPDATE SET
                created = EXCLUDED.created,
                omnidesk_id = EXCLUDED.omnidesk_id,
                channels = EXCLUDED.channels,
                last_outbox_id = coalesce(EXCLUDED.last_outbox_id, ss.last_outbox_id),
                updated_at = now();
        END IF;

        IF st = 'done' THEN
            -- Every delivery carries the customer's full state, so earlier failed rows are
            -- stale now; replaying them would send old data.
            UPDATE omnisync.outbox SET status = 'skipped', superseded_by = sent,
                result = 'superseded by ' || sent
            WHERE source = k_source AND brand_id = k_brand AND primary_id = k_primary
              AND status = 'failed' AND id < sent;
            IF (o->>'purged')::boolean THEN
                UPDATE omnisync.outbox SET old_data = NULL, new_data = NULL, scrubbed_at = now()
                WHERE source = k_source AND brand_id = k_brand AND primary_id = k_primary
                  AND id <= sent AND scrubbed_at IS NULL AND status <> 'pending';
            END IF;
        END IF;
    END LOOP;
    RETURN total;
END
$$;

-- Running daemons, refreshed every few seconds, so `omnisync status` can show each one's
-- circuit and API state (they live in memory only).
CREATE TABLE omnisync.process (
    name        text        PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    circuit     text        NOT NULL DEFAULT 'closed',
    api         text        NOT NULL DEFAULT 'ok',
    in_flight   integer     NOT NULL DEFAULT 0
);

-- lib/dispatcher.c's claim: due rows, oldest first, one customer's pending rows together.
--
-- A head is a customer's earliest unfinished row; a customer whose earliest unfinished row is
-- leased, in backoff or held has no head, so per-customer order holds across processes.
-- The loop walks the pending index in id order and stops as soon as it has p_limit heads (a
-- cursor is planned for fast start), so a claim costs what it returns, not the backlog's size;
-- p_scan bounds the rows it may look at. Heads are locked with SKIP LOCKED: several processes
-- claim at once without waiting for each other.
CREATE FUNCTION omnisync.claim(p_limit integer, p_lease_ms bigint, p_process text,
                               p_per_customer integer, p_sources text[], p_scan integer)
RETURNS TABLE (id bigint, head_id bigint, source text, brand_id bigint, primary_id text,
               op text, old_data text, new_data text, attempts integer, orphaned boolean,
               created_epoch double precision, sync text)
-- Statistics lag behind a bulk enqueue (a backfill, a burst after an outage): then every plan
-- looks cheap and the planner may sort the whole backlog. Without sorts, the only plan left is
-- the walk of the pending index in id order that the loop needs.
LANGUAGE plpgsql SET enable_sort = off AS $$
DECLARE
    r record;
    heads bigint[] := '{}';
    paused_sources text[];
    scanned integer := 0;
BEGIN
    IF EXISTS (SELECT 1 FROM omnisync.control c WHERE c.paused AND c.scope = '*') THEN
        RETURN;
    END IF;
    paused_sources := ARRAY(SELECT c.scope FROM omnisync.control c WHERE c.paused);
    FOR r IN
        SELECT o.id, o.source, o.brand_id, o.primary_id FROM omnisync.outbox o
        WHERE o.status = 'pending' AND o.next_attempt_at <= now()
          AND (o.locked_until IS NULL OR o.locked_until < now())
          AND o.source = ANY (p_sources) AND o.source <> ALL (paused_sources)
        ORDER BY o.id
    LOOP
        scanned := scanned + 1;
        EXIT WHEN scanned > p_scan;
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM omnisync.outbox p
            WHERE p.source = r.source AND p.brand_id = r.brand_id AND p.primary_id = r.primary_id
              AND p.status IN ('pending', 'held') AND p.id < r.id);
        -- Re-checked on the newest row version: another process may have leased it meanwhile.
        PERFORM 1 FROM omnisync.outbox h
        WHERE h.id = r.id AND h.status = 'pending'
          AND (h.locked_until IS NULL OR h.locked_until < now())
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        heads := heads || r.id;
        EXIT WHEN cardinality(heads) >= p_limit;
    END LOOP;

    RETURN QUERY
    WITH members AS (
        SELECT m.id, m.locked_by AS prev_locked_by, h.id AS head_id
        FROM omnisync.outbox h
        CROSS JOIN LATERAL (
            SELECT m.id, m.locked_by FROM omnisync.outbox m
            WHERE m.source = h.source AND m.brand_id = h.brand_id
              AND m.primary_id = h.primary_id AND m.status = 'pending' AND m.id >= h.id
            ORDER BY m.id
            LIMIT p_per_customer) m
        WHERE h.id = ANY (heads)
    )
    UPDATE omnisync.outbox o
    SET locked_until = now() + p_lease_ms * interval '1 millisecond', locked_by = p_process
    FROM members
    WHERE o.id = members.id
    RETURNING o.id, members.head_id, o.source, o.brand_id, o.primary_id, o.op,
              o.old_data::text, o.new_data::text, o.attempts,
              members.prev_locked_by IS NOT NULL,
              extract(epoch FROM o.created_at)::double precision,
              (SELECT row_to_json(s)::text FROM omnisync.sync_state s
               WHERE s.source = o.source AND s.brand_id = o.brand_id
                 AND s.primary_id = o.primary_id);
END
$$;
