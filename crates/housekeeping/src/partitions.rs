//! `partition-maintenance`: makes `user_logins`'s monthly partitions for every date a
//! message can still carry, from `PARTITION_DAYS_BACK` days back to
//! `PARTITION_MONTHS_AHEAD` months ahead ([`login_etl_core::store::partitions::ensure`],
//! the one code path that makes them: `migrate` and the tests call it too). Its database
//! login (in `login_etl_partition_maintainer`) acts as `user_logins`'s owner and has no
//! right on any other table. Idempotent, and no step waits more than
//! [`partitions::DDL_LOCK_TIMEOUT`] for a lock (so holds ingest back no longer).
//!
//! Steps to come (retention: dropping the partitions older than a setting) are further
//! steps of [`run`], each under the same lock bound.

use chrono::NaiveDate;
use login_etl_core::config::ConfigError;
use login_etl_core::store::StoreError;
use login_etl_core::store::partitions::{self, Maintenance, Window};

pub use login_etl_core::store::partitions::{DEFAULT_DAYS_BACK, DEFAULT_MONTHS_AHEAD};

/// The maintenance's settings, read once at start (a bad one stops the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub days_back: u32,
    pub months_ahead: u32,
}

impl Settings {
    /// From `PARTITION_DAYS_BACK` and `PARTITION_MONTHS_AHEAD` as `var` reads them.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        Ok(Settings {
            days_back: partitions::days_back(var("PARTITION_DAYS_BACK").as_deref())?,
            months_ahead: partitions::months_ahead(var("PARTITION_MONTHS_AHEAD").as_deref())?,
        })
    }

    /// The months that must have a partition on `today`.
    pub fn window(&self, today: NaiveDate) -> Window {
        Window::around(today, self.days_back, self.months_ahead)
    }
}

/// One run: every missing partition of the window made.
pub async fn run(
    client: &mut tokio_postgres::Client,
    settings: Settings,
    today: NaiveDate,
) -> Result<Maintenance, StoreError> {
    partitions::ensure(client, settings.window(today)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_refuse_what_is_not_a_bounded_whole_number() {
        let none = Settings::from_vars(|_| None).expect("defaults");
        assert_eq!(none, Settings { days_back: DEFAULT_DAYS_BACK, months_ahead: DEFAULT_MONTHS_AHEAD });
        for (var, bad) in [
            ("PARTITION_DAYS_BACK", "-1"),
            ("PARTITION_DAYS_BACK", "3651"),
            ("PARTITION_MONTHS_AHEAD", "25"),
            ("PARTITION_MONTHS_AHEAD", "two"),
        ] {
            let error = Settings::from_vars(|name| (name == var).then(|| bad.to_owned())).expect_err(bad);
            assert!(error.to_string().starts_with(&format!("{var} is malformed")), "{error}");
        }
    }
}
