-- name: store_batch
-- The worker's whole write in one statement, so one round trip and atomic without BEGIN/COMMIT.
-- `applied`: the versioned upsert: a row changes only when the incoming (version, message_id) is
-- newer, so a retry, replay or duplicate never overwrites a newer share. `owed`: a pending Portal
-- report ($11-$14) for each share it applied that carries one; a message id that already has a row
-- (redelivery, replay) never gets a second. `notices`: wakes the gateways waiting for every message
-- of the batch, applied or superseded ($15: ids joined by commas, each payload under 8000 bytes);
-- PostgreSQL delivers them at commit and drops them if the statement fails. A CTE that is not read
-- is not run: the final SELECT reads `notices` and `refused`. Returns the ids applied.
-- The sealed shares come as one bytea ($5) cut by 1-based starts and sizes ($6, $7): asyncpg
-- encodes a bytea[] element by element at a fraction of the speed (store.share_columns).
-- Bounds per client (docs/operations.md, "Budget and bounds"): of each (kind, client, method) the
-- batch touches, only the newest $16 pair ids by (version, message_id) stay, counting the rows held
-- (this statement's snapshot) and the batch's: an incoming pair ranked below is not stored (it is
-- superseded, as an older version is), an older held pair is deleted (`pruned`), in this statement.
-- A held row is deleted only if it still holds the version ranked (FOR UPDATE re-checks it after a
-- concurrent writer) and nobody else is writing it (SKIP LOCKED: never wait, never deadlock): two
-- concurrent batches may leave one pair too many, which the next write prunes; neither can prune
-- a pair newer than $16 others. `refused`: a method new to its client that would take the client
-- past $17 distinct methods fails the statement (check_violation); the worker parks that share.
WITH incoming AS (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $6::int[], $7::int[],
                $8::text[], $9::bigint[], $10::text[])
         AS r(kind, client_id, backup_method, pair_id, start, size, key_id, version, message_id)
), held AS (
    -- One probe of the primary key per client (OFFSET 0 keeps the planner from turning it into
    -- a join that may read the whole table).
    SELECT s.*
    FROM (SELECT DISTINCT kind, client_id FROM incoming) c
    CROSS JOIN LATERAL (
        SELECT s.kind, s.client_id, s.backup_method, s.pair_id, s.version, s.message_id
        FROM shares s WHERE s.kind = c.kind AND s.client_id = c.client_id OFFSET 0
    ) s
), pairs AS (
    -- Every pair of the batch's clients: those held and those coming. (Counted by DISTINCT then
    -- count(*), which hash; count(DISTINCT) sorts, at several times the cost.)
    SELECT kind, client_id, backup_method, pair_id, version, message_id FROM held
    UNION ALL
    SELECT kind, client_id, backup_method, pair_id, version, message_id FROM incoming
), refused AS (
    SELECT sharevault_refuse('methods_per_client')
    FROM incoming i
    JOIN (SELECT kind, client_id
          FROM (SELECT DISTINCT kind, client_id, backup_method FROM pairs) m
          GROUP BY kind, client_id HAVING count(*) > $17) n USING (kind, client_id)
    WHERE NOT EXISTS (SELECT FROM held h WHERE (h.kind, h.client_id, h.backup_method)
                                               = (i.kind, i.client_id, i.backup_method))
), ranked AS (
    -- Only the methods with more than $16 pairs are ranked (as a rule, none).
    SELECT kind, client_id, backup_method, pair_id,
           row_number() OVER (PARTITION BY kind, client_id, backup_method
                              ORDER BY version DESC, message_id DESC) AS rank
    FROM (SELECT DISTINCT ON (kind, client_id, backup_method, pair_id) p.*
          FROM pairs p
          JOIN (SELECT kind, client_id, backup_method
                FROM (SELECT DISTINCT kind, client_id, backup_method, pair_id FROM pairs) d
                GROUP BY kind, client_id, backup_method HAVING count(*) > $16) crowded
            USING (kind, client_id, backup_method)
          ORDER BY kind, client_id, backup_method, pair_id, version DESC, message_id DESC) newest
), applied AS (
    INSERT INTO shares AS s (kind, client_id, backup_method, pair_id, sealed, key_id, version,
                             message_id)
    SELECT r.kind, r.client_id, r.backup_method, r.pair_id, substr($5::bytea, r.start, r.size),
           r.key_id, r.version, r.message_id
    FROM incoming r
    WHERE NOT EXISTS (SELECT FROM ranked k
                      WHERE (k.kind, k.client_id, k.backup_method, k.pair_id)
                            = (r.kind, r.client_id, r.backup_method, r.pair_id)
                        AND k.rank > $16)
    ON CONFLICT (kind, client_id, backup_method, pair_id) DO UPDATE
    SET sealed = excluded.sealed, key_id = excluded.key_id, version = excluded.version,
        message_id = excluded.message_id, updated_at = now()
    WHERE (excluded.version, excluded.message_id) > (s.version, s.message_id)
    RETURNING s.client_id, s.backup_method, s.pair_id, s.message_id
), doomed AS (
    SELECT s.kind, s.client_id, s.backup_method, s.pair_id
    FROM shares s
    JOIN held h USING (kind, client_id, backup_method, pair_id)
    JOIN ranked k USING (kind, client_id, backup_method, pair_id)
    WHERE k.rank > $16 AND s.version = h.version AND s.message_id = h.message_id
    ORDER BY s.kind, s.client_id, s.backup_method, s.pair_id
    FOR UPDATE OF s SKIP LOCKED
), pruned AS (
    DELETE FROM shares s USING doomed d
    WHERE (s.kind, s.client_id, s.backup_method, s.pair_id)
          = (d.kind, d.client_id, d.backup_method, d.pair_id)
    RETURNING s.pair_id
), owed AS (
    INSERT INTO outbox (message_id, client_id, backup_method, pair_id, report_api, bearer_sealed,
                        request_id)
    SELECT a.message_id, a.client_id, a.backup_method, a.pair_id, o.report_api, o.bearer_sealed,
           o.request_id
    FROM unnest($11::text[], $12::text[], $13::bytea[], $14::text[])
         AS o(message_id, report_api, bearer_sealed, request_id)
    JOIN applied a ON a.message_id = o.message_id
    ON CONFLICT (message_id) DO NOTHING
), notices AS (
    SELECT pg_notify('sharevault_committed', payload) FROM unnest($15::text[]) AS payload
)
SELECT ARRAY(SELECT message_id FROM applied) AS applied, (SELECT count(*) FROM pruned) AS pruned,
       (SELECT count(*) FROM notices) AS notices, (SELECT count(*) FROM refused) AS refused;

