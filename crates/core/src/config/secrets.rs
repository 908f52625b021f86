//! Database credentials from AWS Secrets Manager (`DATABASE_SECRET_ARN`), read once at
//! cold start: the RDS secret format (`host`, `port`, `username`, `password`, `dbname`)
//! or `{"url": "postgres://…"}`. No part of the secret ever appears in an error.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::ConfigError;
use super::database;
use super::tls::SslMode;

#[derive(Deserialize)]
struct RdsSecret {
    url: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    host: Option<String>,
    port: Option<serde_json::Value>,
    username: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
}

fn malformed(reason: &str) -> ConfigError {
    ConfigError::Malformed { var: "DATABASE_SECRET_ARN", reason: format!("the secret's value {reason}") }
}

/// The connection settings a secret value describes.
/// `sslmode` and `sslrootcert` may be given as keys of their own; without them an RDS host
/// gets `verify-full` against the bundled Amazon RDS CAs.
pub fn parse_database_secret(text: &str) -> Result<database::Database, ConfigError> {
    let secret: RdsSecret =
        serde_json::from_str(text).map_err(|_| malformed("is not a JSON object of strings"))?;
    if let Some(url) = secret.url {
        return database::parse_database_url(&Zeroizing::new(url))
            .map_err(|_| malformed("has an unusable url"));
    }
    let host = secret.host.ok_or_else(|| malformed("has no host"))?;
    let user = secret.username.ok_or_else(|| malformed("has no username"))?;
    let port = match secret.port {
        None => 5432,
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().and_then(|p| u16::try_from(p).ok()).ok_or_else(|| malformed("has a bad port"))?
        }
        Some(serde_json::Value::String(s)) => s.parse().map_err(|_| malformed("has a bad port"))?,
        Some(_) => return Err(malformed("has a bad port")),
    };
    let mut config = tokio_postgres::Config::new();
    config.host(&host).port(port).user(&user).dbname(secret.dbname.as_deref().unwrap_or("postgres"));
    if let Some(password) = secret.password.map(Zeroizing::new) {
        config.password(password.as_bytes());
    }
    let sslmode = match secret.sslmode.as_deref() {
        Some(text) => Some(SslMode::parse(text).ok_or_else(|| malformed("has an unknown sslmode"))?),
        None => None,
    };
    Ok(database::Database::new(config, sslmode, secret.sslrootcert.as_deref()))
}

/// Fetches and parses the secret.
pub async fn database_config(sdk: &SdkConfig, secret_id: &str) -> Result<database::Database, ConfigError> {
    let output = aws_sdk_secretsmanager::Client::new(sdk)
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| ConfigError::Secret(DisplayErrorContext(e).to_string()))?;
    let text = Zeroizing::new(output.secret_string.ok_or_else(|| malformed("is not a string"))?);
    parse_database_secret(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rds_secret_format() {
        let config = parse_database_secret(
            r#"{"engine":"postgres","host":"db.internal","port":5433,"username":"etl","password":"s3cret","dbname":"logins"}"#,
        )
        .expect("valid");
        assert_eq!(config.config.get_ports(), &[5433]);
        assert_eq!(config.config.get_user(), Some("etl"));
        assert_eq!(config.config.get_dbname(), Some("logins"));
        assert_eq!(config.config.get_password(), Some(&b"s3cret"[..]));
        assert!(config.config.get_connect_timeout().is_some());
        let by_url = parse_database_secret(r#"{"url":"postgres://etl:pw@db.internal/logins"}"#).expect("url");
        assert_eq!(by_url.config.get_dbname(), Some("logins"));
        let rds = parse_database_secret(r#"{"host":"db.abc.eu-west-1.rds.amazonaws.com","username":"etl"}"#)
            .expect("rds");
        assert_eq!(rds.tls.mode, SslMode::VerifyFull, "RDS hosts are verified by default");
        let own = parse_database_secret(
            r#"{"host":"h","username":"u","sslmode":"verify-ca","sslrootcert":"/ca.pem"}"#,
        )
        .expect("own");
        assert_eq!(own.tls.mode, SslMode::VerifyCa);
    }

    #[test]
    fn errors_never_contain_the_secret() {
        for text in [
            r#"{"password":"s3cret"}"#,
            r#"{"host":"h","username":"u","password":"s3cret","port":"x"}"#,
            "s3cret",
        ] {
            let error = parse_database_secret(text).expect_err("malformed");
            assert!(!error.to_string().contains("s3cret"), "{error}");
            assert!(error.to_string().starts_with("DATABASE_SECRET_ARN is malformed"), "{error}");
        }
    }
}
