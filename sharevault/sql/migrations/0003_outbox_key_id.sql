-- Which key sealed each outbox bearer, so that `keys status` and `rotate-key` can find rows still
-- under an old key. Derived from the ciphertext itself (`len(kid) ‖ kid ‖ nonce ‖ ct`), so every
-- writer is right without knowing about it; NULL once the row is settled and the bearer deleted.
-- Key ids are printable ASCII (config.parse_keyring): 'escape' keeps them as they are except the
-- backslash, which it doubles and `replace` undoes.
ALTER TABLE outbox ADD COLUMN key_id text GENERATED ALWAYS AS (
    CASE WHEN length(bearer_sealed) > 0 THEN
        replace(encode(substring(bearer_sealed FROM 2 FOR get_byte(bearer_sealed, 0)), 'escape'),
                E'\\\\', E'\\')
    END
) STORED;