-- name: notify
-- Notices the worker sends outside store_batch (a refusal: listener.refusal_payloads).
SELECT pg_notify('sharevault_committed', payload) FROM unnest($1::text[]) AS payload;

-- name: stored_version
-- The version an identity holds now: read-your-writes re-checks against it.
SELECT version, message_id FROM shares
WHERE kind = $1 AND client_id = $2 AND backup_method = $3 AND pair_id = $4;

-- name: client_shares
-- The newest $3 shares of one kind of a client, newest first (for /backup/fetch): the bounds
-- per client make $3 = METHODS_PER_CLIENT * PAIRS_PER_METHOD all of them.
SELECT backup_method, pair_id, sealed, version, message_id FROM shares
WHERE kind = $1 AND client_id = $2
ORDER BY version DESC, message_id DESC
LIMIT $3;

-- name: client_share_lookup
-- The one client share recovery serves, in PortalEx's order (client_shares.lookup_order): the
-- newest with pair id $2 if one is given ('' if not), else the newest with method $3; failing
-- that, the newest under method UNKNOWN (a legacy share).
SELECT backup_method, pair_id, sealed, version, message_id FROM shares
WHERE kind = 'client' AND client_id = $1
  AND (CASE WHEN $2 <> '' THEN pair_id = $2 ELSE backup_method = $3 END
       OR backup_method = 'UNKNOWN')
ORDER BY (CASE WHEN $2 <> '' THEN pair_id = $2 ELSE backup_method = $3 END) DESC,
         version DESC, message_id DESC
