-- shopsense PostgreSQL schema, version 3: long work (training, profile builds, audiences) as jobs that any
-- replica can poll. A job's row stays small (a JSON summary as text); its bulky output (an audience's
-- customers) is one Parquet blob in job_rows, read only when asked for.
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, progress DOUBLE PRECISION NOT NULL,
    message TEXT, result TEXT, error TEXT, created_at TIMESTAMPTZ NOT NULL, started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ, updated_at TIMESTAMPTZ NOT NULL);
CREATE INDEX jobs_created ON jobs (created_at DESC);
CREATE INDEX jobs_unfinished ON jobs (status) WHERE status IN ('queued', 'running');

CREATE TABLE job_rows (job_id TEXT PRIMARY KEY REFERENCES jobs ON DELETE CASCADE, data BYTEA NOT NULL);
