//! The schema: the numbered migrations of the repository's `sql/`, embedded at compile
//! time and applied by refinery (which keeps its version table, `refinery_schema_history`).
//! A crate of its own so that no deployed function links the schema's SQL: `migrate`, the
//! tests and the benchmark do.
#![forbid(unsafe_code)]

use std::time::Duration;

use postgres_protocol::escape::escape_identifier;
use tokio_postgres::error::SqlState;

mod embedded {
    refinery::embed_migrations!("../../sql");
}

/// The version that partitions `user_logins` (sql/V13__user_logins_partitioned.sql).
pub const PARTITIONED: i32 = 13;

/// The version that indexes the masks by hash (sql/V17__mask_hash_indexes.sql).
pub const MASK_HASH_INDEXES: i32 = 17;

/// The version that checks the vault's key through a hash index (sql/V18__vault_key_by_hash.sql).
pub const VAULT_KEY_BY_HASH: i32 = 18;

mod vault_key;
pub use vault_key::{copy_rows, create_table, mirror_changes, prepare_vault_key_by_hash};

/// The migrations that `migrate` prepares first on a database that holds data, outside
/// any transaction (a migration runs in one, where CREATE INDEX CONCURRENTLY cannot): what
/// each would otherwise build inside it, blocking the table's INSERTs for a scan.
#[derive(Clone, Copy, Debug)]
enum Preparation {
    /// [`prepare_partitioning`], before [`PARTITIONED`].
    Partitioning,
    /// [`prepare_mask_hash_indexes`], before [`MASK_HASH_INDEXES`].
    MaskHashIndexes,
    /// [`prepare_vault_key_by_hash`], before [`VAULT_KEY_BY_HASH`].
    VaultKeyByHash,
}

const PREPARATIONS: [(i32, Preparation); 3] = [
    (PARTITIONED, Preparation::Partitioning),
    (MASK_HASH_INDEXES, Preparation::MaskHashIndexes),
    (VAULT_KEY_BY_HASH, Preparation::VaultKeyByHash),
];

/// How often a migration that could not take a lock within its `lock_timeout` is tried
/// again (V13 waits at most 1 s for each lock, so that a long read holds ingest back for no
/// longer), and the pause between tries.
const LOCK_TRIES: u32 = 10;
const LOCK_PAUSE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("migration failed")]
    Migration(#[from] refinery::Error),
    #[error("preparing for a migration (version 13, 17 or 18) failed")]
    Prepare(#[from] tokio_postgres::Error),
}

/// Applies the pending migrations; running it again is a no-op. Returns the names applied.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<String>, Error> {
    migrate_until(client, None, true).await
}

/// Applies the pending migrations up to and including version `version` (a test builds
/// the database an earlier release left, fills it, then migrates the rest).
pub async fn migrate_to(client: &mut tokio_postgres::Client, version: i32) -> Result<Vec<String>, Error> {
    migrate_until(client, Some(version), true).await
}

/// As [`migrate_to`], without the preparations ([`prepare_partitioning`],
/// [`prepare_mask_hash_indexes`]): the migrations alone, as another tool would apply them.
/// V13 and V17 then build in their own transaction what the preparation builds
/// concurrently (blocking the table's INSERTs meanwhile: fine for a small table; tests
/// show they keep every row).
pub async fn migrate_to_unprepared(
    client: &mut tokio_postgres::Client,
    version: i32,
) -> Result<Vec<String>, Error> {
    migrate_until(client, Some(version), false).await
}

async fn migrate_until(
    client: &mut tokio_postgres::Client,
    version: Option<i32>,
    prepare: bool,
) -> Result<Vec<String>, Error> {
    let mut applied_now = Vec::new();
    // A new database has nothing to prepare: its migrations build on empty tables.
    if prepare && let Some(applied) = applied_version(client).await? {
        for (before, preparation) in PREPARATIONS {
            if applied < before && version.is_none_or(|v| v >= before) {
                applied_now.extend(run_migrations(client, Some(before - 1)).await?);
                match preparation {
                    Preparation::Partitioning => prepare_partitioning(client).await?,
                    Preparation::MaskHashIndexes => prepare_mask_hash_indexes(client).await?,
                    Preparation::VaultKeyByHash => prepare_vault_key_by_hash(client).await?,
                }
            }
        }
    }
    applied_now.extend(run_migrations(client, version).await?);
    Ok(applied_now)
}

