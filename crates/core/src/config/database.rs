//! Database connection settings and the one way every binary connects: always through
//! rustls, as `sslmode` says (see [`super::tls`]).

use std::str::FromStr;
use std::time::Duration;

use super::tls::{SslMode, TlsError, TlsSettings};
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
    #[error("sslmode must be disable, allow, prefer, require, verify-ca or verify-full")]
    SslMode,
}

/// One database's connection settings: tokio-postgres's, and how to secure them.
#[derive(Debug, Clone)]
pub struct Database {
    /// `Debug` redacts the password.
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
}

impl Database {
    /// `config` with TLS settings from `sslmode` (and the RDS default for RDS hosts).
    pub fn new(
        mut config: tokio_postgres::Config,
        sslmode: Option<SslMode>,
        sslrootcert: Option<&str>,
    ) -> Database {
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .filter_map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        let tls = TlsSettings::resolve(sslmode, sslrootcert, &hosts);
        config.ssl_mode(tls.postgres_mode());
        Database { config: with_defaults(config), tls }
    }
}

/// A tokio-postgres config as it is: its own `sslmode` (disable, prefer or require)
/// without certificate checks (what the tests' local servers use).
impl From<tokio_postgres::Config> for Database {
    fn from(config: tokio_postgres::Config) -> Self {
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => TlsSettings::DISABLED,
            tokio_postgres::config::SslMode::Require => {
                TlsSettings { mode: SslMode::Require, root_certs: None }
            }
            _ => TlsSettings { mode: SslMode::Prefer, root_certs: None },
        };
        Database { config: with_defaults(config), tls }
    }
}

/// Parses a libpq-style URL or key=value string, naming no secret in the error. `sslmode`
/// (all five libpq values) and `sslrootcert` are taken out before tokio-postgres parses
/// the rest.
pub fn parse_database_url(url: &str) -> Result<Database, DatabaseUrlError> {
    let (rest, sslmode, sslrootcert) = take_tls_options(url);
    let sslmode = match sslmode {
        Some(text) => Some(SslMode::parse(&text).ok_or(DatabaseUrlError::SslMode)?),
        None => None,
    };
    let config =
        tokio_postgres::Config::from_str(&rest).map_err(|e| DatabaseUrlError::Unparsable(e.to_string()))?;
    if config.get_hosts().is_empty() {
        return Err(DatabaseUrlError::NoHost);
    }
    Ok(Database::new(config, sslmode, sslrootcert.as_deref()))
}

/// The connection string without `sslmode` and `sslrootcert`, and their values.
fn take_tls_options(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut sslmode, mut sslrootcert) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => sslmode = Some(value),
        "sslrootcert" => sslrootcert = Some(value),
        _ => {}
    };
    let is_tls_key = |key: &str| matches!(key, "sslmode" | "sslrootcert");
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None, None) };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if is_tls_key(key) {
                take(key, percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned());
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        return (rest, sslmode, sslrootcert);
    }
    // key=value form: these two values are taken as single words (quotes removed).
    let mut kept = Vec::new();
    for word in url.split_whitespace() {
        match word.split_once('=') {
            Some((key, value)) if is_tls_key(key.trim()) => {
                take(key.trim(), value.trim_matches('\'').to_owned())
            }
            _ => kept.push(word),
        }
    }
    (kept.join(" "), sslmode, sslrootcert)
}

/// How long data sent on a connection may go unacknowledged before the connection is
/// declared dead (TCP_USER_TIMEOUT), and how soon an idle one is probed: a connection whose
/// server vanished without a word (a failover, a black-holed path) fails in seconds, not
/// after the kernel's quarter of an hour.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);
pub const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);

/// A connect timeout, TCP liveness checks and an application name, unless the settings
/// give their own.
pub fn with_defaults(mut config: tokio_postgres::Config) -> tokio_postgres::Config {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    config.keepalives(true);
    config.keepalives_idle(config.get_keepalives_idle().min(KEEPALIVES_IDLE));
    if config.get_application_name().is_none() {
        config.application_name("login-etl");
    }
    config
}

/// One connection, its I/O driven by a task of its own (for the binaries and tools that
/// need a single session rather than the pool).
pub async fn connect(database: &Database) -> Result<tokio_postgres::Client, DbError> {
    let connector = database.tls.connector().map_err(|e: TlsError| DbError::other(e.to_string()))?;
    let (client, connection) = database.config.connect(connector).await?;
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
    fn sslmode_and_sslrootcert_are_taken_out_for_tokio_postgres() {
        let db = parse_database_url("postgres://u:pw@db.internal:5433/logins?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x")
            .expect("parses");
        assert_eq!(db.tls.mode, SslMode::VerifyFull);
        assert_eq!(db.tls.root_certs, Some(super::super::tls::RootCerts::File("/etc/ca.pem".into())));
        assert_eq!(db.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(db.config.get_application_name(), Some("x"));
        let kv =
            parse_database_url("host=db.internal user=u dbname=d sslmode=verify-ca sslrootcert='/ca.pem'")
                .expect("kv");
        assert_eq!(kv.tls.mode, SslMode::VerifyCa);
        assert_eq!(kv.config.get_dbname(), Some("d"));
        assert!(matches!(
            parse_database_url("postgres://u@h/d?sslmode=sometimes"),
            Err(DatabaseUrlError::SslMode)
        ));
        let rds = parse_database_url("postgres://u@db.x.us-east-1.rds.amazonaws.com/d").expect("rds");
        assert_eq!(rds.tls.mode, SslMode::VerifyFull);
        let plain = parse_database_url("postgres://u@h/d?sslmode=disable").expect("plain");
        assert_eq!(plain.config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    }

    #[test]
    fn errors_never_contain_the_password() {
        let error = parse_database_url("postgres://etl:hunter2@host:notaport/db").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(matches!(parse_database_url("dbname=x"), Err(DatabaseUrlError::NoHost)));
    }
}
