//! login-etl, the ingest function: an SQS batch of login events → masked rows in
//! `user_logins` and sealed values in `pii_vault`, in one transaction.
//!
//! - [`app`]: the resources built once per cold start (pool, keys)
//! - [`handler`]: one SQS batch → rows written + item failures
//!
//! Everything else is in `login-etl-core`. This crate links no code that reads the vault
//! or the audit (`make check-layers` checks the built binary).
#![forbid(unsafe_code)]

pub mod app;
pub mod handler;

pub use app::App;
