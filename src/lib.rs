//! login-etl: SQS login events → blind-indexed masks in `user_logins`, original PII in
//! an encrypted, audited vault.
//!
//! - [`login`], [`app_version`]: parsing and validation of a message body
//! - [`masking`]: blind indexes (HMAC-SHA256) for `masked_ip` / `masked_device_id`
//! - [`vault`]: AES-256-GCM-SIV sealing of the original values
//! - [`keys`]: KMS envelope keys, created once, unwrapped per cold start
//! - [`store`]: Postgres pool, migrations, set-based batch writes
//! - [`handler`]: one SQS batch → rows + batch item failures
//! - [`staff`]: the `pii-vault` staff tool's operations (find, reveal, forget, audit, rotation)
//! - [`esm`]: a local SQS event source mapping around the same handler (`esm-local`)
//! - [`app`], [`config`], [`secrets`], [`telemetry`]: init-time resources, settings, JSON logs

pub mod app;
pub mod app_version;
pub mod config;
pub mod esm;
pub mod handler;
pub mod keys;
pub mod login;
pub mod masking;
pub mod secrets;
pub mod staff;
pub mod store;
pub mod telemetry;
pub mod vault;

pub use app::App;
