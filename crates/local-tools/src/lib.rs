//! The local stack's tools: [`esm`], a local SQS event source mapping around the ingest
//! function's handler (`esm-local`), and `migrate`. Never deployed.
#![forbid(unsafe_code)]

pub mod esm;
