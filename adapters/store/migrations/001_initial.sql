-- sfa-ops store, schema version 1. Shared by SQLite and PostgreSQL: @TOKENS@ are replaced per
-- dialect by adapters/store/migrations/__init__.py. Times are float epoch seconds (UTC).

-- Findings and system messages, written before they are published (republished after a crash).
CREATE TABLE outbox (
    id @ID@,
    topic TEXT NOT NULL,
    payload @JSON@ NOT NULL,
    qos INTEGER NOT NULL,
    retain @BOOL@ NOT NULL,
    kind TEXT NOT NULL,
    created_at @FLOAT@ NOT NULL,
    published_at @FLOAT@
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_kind_time_idx ON outbox (kind, created_at);
CREATE INDEX outbox_time_idx ON outbox (created_at);

-- Generic JSON state: breaker/health snapshots, alert notification log, dispatcher state.
CREATE TABLE actor_state (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    data @JSON@ NOT NULL,
    updated_at @FLOAT@ NOT NULL,
    PRIMARY KEY (namespace, key)
);

CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    labels @JSON@ NOT NULL,
    annotations @JSON@ NOT NULL,
    status TEXT NOT NULL,
    starts_at @FLOAT@ NOT NULL,
    ends_at @FLOAT@,
    updated_at @FLOAT@ NOT NULL
);
CREATE INDEX alerts_status_idx ON alerts (status, starts_at);

CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    automated_response @BOOL@ NOT NULL,
    created_at @FLOAT@ NOT NULL,
    updated_at @FLOAT@ NOT NULL,
    data @JSON@ NOT NULL
);
CREATE INDEX incidents_status_idx ON incidents (status, created_at);
CREATE INDEX incidents_created_idx ON incidents (created_at);

CREATE TABLE incident_actions (
    id TEXT PRIMARY KEY,
    incident_id TEXT REFERENCES incidents (id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    params @JSON@ NOT NULL,
    status TEXT NOT NULL,
    created_at @FLOAT@ NOT NULL,
    until @FLOAT@,
    undo_at @FLOAT@,
    undone_at @FLOAT@,
    error TEXT
);
CREATE INDEX actions_incident_idx ON incident_actions (incident_id, created_at);
CREATE INDEX actions_undo_idx ON incident_actions (undo_at) WHERE undone_at IS NULL;

-- One row per audit chain (retention class): the head appenders lock and continue from, and the
-- anchor (last purged row) verification starts from.
CREATE TABLE audit_chain (
    chain TEXT PRIMARY KEY,
    head_id @BIGINT@ NOT NULL,
    head_hash TEXT NOT NULL,
    anchor_id @BIGINT@ NOT NULL,
    anchor_hash TEXT NOT NULL,
    purged @BIGINT@ NOT NULL,
    updated_at @FLOAT@ NOT NULL
);
-- payload is TEXT in both dialects: the hashed bytes are the stored bytes.
CREATE TABLE audit_events (
    id @ID@,
    chain TEXT NOT NULL,
    ts @FLOAT@ NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_chain_idx ON audit_events (chain, id);
CREATE INDEX audit_events_ts_idx ON audit_events (ts);

CREATE TABLE metrics_minute (
    service TEXT NOT NULL,
    minute @FLOAT@ NOT NULL,
    calls @BIGINT@ NOT NULL,
    outcomes @JSON@ NOT NULL,
    latency_sketch @BLOB@ NOT NULL,
    concurrency_max INTEGER NOT NULL,
    concurrency_avg @FLOAT@ NOT NULL,
    timeouts @BIGINT@ NOT NULL,
    PRIMARY KEY (service, minute)
);
CREATE INDEX metrics_minute_idx ON metrics_minute (minute);

CREATE TABLE dependencies (
    caller TEXT NOT NULL,
    callee TEXT NOT NULL,
    count @BIGINT@ NOT NULL,
    last_seen @FLOAT@ NOT NULL,
    PRIMARY KEY (caller, callee)
);

CREATE TABLE baselines (
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    data @JSON@ NOT NULL,
    created_at @FLOAT@ NOT NULL,
    PRIMARY KEY (kind, version)
);
