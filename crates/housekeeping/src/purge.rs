//! `quarantine-purge`: erases the quarantined bodies older than the retention, in bounded
//! statements until none is left or the invocation's time is nearly spent. Its database
//! login (`login_etl_quarantine_purge`) can read only the quarantine's keys and dates and
//! write only the columns that erase.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use login_etl_core::store::{StoreError, quarantine};

/// The retention's default, bound and parsing are the quarantine's own (the vault
/// service's `pii-vault quarantine purge` reads the same setting).
pub use login_etl_core::store::quarantine::{DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS, retention_days};
/// Rows erased per statement: each statement's locks stay short.
pub const ROWS_PER_STATEMENT: u32 = 1000;

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeOutcome {
    pub erased: u64,
    /// Whether the run stopped for time with rows possibly left (the next run goes on).
    pub stopped_for_time: bool,
}

/// Erases expired bodies until none is left or `budget` is spent.
pub async fn run(pool: &Pool, retention_days: u32, budget: Duration) -> Result<PurgeOutcome, StoreError> {
    let started = Instant::now();
    let mut client = pool.get().await?;
    let mut outcome = PurgeOutcome::default();
    loop {
        let erased = quarantine::purge_expired(&mut client, retention_days, ROWS_PER_STATEMENT).await?;
        outcome.erased += erased;
        if erased < u64::from(ROWS_PER_STATEMENT) {
            return Ok(outcome);
        }
        if started.elapsed() >= budget {
            outcome.stopped_for_time = true;
            return Ok(outcome);
        }
    }
}
