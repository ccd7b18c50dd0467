"""The few queries the harness itself runs against the databases it measures."""

from __future__ import annotations

# Commit time of fresh shares: updated_at is now() of the transaction that wrote the row.
COMMIT_TIMES = """
SELECT client_id, extract(epoch FROM updated_at)::float8 AS t
FROM shares WHERE kind = 'custodian' AND client_id = ANY($1::text[])
"""

# Table, TOAST and indexes on disk against live rows; n_dead_tup says what vacuum has not reclaimed.
DISK = """
SELECT pg_total_relation_size(c.oid) AS total,
       pg_relation_size(c.oid) AS heap,
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast,
       pg_indexes_size(c.oid) AS indexes,
       (SELECT count(*) FROM shares) AS live,
       coalesce(s.n_dead_tup, 0) AS dead,
       current_setting('autovacuum') AS autovacuum
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relname = 'shares' AND c.relnamespace = 'public'::regnamespace
"""

# A backlog is drained once every identity holds a version from the backlog's last round
# (nothing else writes while a backlog drains, and its versions are newer than all before).
FINAL_ROUND = """
SELECT count(*) FROM shares WHERE version >= $1
"""
