//! Postgres for the function: the connection pool and the batch write ([`batch`]).

use crate::config::database::{CONNECT_TIMEOUT, Database};
use crate::config::tls::TlsError;
use crate::error::DbError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

pub mod batch;
pub mod retry;
pub mod table;

pub use batch::{LoginLoad, LoginRow, PreparedBatch, VaultRow, WriteOutcome, login_load, write_batch};
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

/// The pool, its connections secured as `database.tls` says.
pub fn pool(database: Database, max_size: usize) -> Result<Pool, StoreError> {
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
