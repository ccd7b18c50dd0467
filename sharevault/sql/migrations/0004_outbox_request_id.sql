-- The id of the HTTP request that produced the share: sent to Portal as X-Request-Id with the
-- report, so that one id follows a share from the app's request to Portal's log.
ALTER TABLE outbox ADD COLUMN request_id text;
