//! `quarantine-purge`: erases the quarantined bodies older than the retention, in bounded
//! statements until none is left or the invocation's time is nearly spent. Its database
//! login (`login_etl_quarantine_purge`) can read only the quarantine's keys and dates and
//! write only the columns that erase.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use login_etl_core::config::ConfigError;
use login_etl_core::store::{StoreError, quarantine};

/// How long a quarantined body is kept when `QUARANTINE_RETENTION_DAYS` is not set: the
/// dead-letter queue's own retention.
pub const DEFAULT_RETENTION_DAYS: u32 = 14;
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Rows erased per statement: each statement's locks stay short.
pub const ROWS_PER_STATEMENT: u32 = 1000;

/// `QUARANTINE_RETENTION_DAYS` (1 to 3650; unset: 14).
pub fn retention_days(value: Option<&str>) -> Result<u32, ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_RETENTION_DAYS),
        Some(text) => text.parse().ok().filter(|d| (1..=MAX_RETENTION_DAYS).contains(d)).ok_or_else(|| {
            ConfigError::Malformed {
                var: "QUARANTINE_RETENTION_DAYS",
                reason: format!("expected whole days from 1 to {MAX_RETENTION_DAYS}"),
            }
        }),
    }
}

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
    let client = pool.get().await?;
    let mut outcome = PurgeOutcome::default();
    loop {
        let erased = quarantine::purge_expired(&client, retention_days, ROWS_PER_STATEMENT).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retention_is_whole_days_in_range() {
        assert_eq!(retention_days(None), Ok(14));
        assert_eq!(retention_days(Some(" 30 ")), Ok(30));
        for bad in ["0", "-1", "3651", "two weeks", "1.5"] {
            let error = retention_days(Some(bad)).unwrap_err();
            assert!(
                error.to_string().starts_with("QUARANTINE_RETENTION_DAYS is malformed"),
                "{bad}: {error}"
            );
        }
    }
}
