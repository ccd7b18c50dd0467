-- Stored backup shares, sealed with AES-256-GCM by the gateway; one row per identity.
CREATE TABLE shares (
    kind          text        NOT NULL CHECK (kind IN ('custodian', 'client')),
    client_id     text        NOT NULL,
    backup_method text        NOT NULL,
    pair_id       text        NOT NULL DEFAULT '',
    sealed        bytea       NOT NULL,
    key_id        text        NOT NULL,
    version       bigint      NOT NULL,
    message_id    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, client_id, backup_method, pair_id)
) WITH (
    -- Overwrites are frequent: leave room for HOT updates and vacuum the table and its TOAST early.
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    toast.autovacuum_vacuum_scale_factor = 0.02
);

-- Ciphertext does not compress: skip the attempt, store it out of line as is.
ALTER TABLE shares ALTER COLUMN sealed SET STORAGE EXTERNAL;