LIMIT 1;

-- name: ping
-- Readiness: the database answers.
SELECT 1;

-- name: clock
-- The database's clock in µs since the epoch (clock_timestamp: now, not the transaction's start),
-- which gateways and workers compare their own with (clock.py).
SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;

-- --- report-back outbox (client shares) -------------------------------------------------------

-- name: outbox_claim
-- Lease up to $1 due reports to this sender for $2 seconds, in one short statement: their next
-- attempt moves to the lease's end, so other senders skip them until then (a crashed sender's rows
-- come back when it passes). No lock is held while Portal is called; the lease end is the claim's
-- token for outbox_settle.
WITH due AS (
    SELECT id FROM outbox
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox o SET next_attempt_at = now() + make_interval(secs => $2::float8)
FROM due
WHERE o.id = due.id
RETURNING o.id, o.message_id, o.client_id, o.backup_method, o.pair_id, o.report_api,
          o.bearer_sealed, o.attempts, extract(epoch FROM now() - o.created_at)::float8 AS age,
          o.request_id, o.next_attempt_at AS lease_until;

-- name: outbox_settle
-- Record attempts (arrays: id, status, delay, HTTP status, reason, lease end), each only where the
-- row is still pending under the claim's lease: a sender whose lease ran out and was claimed again
-- records nothing. 'pending' reschedules after the delay; any other status is final and deletes
-- the sealed bearer.
WITH done AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::integer[], $5::text[],
                         $6::timestamptz[])
        AS d(id, status, delay, http_status, reason, lease_until)
)
UPDATE outbox o
SET status = d.status,
    attempts = o.attempts + 1,
    next_attempt_at = CASE WHEN d.status = 'pending'
                           THEN now() + make_interval(secs => d.delay)
                           ELSE o.next_attempt_at END,
    bearer_sealed = CASE WHEN d.status = 'pending' THEN o.bearer_sealed END,
    finished_at = CASE WHEN d.status = 'pending' THEN NULL ELSE now() END,
    last_status = d.http_status,
    last_error = d.reason
FROM done d
WHERE o.id = d.id AND o.status = 'pending' AND o.next_attempt_at = d.lease_until
RETURNING o.id;

-- name: outbox_release
-- Give leased rows back, due now (a sender stopping mid-send), where the lease is still the caller's.
UPDATE outbox o SET next_attempt_at = now()
FROM unnest($1::bigint[], $2::timestamptz[]) AS r(id, lease_until)
WHERE o.id = r.id AND o.status = 'pending' AND o.next_attempt_at = r.lease_until;

-- --- key rotation and stats (operator commands: sharevault/ops) ---------------------------------

-- name: shares_by_key
-- How many shares each key id protects (keys status, rotate-key).
SELECT key_id, count(*) AS n FROM shares GROUP BY key_id ORDER BY key_id;

-- name: outbox_by_key
-- How many outbox bearers each key id protects; a settled row holds none.
SELECT key_id, count(*) AS n FROM outbox WHERE bearer_sealed IS NOT NULL
GROUP BY key_id ORDER BY key_id;

-- name: shares_to_rewrap
-- The next window of $6 rows in primary-key order (keyset), with the sealed share only of those
-- under another key than $1. Walking the whole key keeps the plan an index range scan whatever the
-- statistics say of key ids (a filter on key_id flips to a full scan per page once most are done).
SELECT kind, client_id, backup_method, pair_id, version, message_id,
       CASE WHEN key_id <> $1 THEN sealed END AS sealed
FROM shares
WHERE (kind, client_id, backup_method, pair_id) > ($2, $3, $4, $5)
ORDER BY kind, client_id, backup_method, pair_id
LIMIT $6;

