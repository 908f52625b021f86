//! Before V18, on a vault that holds rows: a copy of `vault.pii_vault` with V18's keys
//! (`vault.pii_vault_hashed`), filled without holding back ingest, which V18 then puts in
//! the old table's place within a moment's lock. V18 could build its keys on the table
//! itself only under a lock that stops every batch for the build (an exclusion constraint
//! has no CONCURRENTLY): 13 s for 2.5 M values, measured.
//!
//! Three steps, each idempotent, so that a `migrate` broken anywhere is run again:
//! 1. the new table, empty, with the keys (no lock on the old one);
//! 2. a trigger on the old table that mirrors each change into the new one from then on
//!    (CREATE TRIGGER waits for the batches in flight, at most 1 s a try): a value vaulted,
//!    re-encrypted, forgotten or expired meanwhile is so in both;
//! 3. the rows there before, copied in key order, a few thousand a statement, each batch
//!    holding its source rows FOR SHARE until it commits: a forget or expiry of one of them
//!    waits for the copy of it (milliseconds), then deletes it from both, so nothing
//!    forgotten comes back. Writers are not held: they only insert new keys.

use crate::{Error, lock_retried};

/// The copy's statement size: a batch holds its rows a few milliseconds.
pub const COPY_ROWS: i64 = 5_000;

/// The three steps; a vault without rows, or already in V18's form, needs none.
pub async fn prepare_vault_key_by_hash(client: &tokio_postgres::Client) -> Result<(), Error> {
    let needed: bool = client
        .query_one(
            "SELECT pg_catalog.to_regclass('vault.pii_vault_hashed') IS NOT NULL
                 OR (EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                              WHERE conrelid = 'vault.pii_vault'::regclass AND conname = 'pii_vault_pkey')
                     AND EXISTS (SELECT 1 FROM vault.pii_vault))",
            &[],
        )
        .await?
        .get(0);
    if !needed {
        return Ok(());
    }
    create_table(client).await?;
    mirror_changes(client).await?;
    copy_rows(client).await?;
    Ok(())
}

/// Step 1: the new table as the old one's columns, defaults and checks, with V18's keys,
/// reachable by no one but its owner until V18 gives it the old table's rights.
pub async fn create_table(client: &tokio_postgres::Client) -> Result<(), Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS vault.pii_vault_hashed
                 (LIKE vault.pii_vault INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             REVOKE ALL ON vault.pii_vault_hashed FROM PUBLIC;
             DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                                 WHERE conrelid = 'vault.pii_vault_hashed'::regclass
                                   AND conname = 'pii_vault_hashed_blind_index_key') THEN
                     ALTER TABLE vault.pii_vault_hashed ADD CONSTRAINT pii_vault_hashed_blind_index_key
                         EXCLUDE USING hash (blind_index WITH =);
                 END IF;
             END $$;
             CREATE INDEX IF NOT EXISTS pii_vault_hashed_vaulted_order
                 ON vault.pii_vault_hashed (created_at, field, blind_index);
             CREATE INDEX IF NOT EXISTS pii_vault_hashed_key_version_idx ON vault.pii_vault_hashed (key_version);",
        )
        .await?;
    Ok(())
}

/// Step 2: every change to the old table made in the new one too, in the same
/// transaction. The function runs with its owner's rights (the writer, the service and the
/// expiry have none on the new table), on a fixed search path.
pub async fn mirror_changes(client: &tokio_postgres::Client) -> Result<(), Error> {
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION vault.pii_vault_mirror() RETURNS trigger
                 LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
             BEGIN
                 IF TG_OP IN ('UPDATE', 'DELETE') THEN
                     DELETE FROM vault.pii_vault_hashed h
                      WHERE h.blind_index = OLD.blind_index AND h.field = OLD.field;
                 END IF;
                 IF TG_OP IN ('INSERT', 'UPDATE') THEN
                     INSERT INTO vault.pii_vault_hashed VALUES (NEW.*) ON CONFLICT DO NOTHING;
                 END IF;
                 RETURN NULL;
             END $$;
             REVOKE ALL ON FUNCTION vault.pii_vault_mirror() FROM PUBLIC;",
        )
        .await?;
    lock_retried(
        client,
        "CREATE OR REPLACE TRIGGER pii_vault_mirror AFTER INSERT OR UPDATE OR DELETE ON vault.pii_vault
             FOR EACH ROW EXECUTE FUNCTION vault.pii_vault_mirror()",
    )
    .await
}

/// Step 3: the rows the old table held before the mirror, in key order from the start
/// (what an earlier run copied is met by ON CONFLICT); each statement its own transaction.
/// At the end, the table is marked copied: V18 swaps in an unmarked one (a copy broken off,
/// then V18 run by another tool) only after copying the rest under its lock.
pub async fn copy_rows(client: &tokio_postgres::Client) -> Result<(), Error> {
    let (mut field, mut index): (Option<String>, Option<String>) = (None, None);
    loop {
        let last = client
            .query_opt(
                "WITH source AS (
                     SELECT * FROM vault.pii_vault v
                      WHERE (v.field, v.blind_index) > (COALESCE($1, ''), COALESCE($2, ''))
                      ORDER BY v.field, v.blind_index
                      LIMIT $3
                        FOR SHARE
                 ), copied AS (
                     INSERT INTO vault.pii_vault_hashed SELECT * FROM source ON CONFLICT DO NOTHING
                 )
                 SELECT field, blind_index::text FROM source ORDER BY field DESC, blind_index DESC LIMIT 1",
                &[&field, &index, &COPY_ROWS],
            )
            .await?;
        match last {
            Some(row) => (field, index) = (Some(row.get(0)), Some(row.get(1))),
            // The mark V18 looks for: without it, V18 copies what is missing under its lock.
            None => {
                client.batch_execute("COMMENT ON TABLE vault.pii_vault_hashed IS 'every row copied'").await?;
                return Ok(());
            }
        }
    }
}
