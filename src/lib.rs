//! login-etl: SQS login events → blind-indexed masks in `user_logins`, original PII in
//! an encrypted, audited vault.
//!
//! The modules, each depending only on those above it:
//!
//! - [`error`]: the one error convention and the chain printer; [`metrics`]: CloudWatch
//!   Embedded Metric Format lines; [`telemetry`]: JSON logs
//! - [`event`]: a message body → a valid [`event::LoginEvent`] or a reason code (pure)
//! - [`crypto`]: blind indexes and the vault's cipher over given key material (pure)
//! - [`config`]: settings, the Secrets Manager secret, the one connect helper
//! - [`keys`]: KMS envelope keys and all `pii_keys` SQL → crypto
//! - [`store`]: the function's pool, migrations and batch write → crypto
//! - [`app`], [`handler`]: init-time resources; one SQS batch → rows + item failures
//! - [`esm`]: a local SQS event source mapping around the same handler (`esm-local`)
//! - [`vault_service`]: find, reveal, forget, audit and key administration, each audited
//!   first (`pii-vault-service`, behind a function URL); [`vault_client`]: `pii-vault`'s
//!   SigV4-signed client
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod crypto;
pub mod error;
pub mod esm;
pub mod event;
pub mod handler;
pub mod keys;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod vault_client;
pub mod vault_service;

pub use app::App;
