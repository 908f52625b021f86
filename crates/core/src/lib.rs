//! login-etl's core, linked by every binary: what a login is, how its PII is masked and
//! sealed, where the keys come from, and how rows reach Postgres. Nothing here reads the
//! vault (`pii_vault`) or the audit: only the vault service does.
//!
//! The modules, each depending only on those above it:
//!
//! - [`error`]: the one error convention and the chain printer; [`metrics`]: CloudWatch
//!   Embedded Metric Format lines; [`telemetry`]: JSON logs
//! - [`event`]: a message body → a valid [`event::LoginEvent`] or a reason code (pure)
//! - [`crypto`]: blind indexes and the vault's cipher over given key material (pure)
//! - [`config`]: settings, the Secrets Manager secret, the one connect helper
//! - [`keys`]: KMS envelope keys and all `pii_keys` SQL → crypto
//! - [`store`]: the pool, the `user_logins` table description and the batch write → crypto
#![forbid(unsafe_code)]

pub mod config;
pub mod crypto;
pub mod error;
pub mod event;
pub mod keys;
pub mod metrics;
pub mod replay;
pub mod store;
pub mod telemetry;
