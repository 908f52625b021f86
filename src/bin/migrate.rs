//! `migrate`: applies the migrations of `sql/` to `DATABASE_URL` (or `--database-url`).
//! Idempotent: applied migrations are recorded in `refinery_schema_history`.

use anyhow::Context;
use clap::Parser;
use login_etl::store;

#[derive(Parser)]
#[command(about = "Apply login-etl's SQL migrations (idempotent)")]
struct Args {
    /// Postgres URL of the database to migrate.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = store::parse_database_url(&args.database_url)
        .map_err(|reason| anyhow::anyhow!("DATABASE_URL is malformed: {reason}"))?;
    let (mut client, connection) =
        config.connect(tokio_postgres::NoTls).await.context("cannot connect to DATABASE_URL")?;
    tokio::spawn(connection);
    let applied = store::migrate(&mut client).await?;
    if applied.is_empty() {
        println!("migrate: schema is up to date");
    } else {
        for name in applied {
            println!("migrate: applied {name}");
        }
    }
    Ok(())
}
