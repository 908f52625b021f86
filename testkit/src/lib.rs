//! Test support for login-etl's integration tests, one module per concern:
//!
//! - `db`: a database of its own per test (created from `DATABASE_URL`, migrated, dropped
//!   afterwards), logins in the schema's roles, faults injected by trigger;
//! - `aws`: a KMS key and SQS queues of its own per test on the moto server at
//!   `AWS_ENDPOINT_URL`;
//! - `events`: SQS events and login bodies;
//! - `vault`: the keys, a cold start, the vault service in process and its callers;
//! - `lambda`: a function binary run as Lambda runs it (cargo-lambda's runtime API);
//! - `tls`: a throwaway TLS-only PostgreSQL;
//! - `pgbouncer`: a throwaway PgBouncer in transaction mode in front of a test database;
//! - `logs`: log capture.
//!
//! `make test` provides the stack. A crate of its own so that every test binary shares it.
#![forbid(unsafe_code)]

mod aws;
mod db;
mod events;
mod https;
mod lambda;
mod logs;
mod outage;
mod pgbouncer;
mod tls;
mod vault;

pub use aws::{TestQueues, aws_endpoint, new_kms, sdk_config};
pub use db::{
    TestDb, assert_refused_for_rights, connect, quarantine_masks, quarantined_ids, test_window, url_of,
};
pub use events::{
    FIRST_SENT_MS, event, event_sent_at, failed_ids, load_event, login_body, many_logins,
    rejected_login_body, sample_messages,
};
pub use https::{Answer, HostileEndpoint};
pub use lambda::{LocalLambda, LocalVaultService, free_port, workspace_binary};
pub use logs::LogCapture;
pub use outage::{DatabaseProxy, Mode, tcp_target, via_loopback};
pub use pgbouncer::PgBouncer;
pub use tls::TlsCluster;
pub use vault::{
    REASON, audit_digest, cold_start, function, init_keys, key_admin, loaded_by_writer, quarantine_service,
    replaying_function, staff, staff_and_key_admin_roles, url_request, vault_service, vault_service_on,
    writer_app,
};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `process_counter_nanos`: unique across the parallel tests and test processes of one run.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").subsec_nanos();
    format!("{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A variable the stack sets.
fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests through `make test`"))
}

/// The repository's root, where `events/`, `tests/fixtures/` and `.venv/` are.
fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}
