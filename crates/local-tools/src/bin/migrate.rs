//! `migrate`: applies the migrations of `sql/` to `DATABASE_URL` (or `--database-url`),
//! then makes `user_logins`'s partitions as the scheduled `partition-maintenance` does
//! (the same code, the same `PARTITION_DAYS_BACK`, `PARTITION_MONTHS_AHEAD` and
//! `PARTITION_INTERVAL`).
//! Idempotent: applied migrations are recorded in `refinery_schema_history`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use login_etl_core::config::database;
use login_etl_core::error::report;
use login_etl_core::store::partitions;

#[derive(Parser)]
#[command(about = "Apply login-etl's SQL migrations (idempotent)")]
struct Args {
    /// Postgres URL of the database to migrate.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Debug, thiserror::Error)]
enum MigrateError {
    #[error("DATABASE_URL is malformed")]
    Url(#[from] database::DatabaseUrlError),
    #[error("cannot connect to DATABASE_URL")]
    Connect(#[from] login_etl_core::error::DbError),
    #[error("migrations not applied")]
    Migration(#[from] login_etl_migrations::Error),
    #[error("partition settings")]
    Settings(#[from] login_etl_core::config::ConfigError),
    #[error("partitions not made")]
    Partitions(#[from] login_etl_core::store::StoreError),
    #[error("partitions not made, a table that is not a partition holds their names: {}", .0.join(", "))]
    NameTaken(Vec<String>),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok((applied, created)) => {
            if applied.is_empty() {
                println!("migrate: schema is up to date");
            }
            applied.iter().for_each(|name| println!("migrate: applied {name}"));
            created.iter().for_each(|name| println!("migrate: partition {name} made"));
        }
        Err(error) => {
            eprintln!("migrate: {}", report(&error));
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

async fn run(args: Args) -> Result<(Vec<String>, Vec<String>), MigrateError> {
    let var = |name: &str| std::env::var(name).ok();
    let days_back = partitions::days_back(var("PARTITION_DAYS_BACK").as_deref())?;
    let months_ahead = partitions::months_ahead(var("PARTITION_MONTHS_AHEAD").as_deref())?;
    let interval = partitions::Interval::from_setting(var("PARTITION_INTERVAL").as_deref())?;
    let config = database::parse_database_url(&args.database_url)?;
    let mut client = database::connect(&config).await?;
    let applied = login_etl_migrations::migrate(&mut client).await?;
    let window = partitions::Window::around(chrono::Utc::now().date_naive(), days_back, months_ahead);
    let made = partitions::ensure(&mut client, window, interval).await?;
    if !made.blocked.is_empty() {
        return Err(MigrateError::NameTaken(made.blocked));
    }
    Ok((applied, made.created))
}
