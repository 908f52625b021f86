//! The schema: the numbered migrations of the repository's `sql/`, embedded at compile
//! time and applied by refinery (which keeps its version table, `refinery_schema_history`).
//! A crate of its own so that no deployed function links the schema's SQL: `migrate`, the
//! tests and the benchmark do.
#![forbid(unsafe_code)]

use std::time::Duration;

use tokio_postgres::error::SqlState;

mod embedded {
    refinery::embed_migrations!("../../sql");
}

/// The version that partitions `user_logins` (sql/V13__user_logins_partitioned.sql).
pub const PARTITIONED: i32 = 13;

/// How often a migration that could not take a lock within its `lock_timeout` is tried
/// again (V13 waits at most 1 s for each lock, so that a long read holds ingest back for no
/// longer), and the pause between tries.
const LOCK_TRIES: u32 = 10;
const LOCK_PAUSE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("migration failed")]
    Migration(#[from] refinery::Error),
    #[error("preparing user_logins for partitioning (before version 13) failed")]
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

/// As [`migrate_to`], without [`prepare_partitioning`] first: the migrations alone, as
/// another tool would apply them. V13 then builds in its own transaction what the
/// preparation builds concurrently (blocking the old table's INSERTs meanwhile: fine for
/// a small table; a test shows it keeps every row).
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
    if prepare && version.is_none_or(|v| v >= PARTITIONED) {
        prepare_partitioning(client).await?;
    }
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
        let mut tries = 0;
        loop {
            // The first day of the month after next: V13 makes the old table the partition
            // of every date before it. A month's margin: should V13 not follow at once (a
            // read it waited on), the table still takes next month's rows meanwhile.
            let added = client
                .batch_execute(
                    "BEGIN;
                     SET LOCAL lock_timeout = '1s';
                     DO $$ BEGIN
                         EXECUTE format('ALTER TABLE login_data.user_logins ADD CONSTRAINT user_logins_legacy_range
                             CHECK (sqs_message_id IS NOT NULL AND create_date IS NOT NULL AND create_date < %L::date)
                             NOT VALID', (date_trunc('month', current_date) + interval '2 months')::date);
                     END $$;
                     COMMIT;",
                )
                .await;
            match added {
                Ok(()) => break,
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
        let valid: Option<bool> = client
            .query_opt(
                "SELECT i.indisvalid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
                  WHERE i.indrelid = 'login_data.user_logins'::regclass AND c.relname = $1",
                &[&name],
            )
            .await?
            .map(|row| row.get(0));
        match valid {
            Some(true) => continue,
            Some(false) => {
                client.batch_execute(&format!("DROP INDEX CONCURRENTLY login_data.{name}")).await?
            }
            None => {}
        }
        client.batch_execute(&format!("CREATE {definition}")).await?;
    }
    Ok(())
}
