//! Database connection settings and the one way every binary connects.

use std::str::FromStr;
use std::time::Duration;

use crate::error::DbError;

/// How long a connection attempt may take before the caller fails (the function then
/// fails the invocation, so SQS retries, instead of running into the Lambda timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    /// tokio-postgres' parser names the option, never its value.
    #[error("{0}")]
    Unparsable(String),
    #[error("it names no host")]
    NoHost,
}

/// Parses a libpq-style URL or key=value string, naming no secret in the error.
pub fn parse_database_url(url: &str) -> Result<tokio_postgres::Config, DatabaseUrlError> {
    let config =
        tokio_postgres::Config::from_str(url).map_err(|e| DatabaseUrlError::Unparsable(e.to_string()))?;
    if config.get_hosts().is_empty() {
        return Err(DatabaseUrlError::NoHost);
    }
    Ok(with_defaults(config))
}

/// A connect timeout and an application name, unless the settings give their own.
pub fn with_defaults(mut config: tokio_postgres::Config) -> tokio_postgres::Config {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("login-etl");
    }
    config
}

/// One connection, its I/O driven by a task of its own (for the binaries and tools that
/// need a single session rather than the pool).
pub async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %DbError::from(error), "database connection ended");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_contain_the_password() {
        let error = parse_database_url("postgres://etl:hunter2@host:notaport/db").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(matches!(parse_database_url("dbname=x"), Err(DatabaseUrlError::NoHost)));
    }
}