/// The newest version applied, `None` on a database no migration has touched.
async fn applied_version(client: &mut tokio_postgres::Client) -> Result<Option<i32>, Error> {
    let has_history: bool = client
        .query_one("SELECT pg_catalog.to_regclass('refinery_schema_history') IS NOT NULL", &[])
        .await?
        .get(0);
    if !has_history {
        return Ok(None);
    }
    let last = embedded::migrations::runner().get_last_applied_migration_async(client).await?;
    Ok(last.map(|m| m.version()))
}

/// Applies the pending migrations up to `version` (all when `None`), trying again after a
/// lock timeout.
async fn run_migrations(
    client: &mut tokio_postgres::Client,
    version: Option<i32>,
) -> Result<Vec<String>, Error> {
    let mut tries = 0;
    loop {
        let mut runner = embedded::migrations::runner();
        if let Some(version) = version {
            runner = runner.set_target(refinery::Target::Version(version));
        }
        match runner.run_async(client).await {
            Ok(report) => {
                return Ok(report
                    .applied_migrations()
                    .iter()
                    .map(|m| format!("V{}__{}", m.version(), m.name()))
                    .collect());
            }
            Err(error) if tries + 1 < LOCK_TRIES && is_lock_timeout(&error) => {
                tries += 1;
                tokio::time::sleep(LOCK_PAUSE).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Whether a migration failed for a lock it did not get within its `lock_timeout`.
fn is_lock_timeout(error: &refinery::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(db) = e.downcast_ref::<tokio_postgres::Error>()
            && db.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Before V13, on a `login_data.user_logins` that is still a plain table: what V13 would
/// otherwise build inside its transaction (blocking the table's INSERTs for a scan of it)
/// is built here, outside any transaction, without blocking writes (the migration's header
/// says why): the key's unique index and the BRIN concurrently, and the CHECK that proves
/// every row fits the old table's partition added NOT VALID (a moment's lock, waited for at
/// most 1 s) then validated (SHARE UPDATE EXCLUSIVE: INSERTs go on). Idempotent; an invalid
/// index a broken earlier run left is dropped and built again.
pub async fn prepare_partitioning(client: &tokio_postgres::Client) -> Result<(), Error> {
    let plain = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass('login_data.user_logins')
                AND relkind = 'r'",
            &[],
        )
        .await?
        .is_some();
    if !plain {
        return Ok(());
    }
    let has_check = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_constraint
              WHERE conrelid = 'login_data.user_logins'::regclass AND conname = 'user_logins_legacy_range'",
            &[],
        )
        .await?
        .is_some();
    if !has_check {
        // The first day of the month after next: V13 makes the old table the partition of
        // every date before it. A month's margin: should V13 not follow at once (a read it
        // waited on), the table still takes next month's rows meanwhile.
        lock_retried(
            client,
            "DO $$ BEGIN
                 EXECUTE format('ALTER TABLE login_data.user_logins ADD CONSTRAINT user_logins_legacy_range
                     CHECK (sqs_message_id IS NOT NULL AND create_date IS NOT NULL AND create_date < %L::date)
                     NOT VALID', (date_trunc('month', current_date) + interval '2 months')::date);
             END $$",
        )
        .await?;
    }
    client
        .batch_execute("ALTER TABLE login_data.user_logins VALIDATE CONSTRAINT user_logins_legacy_range")
        .await?;
    for (name, definition) in [
        (
            "user_logins_legacy_key",
            "UNIQUE INDEX CONCURRENTLY user_logins_legacy_key ON login_data.user_logins (sqs_message_id, create_date)",
        ),
        (
            "user_logins_legacy_sent_at_brin",
            "INDEX CONCURRENTLY user_logins_legacy_sent_at_brin ON login_data.user_logins USING brin (sent_at)",
        ),
    ] {
        build_concurrently(client, name, &format!("CREATE {definition}")).await?;
    }
    Ok(())
}

/// Runs `sql` in a transaction of its own that waits at most 1 s for each lock (a batch in
/// flight, a person's read), tried again [`LOCK_TRIES`] times: no write waits behind it
/// longer than that.
async fn lock_retried(client: &tokio_postgres::Client, sql: &str) -> Result<(), Error> {
    let mut tries = 0;
    loop {
        match client.batch_execute(&format!("BEGIN; SET LOCAL lock_timeout = '1s'; {sql}; COMMIT;")).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                client.batch_execute("ROLLBACK").await?;
                if tries + 1 < LOCK_TRIES && error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                    tries += 1;
                    tokio::time::sleep(LOCK_PAUSE).await;
                    continue;
                }
                return Err(error.into());
            }
        }
    }
}

/// Builds the index `login_data.<name>` by `create` (a `CREATE … INDEX CONCURRENTLY`)
/// unless a valid one is there; an invalid one, which an interrupted concurrent build
/// leaves, is dropped first.
async fn build_concurrently(client: &tokio_postgres::Client, name: &str, create: &str) -> Result<(), Error> {
    let valid: Option<bool> = client
        .query_opt(
            "SELECT i.indisvalid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
              WHERE c.relnamespace = 'login_data'::regnamespace AND c.relname = $1",
            &[&name],
        )
        .await?
        .map(|row| row.get(0));
    match valid {
        Some(true) => return Ok(()),
        Some(false) => {
            client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY login_data.{}", escape_identifier(name)))
                .await?
        }
        None => {}
    }
    client.batch_execute(create).await?;
    Ok(())
}

/// Before V17, on a partitioned `login_data.user_logins`: each partition's hash indexes on
/// the masks, built CONCURRENTLY outside any transaction (INSERTs go on), named
/// `<partition>_masked_ip_hash` / `<partition>_masked_device_id_hash`; V17's CREATE INDEX
/// on the parent then attaches them instead of building them under its lock. Idempotent.
///
/// An index counts by what it is, not by its name: V17 attaches any index of a partition
/// that matches the parent's definition (hash on the one column, no predicate, expression,
/// operator class or collation of its own), valid or not, and builds one under its lock
/// where none matches. So a partition keeps a valid matching index whatever its name, an
/// invalid matching one (an interrupted build's, whatever its name: V17 would attach it
/// and leave the parent's index invalid) is dropped, and a partition without a valid match
/// gets one built even when its expected name is taken by something else (a B-tree, a
/// partial or another column's index, a table) or would exceed PostgreSQL's 63 bytes:
/// PostgreSQL then chooses the name. A partition pending detach (an interrupted
/// retention's) is left alone: V17 indexes it not, the retention drops it.
pub async fn prepare_mask_hash_indexes(client: &tokio_postgres::Client) -> Result<(), Error> {
    let partitions = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_inherits h
               JOIN pg_catalog.pg_class c ON c.oid = h.inhrelid
              WHERE h.inhparent = pg_catalog.to_regclass('login_data.user_logins') AND c.relkind = 'r'
                AND NOT h.inhdetachpending
              ORDER BY c.relname",
            &[],
        )
        .await?;
    for partition in partitions {
        let partition: String = partition.get(0);
        for column in ["masked_ip", "masked_device_id"] {
            prepare_hash_index(client, &partition, column).await?;
        }
    }
    Ok(())
}

