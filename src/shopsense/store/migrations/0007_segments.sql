-- shopsense PostgreSQL schema, version 7: saved segments.
--
-- A marketer saves a segment (a name and its expression) on the dashboard to reuse it in audiences and
-- campaigns; every replica reads the same ones.
CREATE TABLE IF NOT EXISTS segments (name TEXT PRIMARY KEY, expression TEXT NOT NULL, created_at TIMESTAMPTZ);
