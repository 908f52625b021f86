-- Two more key purposes, each one version, wrapped under the KMS key like the others:
--   audit   — the vault service's key for the audit's hash chain and for keyed hashes of
--             what it must record without keeping (a malformed request's body, a mask);
--             the KMS key policy lets only the service unwrap it.
--   erasure — the key of the markers that recognise an erased value, kept apart from the
--             index keys so that nothing that computes masks can compute a marker.
-- Existing databases get them from `pii-vault admin init-keys` (idempotent).
ALTER TABLE pii_keys DROP CONSTRAINT pii_keys_purpose_check;
ALTER TABLE pii_keys ADD CONSTRAINT pii_keys_purpose_check
    CHECK (purpose IN ('index:ip', 'index:device_id', 'data', 'audit', 'erasure'));
