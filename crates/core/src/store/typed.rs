//! Parameters of the unnamed statement (tokio-postgres's `query_typed`, `execute_typed`):
//! each value with the PostgreSQL type its Rust type maps to, so the server is never asked
//! to infer one (that takes a named statement prepared on the session, which a
//! transaction-pooling proxy may run on another server connection: docs/operations.md,
//! "Connection poolers"). The one mapping from Rust types to parameter types.

use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};

/// A parameter as `query_typed` takes it.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A Rust value and the PostgreSQL type of its parameter.
pub trait PgParam: ToSql + Sync {
    const TYPE: Type;
}

/// `value` as a parameter of the type its Rust type maps to.
pub fn typed<T: PgParam>(value: &T) -> Param<'_> {
    (value, T::TYPE)
}

macro_rules! pg_param {
    ($($rust:ty => $pg:ident),* $(,)?) => {
        $(impl PgParam for $rust {
            const TYPE: Type = Type::$pg;
        })*
    };
}

pg_param! {
    bool => BOOL,
    i32 => INT4,
    i64 => INT8,
    String => TEXT,
    &str => TEXT,
    Vec<u8> => BYTEA,
    &[u8] => BYTEA,
    DateTime<Utc> => TIMESTAMPTZ,
    Vec<String> => TEXT_ARRAY,
    Vec<&str> => TEXT_ARRAY,
    Vec<i32> => INT4_ARRAY,
    Vec<i64> => INT8_ARRAY,
    Vec<Vec<u8>> => BYTEA_ARRAY,
    Vec<&[u8]> => BYTEA_ARRAY,
}

/// NULL is a value of the same type.
impl<T: PgParam> PgParam for Option<T> {
    const TYPE: Type = T::TYPE;
}
