//! The schema: the numbered migrations of the repository's `sql/`, embedded at compile
//! time and applied by refinery (which keeps its version table, `refinery_schema_history`).
//! A crate of its own so that no deployed function links the schema's SQL: `migrate`, the
//! tests and the benchmark do.
#![forbid(unsafe_code)]

mod embedded {
    refinery::embed_migrations!("../../sql");
}

/// Applies the pending migrations; running it again is a no-op. Returns the names applied.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<String>, refinery::Error> {
    let report = embedded::migrations::runner().run_async(client).await?;
    Ok(report.applied_migrations().iter().map(|m| format!("V{}__{}", m.version(), m.name())).collect())
}

/// Applies the pending migrations up to and including version `version` (a test builds
/// the database an earlier release left, fills it, then migrates the rest).
pub async fn migrate_to(
    client: &mut tokio_postgres::Client,
    version: i32,
) -> Result<Vec<String>, refinery::Error> {
    let report = embedded::migrations::runner()
        .set_target(refinery::Target::Version(version))
        .run_async(client)
        .await?;
    Ok(report.applied_migrations().iter().map(|m| format!("V{}__{}", m.version(), m.name())).collect())
}
