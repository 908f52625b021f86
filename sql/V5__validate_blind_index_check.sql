-- login-etl schema, version 5: V4's rule checked against the rows already in the vault
-- (they met the equivalent rule before), under SHARE UPDATE EXCLUSIVE: the function and
-- the vault service keep writing while it scans.
ALTER TABLE pii_vault VALIDATE CONSTRAINT pii_vault_blind_index_check;
