//! Postgres for the function: the connection pool and the batch write ([`batch`]): login
//! rows, quarantined messages ([`quarantine`]) and vault values, in one transaction.

use crate::config::database::{CONNECT_TIMEOUT, Database};
use crate::config::tls::TlsError;
use crate::error::DbError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

pub mod batch;
pub mod erasure;
pub mod partitions;
pub mod quarantine;
pub mod retry;
pub mod table;
pub mod typed;

pub use batch::{LoginRow, PreparedBatch, VaultRow, WriteOutcome, write_batch};
pub use partitions::PartitionMap;
pub use quarantine::{QuarantineRow, Source};
pub use retry::RetryPolicy;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database")]
    Db(#[from] DbError),
    #[error("database pool")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("database pool setup")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("database TLS")]
    Tls(#[from] TlsError),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Db(DbError::from(error))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        // The pool's own message repeats its backend error; keep that one as the leaf.
        match error {
            deadpool_postgres::PoolError::Backend(db) => StoreError::Db(DbError::from(db)),
            other => StoreError::Pool(other),
        }
    }
}

/// Server-side bounds on every statement and lock wait of the function's transactions: a
/// database that is up but stuck (a long lock, a runaway plan) fails the batch well inside
/// the function's timeout, so the handler still has time to hide the batch on the queue.
/// (A database that answers nothing at all is bounded on the client: see `Function`.)
pub const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The bounds as the first statement of a transaction sets them (`SET LOCAL`: they end with
/// the transaction, so a pooled server connection carries nothing to its next client).
pub static TRANSACTION_LIMITS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}",
        STATEMENT_TIMEOUT.as_millis(),
        LOCK_TIMEOUT.as_millis()
    )
});

/// The pool of the ingest function, the vault service and the housekeeping jobs: its
/// connections secured as `database.tls` says, and nothing set on their sessions. Every
/// statement they send through it is free of session state (docs/operations.md,
/// "Connection poolers"): the unnamed statement (`query_typed`, `execute_typed`, with
/// [`typed`] parameters) or the simple protocol, inside a transaction begun by [`begin`],
/// which bounds it with [`TRANSACTION_LIMITS`]. So it works through a transaction-pooling
/// proxy (RDS Proxy, PgBouncer in transaction mode), where consecutive transactions of one
/// connection run on different server connections.
pub fn stateless_pool(database: Database, max_size: usize) -> Result<Pool, StoreError> {
    let connector = database.tls.connector()?;
    let manager = Manager::from_config(
        database.config,
        connector,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()?)
}

/// A transaction bounded by [`TRANSACTION_LIMITS`]: two round trips (BEGIN, the limits).
/// The batch write sends the limits pipelined with its first statement instead.
pub async fn begin(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    begin_bounded(client, &TRANSACTION_LIMITS).await
}

/// A transaction bounded by `limits` (`SET LOCAL …` statements), for work whose bounds
/// are tighter than [`TRANSACTION_LIMITS`] (the vault expiry's, which ingest waits on).
pub async fn begin_bounded<'a>(
    client: &'a mut deadpool_postgres::Client,
    limits: &str,
) -> Result<deadpool_postgres::Transaction<'a>, StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(limits).await?;
    Ok(tx)
}
