//! `migrate`: applies the migrations of `sql/` to `DATABASE_URL` (or `--database-url`).
//! Idempotent: applied migrations are recorded in `refinery_schema_history`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use login_etl_core::config::database;
use login_etl_core::error::report;

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
    Migration(#[from] refinery::Error),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(applied) if applied.is_empty() => println!("migrate: schema is up to date"),
        Ok(applied) => applied.iter().for_each(|name| println!("migrate: applied {name}")),
        Err(error) => {
            eprintln!("migrate: {}", report(&error));
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

async fn run(args: Args) -> Result<Vec<String>, MigrateError> {
    let config = database::parse_database_url(&args.database_url)?;
    let mut client = database::connect(&config).await?;
    Ok(login_etl_migrations::migrate(&mut client).await?)
}