-- name: rewrap_shares
-- Re-sealed shares go back only where the row still holds the message that was read (a newer
-- write wins) and nobody holds the row right now (SKIP LOCKED: never wait on a worker, so never
-- deadlock with one). Version and message id stay: a re-wrap is not a new share.
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::text[], $7::bytea[], $8::text[])
        AS w(kind, client_id, backup_method, pair_id, version, message_id, sealed, key_id)
), free AS (
    SELECT s.kind, s.client_id, s.backup_method, s.pair_id
    FROM shares s JOIN wanted w USING (kind, client_id, backup_method, pair_id)
    WHERE s.version = w.version AND s.message_id = w.message_id
    ORDER BY s.kind, s.client_id, s.backup_method, s.pair_id
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE shares s SET sealed = w.sealed, key_id = w.key_id
FROM wanted w JOIN free f USING (kind, client_id, backup_method, pair_id)
WHERE (s.kind, s.client_id, s.backup_method, s.pair_id)
      = (w.kind, w.client_id, w.backup_method, w.pair_id)
  AND s.version = w.version AND s.message_id = w.message_id
RETURNING s.message_id;

-- name: outbox_to_rewrap
-- The next page (keyset on id) of pending bearers sealed under another key than $1.
SELECT id, message_id, client_id, backup_method, pair_id, bearer_sealed FROM outbox
WHERE bearer_sealed IS NOT NULL AND key_id IS DISTINCT FROM $1 AND id > $2
ORDER BY id
LIMIT $3;

-- name: rewrap_outbox
-- Re-sealed bearers go back only where the row still holds the bearer that was read (a settled
-- row holds none) and no claim or settle holds its lock this instant (SKIP LOCKED).
WITH wanted AS (
    SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS w(id, old, new)
), free AS (
    SELECT o.id FROM outbox o JOIN wanted w USING (id)
    WHERE o.bearer_sealed = w.old
    ORDER BY o.id
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE outbox o SET bearer_sealed = w.new
FROM wanted w JOIN free f USING (id)
WHERE o.id = w.id AND o.bearer_sealed = w.old
RETURNING o.id;

-- name: shares_by_method
-- Stored shares by kind and backup method (stats).
SELECT kind, backup_method, count(*) AS n FROM shares
GROUP BY kind, backup_method ORDER BY kind, backup_method;

-- name: outbox_summary
-- Reports by status, with the age in seconds of the oldest row of each status (stats).
SELECT status, count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS oldest
FROM outbox GROUP BY status ORDER BY status;

-- name: outbox_prune
-- Settled reports that finished more than $1 seconds ago, at most $2 per call (short locks).
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE status <> 'pending' AND finished_at < now() - make_interval(secs => $1::float8)
    LIMIT $2
);

-- --- vacuum where autovacuum is off (store.vacuuming_shares) -----------------------------------

-- name: shares_dead_rows
-- Live and dead rows of `shares` and of its TOAST table (the statistics, up to a second late under
-- load), and whether autovacuum looks after them: on, counting rows, not disabled on either table.
SELECT current_setting('autovacuum')::bool
       AND current_setting('track_counts')::bool
       AND NOT EXISTS (SELECT FROM pg_options_to_table(c.reloptions)
                       WHERE option_name = 'autovacuum_enabled' AND NOT option_value::bool)
       AND NOT EXISTS (SELECT FROM pg_options_to_table(t.reloptions)
                       WHERE option_name = 'autovacuum_enabled' AND NOT option_value::bool)
       AS autovacuum,
       coalesce(pg_stat_get_live_tuples(c.oid), 0) AS heap_live,
       coalesce(pg_stat_get_dead_tuples(c.oid), 0) AS heap_dead,
       coalesce(pg_stat_get_live_tuples(t.oid), 0) AS toast_live,
       coalesce(pg_stat_get_dead_tuples(t.oid), 0) AS toast_dead
FROM pg_class c LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
WHERE c.oid = 'shares'::regclass;

-- name: vacuum_shares
-- Plain VACUUM of `shares` and its TOAST table: the dead rows' space becomes free for new rows,
-- and reads and writes go on meanwhile. SKIP_LOCKED: a vacuum already at work makes this one a
-- no-op; TRUNCATE false: never take the exclusive lock that handing the file's empty tail back to
-- the OS needs (the space is reused instead).
VACUUM (SKIP_LOCKED, TRUNCATE false) shares;
