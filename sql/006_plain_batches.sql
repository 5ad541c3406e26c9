-- omnisync schema 6: a batch of plain outcomes is written without classifying it first.
--
-- record_outcomes of 002 spends, on every call, a query that flags the outcomes applied set-based
-- (status done, not purged, sync an object or absent, not a reset, the customer's only outcome in
-- the batch: "plain") and a query that walks the rest. At max_in_flight 1 each delivered row is a
-- call of its own, nearly always one plain done. This version first asks, with one jsonpath test
-- on the batch (and, for a batch of several, a count of its customers), whether every outcome is
-- plain; then every flag is true without the classifying query, the set-based statement runs and
-- the walk of the rest is skipped. Any other batch takes 002's path, unchanged. The effects are
-- exactly 002's for every batch.
CREATE OR REPLACE FUNCTION omnisync.record_outcomes(p_process text, p_outcomes jsonb)
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
    all_plain boolean;
BEGIN
    -- Every outcome plain (the common case): no classification, and no walk of the rest.
    all_plain := NOT jsonb_path_exists(p_outcomes,
           '$[*] ? (!exists(@.status) || @.status != "done" || @.purged == true || @.sync.reset == true
                    || (exists(@.sync) && @.sync.type() != "object"))')
       AND (jsonb_array_length(p_outcomes) < 2
            OR (SELECT count(DISTINCT (e.v->>'source', (e.v->>'brand_id')::bigint, e.v->>'primary_id'))
                FROM jsonb_array_elements(p_outcomes) e(v)) = jsonb_array_length(p_outcomes));
    IF all_plain THEN
        plain := array_fill(true, ARRAY[jsonb_array_length(p_outcomes)]);
    ELSE
        -- A flag per outcome, not two new arrays: rebuilding a jsonb array of outcomes costs
        -- more than the updates.
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
    END IF;

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
            (source, brand_id, primary_id, created, omnidesk_id, channels, last_outbox_id,
             create_unknown)
        SELECT c.source, c.brand_id, c.primary_id, (c.sync->>'created')::boolean,
               (c.sync->>'omnidesk_id')::bigint,
               ARRAY(SELECT jsonb_array_elements_text(coalesce(c.sync->'channels', '[]'::jsonb))),
               c.sent_id, coalesce((c.sync->>'create_unknown')::boolean, false)
        FROM changed c
        WHERE c.sync IS NOT NULL
        ON CONFLICT (source, brand_id, primary_id) DO UPDATE SET
            created = EXCLUDED.created,
            omnidesk_id = EXCLUDED.omnidesk_id,
            channels = EXCLUDED.channels,
            last_outbox_id = coalesce(EXCLUDED.last_outbox_id, ss.last_outbox_id),
            create_unknown = EXCLUDED.create_unknown,
            updated_at = now()
    ), superseded AS (
        UPDATE omnisync.outbox f SET status = 'skipped', superseded_by = c.sent_id,
            result = 'superseded by ' || c.sent_id
        FROM changed c
        WHERE f.source = c.source AND f.brand_id = c.brand_id AND f.primary_id = c.primary_id
          AND f.status = 'failed' AND f.id < c.sent_id
    )
    SELECT coalesce(sum(changed.n), 0) INTO total FROM changed;
    IF all_plain THEN
        RETURN total;
    END IF;

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
                (source, brand_id, primary_id, created, omnidesk_id, channels, last_outbox_id,
                 create_unknown)
            VALUES (k_source, k_brand, k_primary, (s->>'created')::boolean,
                    (s->>'omnidesk_id')::bigint,
                    ARRAY(SELECT jsonb_array_elements_text(coalesce(s->'channels', '[]'::jsonb))),
                    CASE WHEN st = 'done' THEN sent END,
                    coalesce((s->>'create_unknown')::boolean, false))
            ON CONFLICT (source, brand_id, primary_id) DO UPDATE SET
                created = EXCLUDED.created,
                omnidesk_id = EXCLUDED.omnidesk_id,
                channels = EXCLUDED.channels,
                last_outbox_id = coalesce(EXCLUDED.last_outbox_id, ss.last_outbox_id),
                create_unknown = EXCLUDED.create_unknown,
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
