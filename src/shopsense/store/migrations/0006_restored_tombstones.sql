-- shopsense PostgreSQL schema, version 6: tombstones without an id.
--
-- A backup carries its store's tombstones (hashes only); restored into another store they are recorded
-- with no user_id, which nobody has any more. The replica feed reads only tombstones that name an id.
ALTER TABLE erasures ALTER COLUMN user_id DROP NOT NULL;
