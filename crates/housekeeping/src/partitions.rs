//! `partition-maintenance`: makes `user_logins`'s partitions (a month each, or a day each:
//! `PARTITION_INTERVAL`) for every date a message can still carry, from
//! `PARTITION_DAYS_BACK` days back to `PARTITION_MONTHS_AHEAD` months ahead
//! ([`login_etl_core::store::partitions::ensure`], the one code path that makes them:
//! `migrate` and the tests call it too). Its database
//! login (in `login_etl_partition_maintainer`) acts as `user_logins`'s owner and has no
//! right on any other table. Then, with `USER_LOGINS_RETENTION_MONTHS` set, drops the
//! partitions older than that ([`partitions::expire`]). Idempotent, and no step waits more
//! than [`partitions::DDL_LOCK_TIMEOUT`] for a lock (so holds ingest back no longer).
//!
//! Settings that would leave a date a message can still carry without a partition are
//! refused at start ([`Settings::from_vars`]).

use chrono::NaiveDate;
use login_etl_core::config::ConfigError;
use login_etl_core::store::StoreError;
use login_etl_core::store::partitions::{self, AwaitClose, Cancel, Interval, Maintenance, Window};
use login_etl_core::store::quarantine;
use tokio_postgres::tls::MakeTlsConnect;

pub use login_etl_core::store::partitions::{DEFAULT_DAYS_BACK, DEFAULT_MONTHS_AHEAD};

/// The maintenance's settings, read once at start (a bad one stops the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub days_back: u32,
    pub months_ahead: u32,
    /// A partition per month or per day.
    pub interval: Interval,
    /// Months of `user_logins` kept (`None`: every month, forever).
    pub retention_months: Option<u32>,
}

impl Settings {
    /// From `PARTITION_DAYS_BACK`, `PARTITION_MONTHS_AHEAD`, `PARTITION_INTERVAL`,
    /// `USER_LOGINS_RETENTION_MONTHS` and `QUARANTINE_RETENTION_DAYS` as `var` reads them.
    /// Refused: days back shorter than the oldest date a message can still carry, and a
    /// retention that would drop months inside the days back.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let settings = Settings {
            days_back: partitions::days_back(var("PARTITION_DAYS_BACK").as_deref())?,
            months_ahead: partitions::months_ahead(var("PARTITION_MONTHS_AHEAD").as_deref())?,
            interval: Interval::from_setting(var("PARTITION_INTERVAL").as_deref())?,
            retention_months: partitions::retention_months(var("USER_LOGINS_RETENTION_MONTHS").as_deref())?,
        };
        let quarantine_days = quarantine::retention_days(var("QUARANTINE_RETENTION_DAYS").as_deref())?;
        let reachable = partitions::oldest_reachable_days(quarantine_days);
        if settings.days_back < reachable {
            return Err(ConfigError::Malformed {
                var: "PARTITION_DAYS_BACK",
                reason: format!(
                    "{} days is shorter than the oldest date a message can still carry: {reachable} days \
                     ({} on login-queue + {} in its dead-letter queue + QUARANTINE_RETENTION_DAYS {quarantine_days} \
                     + {} on the replay queue)",
                    settings.days_back,
                    partitions::LOGIN_QUEUE_DAYS,
                    partitions::DEAD_LETTER_QUEUE_DAYS,
                    partitions::REPLAY_QUEUE_DAYS,
                ),
            });
        }
        let least = partitions::least_retention_months(settings.days_back);
        if let Some(months) = settings.retention_months.filter(|months| *months < least) {
            return Err(ConfigError::Malformed {
                var: "USER_LOGINS_RETENTION_MONTHS",
                reason: format!(
                    "{months} months would drop months inside PARTITION_DAYS_BACK ({} days), where messages \
                     can still be dated; at least {least}",
                    settings.days_back
                ),
            });
        }
        Ok(settings)
    }

    /// The first date kept on `today` (`None`: every date).
    pub fn cutoff(&self, today: NaiveDate) -> Option<NaiveDate> {
        // Never into the window, whatever the month's length (from_vars refused it anyway).
        self.retention_months
            .map(|months| partitions::retention_cutoff(today, months).min(self.window(today).from))
    }

    /// The months that must have a partition on `today`.
    pub fn window(&self, today: NaiveDate) -> Window {
        Window::around(today, self.days_back, self.months_ahead)
    }
}

