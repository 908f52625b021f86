-- login-etl schema, version 1.
-- The exercise's table, created only if the exercise's own setup has not done so; its
-- columns and types are kept as given, the design's columns are added beside them.
CREATE TABLE IF NOT EXISTS user_logins(
    user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
    masked_device_id varchar(256), locale varchar(32), app_version integer,
    create_date date);

ALTER TABLE user_logins
    -- SQS message id: the idempotency key (re-delivery adds no row).
    ADD COLUMN IF NOT EXISTS sqs_message_id varchar(128),
    -- The app_version text as sent; app_version holds its order-preserving encoding.
    ADD COLUMN IF NOT EXISTS app_version_raw varchar(32),
    -- The SQS SentTimestamp the create_date is derived from (UTC).
    ADD COLUMN IF NOT EXISTS sent_at timestamptz,
    -- Version of the blind-index keys behind masked_ip / masked_device_id.
    ADD COLUMN IF NOT EXISTS index_key_version integer,
    ADD COLUMN IF NOT EXISTS loaded_at timestamptz NOT NULL DEFAULT now();

CREATE UNIQUE INDEX IF NOT EXISTS user_logins_sqs_message_id_key ON user_logins (sqs_message_id);
-- Duplicate detection and `pii-vault find` look rows up by mask.
CREATE INDEX IF NOT EXISTS user_logins_masked_ip_idx ON user_logins (masked_ip);
CREATE INDEX IF NOT EXISTS user_logins_masked_device_id_idx ON user_logins (masked_device_id);

-- Wrapped (KMS-encrypted) keys. Plaintext keys never reach the database.
CREATE TABLE IF NOT EXISTS pii_keys (
    purpose     text        NOT NULL CHECK (purpose IN ('index:ip', 'index:device_id', 'data')),
    version     integer     NOT NULL CHECK (version >= 1),
    kms_key_id  text        NOT NULL,
    wrapped_key bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (purpose, version)
);

-- One row per distinct (field, blind index): the original value, AES-256-GCM-SIV
-- encrypted under data key `key_version`, AAD = field, blind_index, key_version.
CREATE TABLE IF NOT EXISTS pii_vault (
    field       text        NOT NULL CHECK (field IN ('ip', 'device_id')),
    blind_index varchar(64) NOT NULL CHECK (blind_index ~ '^[0-9a-f]{64}$'),
    key_version integer     NOT NULL CHECK (key_version >= 1),
    nonce       bytea       NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext  bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (field, blind_index)
);
CREATE INDEX IF NOT EXISTS pii_vault_key_version_idx ON pii_vault (key_version);
