-- shopsense PostgreSQL schema, version 2: what several API replicas on one database share.
--
-- Each event row remembers the transaction that wrote it, so a replica can read exactly the events
-- committed since it last looked: a snapshot tells which transactions had ended (below its xmax, not in
-- its in-progress list); the next look reads those that ended since.
ALTER TABLE events ADD COLUMN txid XID8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_txid ON events (txid);

-- Items remember the transaction that last changed them, so replicas follow availability and stock.
ALTER TABLE items ADD COLUMN txid XID8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX items_txid ON items (txid);

-- An erasure leaves a tombstone (who, when, by which transaction), read by the other replicas the same
-- way, so they drop the user's history and cached answers from memory.
CREATE TABLE erasures (
    user_id TEXT NOT NULL, erased_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    txid XID8 NOT NULL DEFAULT pg_current_xact_id());
CREATE INDEX erasures_txid ON erasures (txid);

-- API keys (only the SHA-256 of the secret), read by every replica on every request.
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT[] NOT NULL, secret_sha256 TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL, revoked_at TIMESTAMPTZ);

-- Which bundle each pipeline serves: promotions and rollbacks, newest last (the log is the history).
CREATE TABLE bundle_pins (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, pipeline TEXT NOT NULL, version TEXT,
    action TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE INDEX bundle_pins_pipeline ON bundle_pins (pipeline, id);

-- Replicas alive: each refreshes its row while it runs (per-key rate limits are shared among them).
CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY, host TEXT, pid INTEGER, started_at TIMESTAMPTZ NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL, bundle_version TEXT);
