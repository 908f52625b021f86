//! Configuration from the environment: `DATABASE_URL` (or `DATABASE_SECRET_ARN`),
//! `KMS_KEY_ID`, optional `DB_POOL_SIZE`, `DB_RETRY_BUDGET_MS`, the outage settings
//! ([`outage`]), `REPLAY_QUEUE_ARN`, and the AWS SDK's own variables (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, the default credential chain). A missing or malformed setting is an
//! error naming it.
//!
//! - [`database`]: connection settings and the one connect helper of every binary
//! - [`secrets`]: the database settings from a Secrets Manager secret

pub mod database;
pub mod outage;
pub mod secrets;
pub mod tls;

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};

use database::DatabaseUrlError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{var} is malformed: {reason}")]
    Malformed { var: &'static str, reason: String },
    #[error("DATABASE_URL is malformed")]
    DatabaseUrl(#[source] DatabaseUrlError),
    #[error("DATABASE_SECRET_ARN could not be read from Secrets Manager: {0}")]
    Secret(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Parsed `DATABASE_URL`, TLS included (its `Debug` redacts the password).
    pub database: database::Database,
    pub kms_key_id: String,
    pub pool_size: usize,
    /// How long transient database errors may be retried inside an invocation
    /// (`DB_RETRY_BUDGET_MS`; zero: no retry).
    pub retry_budget: Duration,
    /// How a batch that cannot be written waits on the queue.
    pub outage: outage::OutagePolicy,
    /// The queue only the vault service may send to (`REPLAY_QUEUE_ARN`): its records'
    /// replay attributes are honoured, nobody else's.
    pub replay_queue_arn: Option<String>,
}

/// One Lambda instance handles one batch at a time: two connections cover the batch and
/// a recycle; more only add load on the database (see docs/ on RDS Proxy).
pub const DEFAULT_POOL_SIZE: usize = 2;

/// Half the shortest function timeout the template allows (10 s): a batch that cannot be
/// written must still fail as an invocation error before Lambda kills it.
pub const MAX_RETRY_BUDGET_MS: u64 = 5_000;
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(3);

impl Config {
    /// From the environment; the database from `DATABASE_URL`, else from the Secrets
    /// Manager secret `DATABASE_SECRET_ARN` (read once, here).
    pub async fn from_env(sdk: &SdkConfig) -> Result<Config, ConfigError> {
        let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let database = database_from_env(sdk).await?;
        Self::with_database(database, lookup)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let url = lookup("DATABASE_URL")
            .filter(|value| !value.trim().is_empty())
            .ok_or(ConfigError::Missing("DATABASE_URL (or DATABASE_SECRET_ARN)"))?;
        let database = database::parse_database_url(&url).map_err(ConfigError::DatabaseUrl)?;
        Self::with_database(database, lookup)
    }

    fn with_database(
        database: database::Database,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let required = |var: &'static str| {
            lookup(var).filter(|value| !value.trim().is_empty()).ok_or(ConfigError::Missing(var))
        };
        let kms_key_id = required("KMS_KEY_ID")?.trim().to_owned();
        let pool_size = match lookup("DB_POOL_SIZE") {
            None => DEFAULT_POOL_SIZE,
            Some(text) => text.trim().parse().ok().filter(|&n: &usize| n >= 1).ok_or_else(|| {
                ConfigError::Malformed {
                    var: "DB_POOL_SIZE",
                    reason: "expected a whole number of at least 1".into(),
                }
            })?,
        };
        let retry_budget = match lookup("DB_RETRY_BUDGET_MS") {
            None => DEFAULT_RETRY_BUDGET,
            Some(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|&ms: &u64| ms <= MAX_RETRY_BUDGET_MS)
                .map(Duration::from_millis)
                .ok_or_else(|| ConfigError::Malformed {
                    var: "DB_RETRY_BUDGET_MS",
                    reason: format!("expected milliseconds from 0 (no retry) to {MAX_RETRY_BUDGET_MS}"),
                })?,
        };
        let outage = outage::OutagePolicy::from_lookup(&lookup)?;
        let replay_queue_arn = lookup("REPLAY_QUEUE_ARN").map(|arn| arn.trim().to_owned());
        if let Some(arn) = &replay_queue_arn
            && !(arn.starts_with("arn:") && arn.split(':').count() == 6)
        {
            return Err(ConfigError::Malformed {
                var: "REPLAY_QUEUE_ARN",
                reason: "expected an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)".into(),
            });
        }
        Ok(Config { database, kms_key_id, pool_size, retry_budget, outage, replay_queue_arn })
    }
}

/// The database settings every binary reads: `DATABASE_URL`, else the Secrets Manager
/// secret `DATABASE_SECRET_ARN` (read once, here).
pub async fn database_from_env(sdk: &SdkConfig) -> Result<database::Database, ConfigError> {
    let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (lookup("DATABASE_URL"), lookup("DATABASE_SECRET_ARN")) {
        (Some(url), _) => database::parse_database_url(&url).map_err(ConfigError::DatabaseUrl),
        (None, Some(secret)) => secrets::database_config(sdk, secret.trim()).await,
        (None, None) => Err(ConfigError::Missing("DATABASE_URL (or DATABASE_SECRET_ARN)")),
    }
}

/// The time an invocation has left, from its context's deadline (epoch milliseconds).
/// `cargo lambda watch` sends the timeout itself (600000) instead of an epoch time: a value
/// of at most Lambda's 15 minutes is read as that; an epoch deadline already past leaves
/// no time.
pub fn invocation_time_left(deadline_ms: u64) -> Duration {
    const LAMBDA_MAX_TIMEOUT_MS: u64 = 900_000;
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
    let left_ms =
        if deadline_ms <= LAMBDA_MAX_TIMEOUT_MS { deadline_ms } else { deadline_ms.saturating_sub(now_ms) };
    Duration::from_millis(left_ms)
}

/// A setting that must be present and not blank, trimmed.
pub fn required_env(var: &'static str) -> Result<String, ConfigError> {
    std::env::var(var)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .ok_or(ConfigError::Missing(var))
}

/// The AWS SDK configuration from its usual sources, with timeouts short enough that an
/// unreachable KMS fails the cold start clearly inside Lambda's 10 s init phase.
pub async fn aws_sdk_config() -> Result<SdkConfig, ConfigError> {
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL")
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        return Err(ConfigError::Malformed {
            var: "AWS_ENDPOINT_URL",
            reason: "expected an http:// or https:// URL".into(),
        });
    }
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(8))
        .build();
    let sdk = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts).load().await;
    if sdk.region().is_none() {
        return Err(ConfigError::Missing("AWS_REGION"));
    }
    Ok(sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    const URL: (&str, &str) = ("DATABASE_URL", "postgres://etl:secret@127.0.0.1:5432/logins");
    const KEY: (&str, &str) = ("KMS_KEY_ID", "alias/pii-vault");

    #[test]
    fn reads_the_settings() {
        let config = config(&[URL, KEY]).expect("valid");
        assert_eq!(config.kms_key_id, "alias/pii-vault");
        assert_eq!(config.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(config.database.config.get_dbname(), Some("logins"));
        assert!(!format!("{config:?}").contains("secret"), "password must not be printed");
    }

    #[test]
    fn missing_settings_are_named() {
        assert_eq!(
            config(&[KEY]).unwrap_err(),
            ConfigError::Missing("DATABASE_URL (or DATABASE_SECRET_ARN)")
        );
        assert_eq!(config(&[URL]).unwrap_err(), ConfigError::Missing("KMS_KEY_ID"));
        assert_eq!(config(&[URL, ("KMS_KEY_ID", " ")]).unwrap_err(), ConfigError::Missing("KMS_KEY_ID"));
    }

    #[test]
    fn malformed_settings_are_named_without_their_secrets() {
        let error = config(&[("DATABASE_URL", "postgres://etl:secret@host:notaport/db"), KEY]).unwrap_err();
        assert!(matches!(error, ConfigError::DatabaseUrl(_)), "{error}");
        assert!(!crate::error::report(&error).contains("secret"), "{error:?}");

        let error = config(&[URL, KEY, ("DB_POOL_SIZE", "0")]).unwrap_err();
        assert!(error.to_string().starts_with("DB_POOL_SIZE is malformed"), "{error}");

        let error = config(&[URL, KEY, ("DB_RETRY_BUDGET_MS", "60000")]).unwrap_err();
        assert!(error.to_string().starts_with("DB_RETRY_BUDGET_MS is malformed"), "{error}");
        let no_retry = config(&[URL, KEY, ("DB_RETRY_BUDGET_MS", "0")]).expect("valid");
        assert_eq!(no_retry.retry_budget, Duration::ZERO);
    }
}
