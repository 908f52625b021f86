//! The function's resources once they are ready: the connection pool and the unwrapped
//! keys. Built on the first batch that can reach the database and KMS (see
//! [`crate::function`]), then reused by every batch of that instance.

use std::sync::{Arc, RwLock};

use deadpool_postgres::Pool;

use login_etl_core::config::{Config, ConfigError};
use login_etl_core::keys::{self, KeyError, Keyring, Kms};
use login_etl_core::store::{self, PartitionMap, RetryPolicy, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("configuration")]
    Config(#[from] ConfigError),
    #[error("database unreachable at init")]
    Database(#[from] StoreError),
    #[error("keys")]
    Keys(#[from] KeyError),
}

#[derive(Debug)]
pub struct App {
    pub pool: Pool,
    pub keyring: Keyring,
    pub retry: RetryPolicy,
    /// The replay queue's ARN: only its records' replay attributes are honoured.
    pub replay_queue: Option<String>,
    /// `user_logins`'s partitions as last read: read at init, and again when a batch
    /// carries a date it does not cover (the maintenance made a month since) or a write
    /// met a partition gone. A message no partition takes is quarantined (`no_partition`).
    pub partitions: RwLock<Arc<PartitionMap>>,
}

impl App {
    /// Connects, then loads the keys (created beforehand by `pii-vault admin init-keys`):
    /// one KMS call per key and one to resolve the configured key, none later.
    pub async fn init(config: &Config, kms: &Kms) -> Result<App, InitError> {
        let pool = store::stateless_pool(config.database.clone(), config.pool_size)?;
        // The reads in one bounded transaction (the pool sets nothing on its sessions),
        // ended before the KMS calls: a pooled server connection is not held meanwhile.
        let mut client = pool.get().await.map_err(StoreError::from)?;
        let tx = store::begin(&mut client).await?;
        let stored = keys::latest_wrapped_keys(&*tx).await?;
        let partitions = PartitionMap::load(&*tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        drop(client);
        let keyring = keys::unwrap_keyring(&stored, kms).await?;
        Ok(App {
            pool,
            keyring,
            retry: RetryPolicy::with_budget(config.retry_budget),
            replay_queue: config.replay_queue_arn.clone(),
            partitions: RwLock::new(Arc::new(partitions)),
        })
    }

    /// The partitions as last read.
    pub fn partitions(&self) -> Arc<PartitionMap> {
        Arc::clone(&self.partitions.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Reads the partitions again (one catalog query in a bounded transaction).
    pub async fn refresh_partitions(&self) -> Result<Arc<PartitionMap>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = store::begin(&mut client).await?;
        let map = Arc::new(PartitionMap::load(&*tx).await?);
        tx.commit().await?;
        *self.partitions.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&map);
        tracing::info!(partitions = map.partitions().len(), "user_logins partitions read again");
        Ok(map)
    }
}
