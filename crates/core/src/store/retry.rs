//! Bounded retry of a batch write inside one invocation, for the database errors that are
//! safe to retry: a deadlock (40P01), a serialization failure (40001), a lock wait past
//! `lock_timeout` (55P03), and a connection
//! lost or refused before the commit was acknowledged (class 08, 57P01-57P03, I/O). The
//! write is one transaction of idempotent inserts (`ON CONFLICT DO NOTHING` on the message
//! id and the vault key), so running it again never adds a row twice, even when the lost
//! connection had in fact committed. Anything else fails at once.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use super::StoreError;

/// How often and how long to retry. The whole budget stays well inside the function's
/// timeout (10 s at the least in `template.yaml`), so a batch that cannot be written still
/// fails as an invocation error and SQS redelivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff's upper bound; it doubles per retry up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(800),
            budget: crate::config::DEFAULT_RETRY_BUDGET,
        }
    }
}

impl RetryPolicy {
    /// No retry at all.
    pub const NEVER: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        budget: Duration::ZERO,
    };

    /// The policy with the given total budget (`DB_RETRY_BUDGET_MS`; 0 turns retry off).
    pub fn with_budget(budget: Duration) -> RetryPolicy {
        if budget.is_zero() { RetryPolicy::NEVER } else { RetryPolicy { budget, ..RetryPolicy::default() } }
    }

    pub(super) fn start(&self) -> Attempts {
        Attempts { policy: *self, started: Instant::now(), retries: 0 }
    }
}

/// The retries of one write.
pub(super) struct Attempts {
    policy: RetryPolicy,
    started: Instant,
    retries: u32,
}

impl Attempts {
    pub(super) fn retries(&self) -> u32 {
        self.retries
    }

    /// After a failed attempt: how long to wait before the next, or `None` to give up.
    /// Full jitter (a random wait up to the exponential bound), so invocations that
    /// collided do not collide again in step.
    pub(super) fn backoff(&mut self, error: &StoreError) -> Option<(String, Duration)> {
        let cause = transient_cause(error)?;
        if self.retries + 1 >= self.policy.max_attempts {
            return None;
        }
        let bound =
            self.policy.base_delay.saturating_mul(1 << self.retries.min(16)).min(self.policy.max_delay);
        let delay = bound.mul_f64(rand::random::<f64>());
        if self.started.elapsed() + delay >= self.policy.budget {
            return None;
        }
        self.retries += 1;
        Some((cause, delay))
    }
}

/// The SQLSTATE (or `connection_lost`) of an error that is safe to retry.
pub fn transient_cause(error: &StoreError) -> Option<String> {
    let StoreError::Db(db) = error else { return None };
    match db.code() {
        Some(code) => {
            (TRANSIENT_STATES.contains(code) || code.code().starts_with("08")).then(|| code.code().to_owned())
        }
        // No answer from the server: the connection broke or could not be made.
        None => {
            db.postgres().is_some_and(|e| e.is_closed() || io_cause(e)).then(|| "connection_lost".to_owned())
        }
    }
}

/// Whether the error says the database could not be reached (no connection, or a lost
/// one), as opposed to one statement failing on a live connection.
pub fn is_unreachable(error: &StoreError) -> bool {
    match error {
        StoreError::Pool(_) => true,
        StoreError::Db(_) => transient_cause(error).is_some_and(|cause| {
            cause == "connection_lost" || cause.starts_with("08") || cause.starts_with("57P0")
        }),
        StoreError::Build(_) | StoreError::Tls(_) => false,
    }
}

const TRANSIENT_STATES: [SqlState; 6] = [
    SqlState::T_R_DEADLOCK_DETECTED,
    // lock_timeout: another transaction held a row or table lock too long.
    SqlState::LOCK_NOT_AVAILABLE,
    SqlState::T_R_SERIALIZATION_FAILURE,
    SqlState::ADMIN_SHUTDOWN,
    SqlState::CRASH_SHUTDOWN,
    SqlState::CANNOT_CONNECT_NOW,
];

fn io_cause(error: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if inner.is::<std::io::Error>() {
            return true;
        }
        source = inner.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_can_be_turned_off_and_the_budget_is_kept() {
        assert_eq!(RetryPolicy::with_budget(Duration::ZERO), RetryPolicy::NEVER);
        let policy = RetryPolicy::with_budget(Duration::from_millis(1500));
        assert_eq!(policy.budget, Duration::from_millis(1500));
        assert!(policy.max_attempts > 1);
    }
}
