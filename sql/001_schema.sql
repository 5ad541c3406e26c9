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
    op               text        NOT NULL
                     CHECK (op IN ('insert', 'update', 'delete', 'truncate', 'backfill')),
    -- The mapped columns only, keyed by Omnidesk field name (primary_id, firstname, ...,
    -- custom_<name>, brand_id, erase). NULL once scrubbed.
    old_data         jsonb,
    new_data         jsonb,
    txid             bigint      NOT NULL DEFAULT txid_current(),
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'held', 'done', 'failed', 'skipped')),
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
-- Per-customer order: "is there an earlier unfinished row of this customer?" is one probe.
CREATE INDEX outbox_customer_open ON omnisync.outbox (source, brand_id, primary_id, id)
    WHERE status IN ('pending', 'held');
-- A customer's whole history: superseding failed rows, scrubbing after a purge, outbox list.
CREATE INDEX outbox_customer ON omnisync.outbox (source, brand_id, primary_id);
-- Operators list failed and held rows; retention prunes finished ones.
CREATE INDEX outbox_failed ON omnisync.outbox (id) WHERE status IN ('failed', 'held');
CREATE INDEX outbox_finished ON omnisync.outbox (delivered_at) WHERE status IN ('done', 'skipped');

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
