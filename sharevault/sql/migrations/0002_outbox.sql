-- Reports owed to Portal ("this client backup share is stored"), written by the worker in the same
-- transaction as the share, so a stored share is reported even if the worker dies right after.
CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    -- One report per applied message: a redelivery or replay can never add a second one.
    message_id    text        NOT NULL UNIQUE,
    client_id     text        NOT NULL,
    backup_method text        NOT NULL,
    pair_id       text        NOT NULL DEFAULT '',
    report_api    text        NOT NULL CHECK (report_api IN ('v2', 'v3')),
    -- The client's bearer, sealed (AES-GCM, identity-bound); set to NULL once the row is settled.
    bearer_sealed bytea,
    status        text        NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'sent', 'failed', 'expired')),
    attempts      integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    -- Portal's HTTP status of the last attempt (NULL: no answer) and why it failed; never a secret.
    last_status   integer,
    last_error    text,
    CHECK (status = 'pending' OR bearer_sealed IS NULL)
);

-- The sender's only question: which pending rows are due.
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
