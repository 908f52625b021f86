//! login-etl's scheduled jobs. Each runs as a Lambda function of its own, on a schedule,
//! with its own role and database login, and never through the vault service (a direct
//! invoke of the service could carry any identity in its event).
//!
//! - [`purge`]: quarantined bodies erased past `QUARANTINE_RETENTION_DAYS`
//! - [`partitions`]: `user_logins`'s partitions (a month or a day each) made ahead (and back)
#![forbid(unsafe_code)]

pub mod partitions;
pub mod purge;
