//! The crate's one convention for errors. A leaf error's message says everything about
//! itself; a wrapper adds only its context ("keys", "database unreachable at init") and
//! exposes the inner error as its `source()`, never in its own message. [`report`] prints
//! such a chain once, context first: what the CLI, the init log and the Lambda
//! `Diagnostic` show.

use std::error::Error;
use std::fmt;

/// `outer: inner: innermost`, each message once.
pub fn report(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let message = inner.to_string();
        // Foreign errors sometimes repeat their source in their own message: say it once.
        if !message.is_empty() && !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = inner.source();
    }
    text
}

/// A PostgreSQL error as one leaf: the server's message and SQLSTATE (tokio-postgres'
/// own `Display` says only "db error"), or the client-side failure with its causes.
/// Server messages here never carry plaintext PII: the tables hold only masks and
/// ciphertext, and row details (`DETAIL`) are not shown.
#[derive(Debug)]
pub struct DbError(DbFailure);

#[derive(Debug)]
enum DbFailure {
    Postgres(tokio_postgres::Error),
    /// No connection could be had (pool timeout, closed pool).
    Other(String),
}

impl DbError {
    /// A failure around the database that is not a PostgreSQL error (e.g. a pool timeout).
    pub fn other(message: impl Into<String>) -> DbError {
        DbError(DbFailure::Other(message.into()))
    }

    /// The SQLSTATE, when the server answered with an error.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        self.postgres().and_then(tokio_postgres::Error::code)
    }

    pub fn postgres(&self) -> Option<&tokio_postgres::Error> {
        match &self.0 {
            DbFailure::Postgres(error) => Some(error),
            DbFailure::Other(_) => None,
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(error: tokio_postgres::Error) -> Self {
        DbError(DbFailure::Postgres(error))
    }
}

/// A connection from the pool: its backend error as such, else (timeout, closed pool) the
/// pool's own message.
impl From<deadpool_postgres::PoolError> for DbError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(e) => DbError::from(e),
            other => DbError::other(other.to_string()),
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            DbFailure::Postgres(error) => match error.as_db_error() {
                Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
                None => f.write_str(&report(error)),
            },
            DbFailure::Other(message) => f.write_str(message),
        }
    }
}

impl Error for DbError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("leaf problem")]
    struct Leaf;

    #[derive(Debug, thiserror::Error)]
    #[error("context")]
    struct Wrapper(#[source] Leaf);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Wrapper);

    #[test]
    fn a_chain_is_printed_once_outermost_first() {
        assert_eq!(report(&Outer(Wrapper(Leaf))), "outer: context: leaf problem");
        assert_eq!(report(&Leaf), "leaf problem");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("repeats: leaf problem")]
    struct Repeating(#[source] Leaf);

    #[test]
    fn a_source_already_in_the_message_is_not_repeated() {
        assert_eq!(report(&Repeating(Leaf)), "repeats: leaf problem");
    }
}
