//! How the function rides out an outage on the queue instead of in the dead-letter queue
//! (docs/operations.md, "The failure path"): a batch that cannot be written has its
//! messages hidden for a capped, exponentially growing time keyed on their receive count,
//! and after a failed connection an instance fails its next batches at once for a while.

use std::time::Duration;

use super::ConfigError;

/// SQS's limit on one message's visibility: 12 hours in all, counted from the receive. A
/// ChangeMessageVisibility asking for more than is left is refused, not shortened.
pub const SQS_MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// The longest hide that can never be refused: the function asks within its own timeout
/// plus the batching window of the receive (at most 15 + 5 minutes), so 30 minutes are kept
/// back from SQS's 12 hours.
pub const MAX_HIDE: Duration = Duration::from_secs(12 * 60 * 60 - 30 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutagePolicy {
    /// Hide after the first failed receive (`VISIBILITY_BACKOFF_BASE_SECONDS`).
    pub backoff_base: Duration,
    /// The cap (`VISIBILITY_BACKOFF_MAX_SECONDS`, at most [`MAX_HIDE`]).
    pub backoff_max: Duration,
    /// How long an instance fails batches at once after a connection failure
    /// (`DB_FAIL_FAST_MS`).
    pub fail_fast: Duration,
}

impl Default for OutagePolicy {
    /// The template's defaults: with `maxReceiveCount` 10, 44 h 15 min on the queue.
    fn default() -> Self {
        OutagePolicy {
            backoff_base: Duration::from_secs(300),
            backoff_max: MAX_HIDE,
            fail_fast: Duration::from_secs(5),
        }
    }
}

/// Long enough to skip a dead database's connect timeouts, short enough that a recovered
/// one is used within a minute.
pub const MAX_FAIL_FAST: Duration = Duration::from_secs(60);

impl OutagePolicy {
    /// How long to hide a message SQS has delivered `receive_count` times (1 = first):
    /// `min(max, base · 2^(receive_count − 1))`.
    pub fn hide_for(&self, receive_count: u32) -> Duration {
        let doublings = receive_count.saturating_sub(1).min(31);
        self.backoff_base.saturating_mul(1 << doublings).min(self.backoff_max)
    }

    /// The hidden time summed over `receives` receives: how long an outage the queue rides
    /// out before a message's last receive (the template lint checks the same sum).
    pub fn ride_out(&self, receives: u32) -> Duration {
        (1..=receives).map(|n| self.hide_for(n)).sum()
    }

    pub(super) fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<OutagePolicy, ConfigError> {
        let defaults = OutagePolicy::default();
        let seconds =
            |var: &'static str, default: Duration, max: Duration| -> Result<Duration, ConfigError> {
                match lookup(var) {
                    None => Ok(default),
                    Some(text) => text
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .map(Duration::from_secs)
                        .filter(|d| !d.is_zero() && *d <= max)
                        .ok_or_else(|| ConfigError::Malformed {
                            var,
                            reason: format!("expected whole seconds from 1 to {}", max.as_secs()),
                        }),
                }
            };
        let backoff_base = seconds("VISIBILITY_BACKOFF_BASE_SECONDS", defaults.backoff_base, MAX_HIDE)?;
        let backoff_max = seconds("VISIBILITY_BACKOFF_MAX_SECONDS", defaults.backoff_max, MAX_HIDE)?;
        if backoff_max < backoff_base {
            return Err(ConfigError::Malformed {
                var: "VISIBILITY_BACKOFF_MAX_SECONDS",
                reason: "must not be below VISIBILITY_BACKOFF_BASE_SECONDS".into(),
            });
        }
        let fail_fast = match lookup("DB_FAIL_FAST_MS") {
            None => defaults.fail_fast,
            Some(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .map(Duration::from_millis)
                .filter(|d| *d <= MAX_FAIL_FAST)
                .ok_or_else(|| ConfigError::Malformed {
                    var: "DB_FAIL_FAST_MS",
                    reason: format!("expected milliseconds from 0 to {}", MAX_FAIL_FAST.as_millis()),
                })?,
        };
        Ok(OutagePolicy { backoff_base, backoff_max, fail_fast })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_per_receive_up_to_the_cap_and_the_defaults_ride_out_a_day() {
        let policy = OutagePolicy::default();
        let hides: Vec<u64> = (1..=11).map(|n| policy.hide_for(n).as_secs()).collect();
        assert_eq!(hides, [300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 41400, 41400, 41400]);
        assert_eq!(policy.hide_for(0), policy.backoff_base);
        assert_eq!(policy.hide_for(u32::MAX), MAX_HIDE);
        assert!(MAX_HIDE < SQS_MAX_VISIBILITY);
        // The template's maxReceiveCount (10): 159,300 s (44 h 15 min), more than 24 h.
        assert_eq!(policy.ride_out(10).as_secs(), 159_300);
    }

    #[test]
    fn settings_outside_what_sqs_allows_are_refused_by_name() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let policy = OutagePolicy::from_lookup(&lookup(&[
            ("VISIBILITY_BACKOFF_BASE_SECONDS", "1"),
            ("VISIBILITY_BACKOFF_MAX_SECONDS", "4"),
        ]))
        .expect("valid");
        assert_eq!(policy.ride_out(4).as_secs(), 1 + 2 + 4 + 4);
        for (var, value) in [
            ("VISIBILITY_BACKOFF_MAX_SECONDS", "43200"),
            ("VISIBILITY_BACKOFF_BASE_SECONDS", "0"),
            ("VISIBILITY_BACKOFF_BASE_SECONDS", "-1"),
            ("DB_FAIL_FAST_MS", "600000"),
        ] {
            let error =
                OutagePolicy::from_lookup(&|name: &str| (name == var).then(|| value.to_owned())).unwrap_err();
            assert!(error.to_string().starts_with(&format!("{var} is malformed")), "{error}");
        }
        let error = OutagePolicy::from_lookup(&lookup(&[
            ("VISIBILITY_BACKOFF_BASE_SECONDS", "600"),
            ("VISIBILITY_BACKOFF_MAX_SECONDS", "60"),
        ]))
        .unwrap_err();
        assert!(error.to_string().starts_with("VISIBILITY_BACKOFF_MAX_SECONDS is malformed"), "{error}");
    }
}
