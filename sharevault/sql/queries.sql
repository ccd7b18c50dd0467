-- name: upsert_shares
-- Versioned batch upsert: a row changes only when the incoming (version, message_id) is newer,
-- so a retry, replay or duplicate never overwrites a newer share. Returns the ids it applied.
INSERT INTO shares AS s (kind, client_id, backup_method, pair_id, sealed, key_id, version, message_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[],
                     $7::bigint[], $8::text[])
ON CONFLICT (kind, client_id, backup_method, pair_id) DO UPDATE
SET sealed = excluded.sealed, key_id = excluded.key_id, version = excluded.version,
    message_id = excluded.message_id, updated_at = now()
WHERE (excluded.version, excluded.message_id) > (s.version, s.message_id)
RETURNING message_id;

-- name: notify_committed
-- Wakes the gateways waiting for these message ids (delivered at commit, dropped on rollback).
SELECT pg_notify('sharevault_committed', $1);

-- name: stored_version
-- The version an identity holds now: read-your-writes re-checks against it.
SELECT version, message_id FROM shares
WHERE kind = $1 AND client_id = $2 AND backup_method = $3 AND pair_id = $4;

-- name: client_shares
-- Every share of one kind of a client, newest first (for /backup/fetch).
SELECT backup_method, pair_id, sealed, version, message_id FROM shares
WHERE kind = $1 AND client_id = $2
ORDER BY version DESC, message_id DESC;

-- name: ping
-- Readiness: the database answers.
SELECT 1;