/// PostgreSQL's longest identifier, in bytes (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// One partition's hash index on `column` (see [`prepare_mask_hash_indexes`]).
async fn prepare_hash_index(
    client: &tokio_postgres::Client,
    partition: &str,
    column: &str,
) -> Result<(), Error> {
    let table = format!("login_data.{}", escape_identifier(partition));
    // The partition's indexes that V17's would attach: pg_get_indexdef names the access
    // method, the column, and any expression, operator class, collation or predicate.
    let matching = client
        .query(
            "SELECT c.relname::text, i.indisvalid FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = $1::text::regclass
                AND pg_catalog.pg_get_indexdef(i.indexrelid)
                    = pg_catalog.format('CREATE INDEX %I ON login_data.%I USING hash (%I)', c.relname, $2::text, $3::text)
              ORDER BY i.indisvalid DESC, c.oid",
            &[&table, &partition, &column],
        )
        .await?;
    let mut valid = false;
    for row in &matching {
        let (name, is_valid): (String, bool) = (row.get(0), row.get(1));
        if is_valid {
            valid = true;
        } else {
            client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY login_data.{}", escape_identifier(&name)))
                .await?;
        }
    }
    if valid {
        return Ok(());
    }
    let name = format!("{partition}_{column}_hash");
    let taken = name.len() > MAX_IDENTIFIER_BYTES
        || client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_class
                  WHERE relnamespace = 'login_data'::regnamespace AND relname = $1",
                &[&name],
            )
            .await?
            .is_some();
    let named = if taken { String::new() } else { escape_identifier(&name) };
    client
        .batch_execute(&format!("CREATE INDEX CONCURRENTLY {named} ON {table} USING hash ({column})"))
        .await?;
    Ok(())
}
