//! Integration tests on the local stack: a real PostgreSQL (a database per test), the real
//! SQS, KMS and Secrets Manager APIs of the moto server, the binaries run as processes.
//! Shared set-up lives in the `testkit` crate.

mod attack;
mod concurrency;
mod erasure;
mod faults;
mod handler;
mod hostile;
mod mask_indexes;
mod partitions;
mod pooler;
mod quarantine;
mod redteam_day_partitions;
mod redteam_issue19;
mod redteam_v17;
mod redteam_v18;
mod schema;
mod tls;
mod trace_logs;
mod upgrades;
mod vault_key;
mod zeroize;
