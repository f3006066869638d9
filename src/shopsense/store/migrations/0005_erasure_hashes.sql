-- shopsense PostgreSQL schema, version 5: erasure tombstones that bundles can check.
--
-- Every served bundle consults the tombstones at load, so precomputed answers and per-user model state of
-- an erased user are never used again, whichever bundle a restart, rollback or pin brings back. Bundles
-- and requests recognise the user by the SHA-256 (hex) of the id's UTF-8 bytes; user_id stays for the
-- replica feed, which tells the other replicas whose history to drop from memory.
ALTER TABLE erasures ADD COLUMN user_sha256 TEXT;
UPDATE erasures SET user_sha256 = encode(sha256(convert_to(user_id, 'UTF8')), 'hex');
ALTER TABLE erasures ALTER COLUMN user_sha256 SET NOT NULL;
