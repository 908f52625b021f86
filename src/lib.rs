//! login-etl, the ingest function: an SQS batch of login events → masked rows in
//! `user_logins`, sealed values in `pii_vault` and sealed rejected messages in
//! `login_quarantine`, in one transaction.
//!
//! - [`function`]: the instance's lifetime: configuration at init, resources on the first
//!   batch that reaches them, and the failure path (hide the batch on the queue, fail fast)
//! - [`app`]: the resources once ready (pool, keys)
//! - [`handler`]: one SQS batch → rows written, rejected messages quarantined
//!
//! Everything else is in `login-etl-core`. This crate links no code that reads the vault
//! or the audit (`make check-layers` checks the built binary).
#![forbid(unsafe_code)]

pub mod app;
pub mod function;
pub mod handler;

pub use app::App;
pub use function::Function;