/// One run: every missing partition of the window made, then every partition past the
/// retention dropped. A partition whose name a stray table holds is left out
/// ([`Maintenance::blocked`]) and the rest goes on: the caller reports it. `cancel`: where the cancel requests go that bound a DETACH.
pub async fn run<T>(
    client: &mut tokio_postgres::Client,
    cancel: &Cancel<T>,
    settings: Settings,
    today: NaiveDate,
) -> Result<Maintenance, StoreError>
where
    T: MakeTlsConnect<AwaitClose> + Clone,
    T::Stream: Send,
{
    let mut outcome = partitions::ensure(client, settings.window(today), settings.interval).await?;
    let expired = partitions::expire(client, cancel, settings.cutoff(today)).await?;
    outcome.dropped = expired.dropped;
    outcome.lock_timeouts += expired.lock_timeouts;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_refuse_what_is_not_a_bounded_whole_number() {
        let none = Settings::from_vars(|_| None).expect("defaults");
        assert_eq!(
            none,
            Settings {
                days_back: DEFAULT_DAYS_BACK,
                months_ahead: DEFAULT_MONTHS_AHEAD,
                interval: Interval::Month,
                retention_months: None
            }
        );
        let blank =
            Settings::from_vars(|name| (name == "USER_LOGINS_RETENTION_MONTHS").then(|| " ".to_owned()));
        assert_eq!(blank.expect("blank: forever").retention_months, None);
        for (var, bad) in [
            ("PARTITION_DAYS_BACK", "-1"),
            ("PARTITION_DAYS_BACK", "3651"),
            ("PARTITION_MONTHS_AHEAD", "25"),
            ("PARTITION_MONTHS_AHEAD", "two"),
            ("PARTITION_INTERVAL", "week"),
            ("USER_LOGINS_RETENTION_MONTHS", "0"),
            ("USER_LOGINS_RETENTION_MONTHS", "-3"),
            ("USER_LOGINS_RETENTION_MONTHS", "1201"),
            ("USER_LOGINS_RETENTION_MONTHS", "1.5"),
            ("USER_LOGINS_RETENTION_MONTHS", "twelve"),
            ("USER_LOGINS_RETENTION_MONTHS", "99999999999999999999"),
            ("QUARANTINE_RETENTION_DAYS", "0"),
        ] {
            let error = Settings::from_vars(|name| (name == var).then(|| bad.to_owned())).expect_err(bad);
            assert!(error.to_string().starts_with(&format!("{var} is malformed")), "{error}");
        }
    }

    fn with(vars: &'static [(&'static str, &'static str)]) -> Result<Settings, ConfigError> {
        Settings::from_vars(|name| {
            vars.iter().find(|(var, _)| *var == name).map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn days_back_shorter_than_the_oldest_date_a_message_can_carry_is_refused() {
        // 7 + 14 + 14 + 7 = 42 with the default quarantine retention.
        assert_eq!(with(&[("PARTITION_DAYS_BACK", "42")]).expect("42").days_back, 42);
        let error = with(&[("PARTITION_DAYS_BACK", "41")]).expect_err("41 < 42").to_string();
        assert!(error.starts_with("PARTITION_DAYS_BACK is malformed: 41 days is shorter"), "{error}");
        assert!(error.contains("42 days") && error.contains("QUARANTINE_RETENTION_DAYS 14"), "{error}");
        // A longer quarantine needs more days back: the default 60 no longer covers 40 + 28.
        let error = with(&[("QUARANTINE_RETENTION_DAYS", "40")]).expect_err("60 < 68").to_string();
        assert!(error.contains("68 days"), "{error}");
        assert!(with(&[("QUARANTINE_RETENTION_DAYS", "40"), ("PARTITION_DAYS_BACK", "68")]).is_ok());
    }

    #[test]
    fn a_retention_reaching_into_the_days_back_is_refused() {
        // 60 days back: up to 3 month starts back (months of 28 days and more).
        assert_eq!(partitions::least_retention_months(60), 3);
        assert_eq!(with(&[("USER_LOGINS_RETENTION_MONTHS", "3")]).expect("3").retention_months, Some(3));
        let error = with(&[("USER_LOGINS_RETENTION_MONTHS", "2")]).expect_err("2 < 3").to_string();
        assert!(
            error.starts_with("USER_LOGINS_RETENTION_MONTHS is malformed: 2 months would drop months inside PARTITION_DAYS_BACK (60 days)"),
            "{error}"
        );
        assert!(with(&[("USER_LOGINS_RETENTION_MONTHS", "12"), ("PARTITION_DAYS_BACK", "400")]).is_err());
        assert!(with(&[("USER_LOGINS_RETENTION_MONTHS", "15"), ("PARTITION_DAYS_BACK", "400")]).is_ok());
    }

    /// The rule from_vars applies holds on every day: the cutoff never passes the window's
    /// first month, for every days back up to three years.
    #[test]
    fn the_least_retention_never_cuts_into_the_window_on_any_day() {
        let mut today: NaiveDate = "2023-01-01".parse().expect("date");
        while today < "2029-01-01".parse().expect("date") {
            for days_back in (0..1100).step_by(7).chain([28, 29, 30, 31, 56, 59, 60, 61, 62]) {
                let settings = Settings {
                    days_back,
                    months_ahead: 2,
                    interval: Interval::Day,
                    retention_months: Some(partitions::least_retention_months(days_back)),
                };
                let cutoff =
                    partitions::retention_cutoff(today, partitions::least_retention_months(days_back));
                assert!(cutoff <= settings.window(today).from, "{today} {days_back}: {cutoff}");
                assert_eq!(settings.cutoff(today), Some(cutoff));
            }
            today = today.succ_opt().expect("day");
        }
        let forever =
            Settings { days_back: 60, months_ahead: 2, interval: Interval::Month, retention_months: None };
        assert_eq!(forever.cutoff("2026-12-06".parse().expect("date")), None);
    }
}
