//! The tables the function writes, described once: each column's name, SQL type and value
//! in a prepared row. `user_logins` is [`USER_LOGINS`] (rows: [`LoginRow`]); the quarantine
//! is [`super::quarantine::LOGIN_QUARANTINE`]. The INSERT, every column list and the binary
//! COPY the benchmark measures the handler against are generated from them; a test compares them with the migrated schema
//! (`information_schema`). docs/extending.md walks through adding a column.

use std::error::Error;
use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::batch::LoginRow;

/// A column's SQL type, as the migration declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Varchar(u32),
    Integer,
    Date,
    Timestamptz,
    Bytea,
}

impl SqlType {
    /// `information_schema.columns.data_type` for this type.
    pub fn information_schema_name(self) -> &'static str {
        match self {
            SqlType::Varchar(_) => "character varying",
            SqlType::Integer => "integer",
            SqlType::Date => "date",
            SqlType::Timestamptz => "timestamp with time zone",
            SqlType::Bytea => "bytea",
        }
    }

    /// `character_maximum_length`, for the types that have one.
    pub fn max_length(self) -> Option<u32> {
        match self {
            SqlType::Varchar(n) => Some(n),
            _ => None,
        }
    }

    /// The element type of the array the INSERT binds (varchar columns take `text`).
    fn array_element(self) -> &'static str {
        match self {
            SqlType::Varchar(_) => "text",
            SqlType::Integer => "int4",
            SqlType::Date => "date",
            SqlType::Timestamptz => "timestamptz",
            SqlType::Bytea => "bytea",
        }
    }

    /// The type of the array the INSERT binds for this column (the statement's cast).
    fn array_type(self) -> Type {
        match self {
            SqlType::Varchar(_) => Type::TEXT_ARRAY,
            SqlType::Integer => Type::INT4_ARRAY,
            SqlType::Date => Type::DATE_ARRAY,
            SqlType::Timestamptz => Type::TIMESTAMPTZ_ARRAY,
            SqlType::Bytea => Type::BYTEA_ARRAY,
        }
    }

    /// Whether the statements order this type bytewise (`COLLATE "C"`).
    fn is_text(self) -> bool {
        matches!(self, SqlType::Varchar(_))
    }

    /// The type binary COPY sends (it does not convert: the column must have it).
    pub fn copy_type(self) -> Type {
        match self {
            SqlType::Varchar(_) => Type::VARCHAR,
            SqlType::Integer => Type::INT4,
            SqlType::Date => Type::DATE,
            SqlType::Timestamptz => Type::TIMESTAMPTZ,
            SqlType::Bytea => Type::BYTEA,
        }
    }
}

/// How a column's value is read from a row; the kind fixes the Rust type, so a column
/// cannot be bound with a value of another type.
#[derive(Clone, Copy)]
enum Value<R> {
    Text(fn(&R) -> &str),
    OptionalText(fn(&R) -> Option<&str>),
    Int4(fn(&R) -> i32),
    OptionalInt4(fn(&R) -> Option<i32>),
    Date(fn(&R) -> NaiveDate),
    Timestamptz(fn(&R) -> DateTime<Utc>),
    OptionalTimestamptz(fn(&R) -> Option<DateTime<Utc>>),
    Bytes(fn(&R) -> &[u8]),
}

/// One column: name, SQL type, and its value in a row.
pub struct Column<R> {
    pub name: &'static str,
    pub sql_type: SqlType,
    value: Value<R>,
}

impl<R> Column<R> {
    pub const fn varchar(name: &'static str, length: u32, value: fn(&R) -> &str) -> Column<R> {
        Column { name, sql_type: SqlType::Varchar(length), value: Value::Text(value) }
    }

    /// A varchar column that may be NULL (an optional or nullable field).
    pub const fn optional_varchar(
        name: &'static str,
        length: u32,
        value: fn(&R) -> Option<&str>,
    ) -> Column<R> {
        Column { name, sql_type: SqlType::Varchar(length), value: Value::OptionalText(value) }
    }

    pub const fn integer(name: &'static str, value: fn(&R) -> i32) -> Column<R> {
        Column { name, sql_type: SqlType::Integer, value: Value::Int4(value) }
    }

    pub const fn optional_integer(name: &'static str, value: fn(&R) -> Option<i32>) -> Column<R> {
        Column { name, sql_type: SqlType::Integer, value: Value::OptionalInt4(value) }
    }

    pub const fn optional_timestamptz(
        name: &'static str,
        value: fn(&R) -> Option<DateTime<Utc>>,
    ) -> Column<R> {
        Column { name, sql_type: SqlType::Timestamptz, value: Value::OptionalTimestamptz(value) }
    }

    pub const fn bytea(name: &'static str, value: fn(&R) -> &[u8]) -> Column<R> {
        Column { name, sql_type: SqlType::Bytea, value: Value::Bytes(value) }
    }

    pub const fn date(name: &'static str, value: fn(&R) -> NaiveDate) -> Column<R> {
        Column { name, sql_type: SqlType::Date, value: Value::Date(value) }
    }

    pub const fn timestamptz(name: &'static str, value: fn(&R) -> DateTime<Utc>) -> Column<R> {
        Column { name, sql_type: SqlType::Timestamptz, value: Value::Timestamptz(value) }
    }

    /// Whether the row may leave this column NULL.
    pub fn nullable(&self) -> bool {
        matches!(self.value, Value::OptionalText(_) | Value::OptionalInt4(_) | Value::OptionalTimestamptz(_))
    }

    /// This column's value in `row`, ready to bind or to COPY.
    pub fn cell<'a>(&self, row: &'a R) -> Cell<'a> {
        match self.value {
            Value::Text(f) => Cell::Text(f(row)),
            Value::OptionalText(f) => Cell::OptionalText(f(row)),
            Value::Int4(f) => Cell::Int4(f(row)),
            Value::OptionalInt4(f) => Cell::OptionalInt4(f(row)),
            Value::Date(f) => Cell::Date(f(row)),
            Value::Timestamptz(f) => Cell::Timestamptz(f(row)),
            Value::OptionalTimestamptz(f) => Cell::OptionalTimestamptz(f(row)),
            Value::Bytes(f) => Cell::Bytes(f(row)),
        }
    }
}

/// A table the store writes: its columns in order, the key that makes a write idempotent
/// (rows whose key exists are skipped, and rows are inserted in its order: the lock order),
/// the partition key (a column of the key), and the columns the table fills itself
/// (defaults).
pub struct Table<R: 'static> {
    pub name: &'static str,
    pub columns: &'static [Column<R>],
    pub key: &'static [&'static str],
    pub partition_key: Option<&'static str>,
    pub filled_by_table: &'static [&'static str],
}

impl<R> Table<R> {
    pub fn column_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.name)
    }

    /// `INSERT … SELECT FROM UNNEST(<one array per column>) ORDER BY <key> ON CONFLICT DO
    /// NOTHING`. The conflict target is left out on purpose: with one, Postgres requires
    /// SELECT on its columns, which the writer role does not have.
    pub fn insert_sql(&self) -> String {
        self.insert_rows_sql("")
    }

    /// The INSERT of the rows that pass `filter` (a `WHERE` on `r`, or nothing).
    fn insert_rows_sql(&self, filter: &str) -> String {
        let names = self.column_names().collect::<Vec<_>>().join(", ");
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}[]", i + 1, c.sql_type.array_element()))
            .collect();
        let order: Vec<String> = self
            .key
            .iter()
            .map(|k| match self.columns.iter().find(|c| c.name == *k) {
                Some(c) if c.sql_type.is_text() => format!("r.{k} COLLATE \"C\""),
                _ => format!("r.{k}"),
            })
            .collect();
        format!(
            "INSERT INTO {table} ({names}) SELECT r.* FROM UNNEST({arrays}) AS r({names}) {filter}ORDER BY {order} \
             ON CONFLICT DO NOTHING",
            table = self.name,
            arrays = arrays.join(", "),
            order = order.join(", "),
        )
    }

    /// [`Table::insert_sql`] that leaves out the rows whose key is there already, as
    /// `present_keys` (a function of the key columns' arrays, answering those of them
    /// that exist) says, so it never waits on one: `ON CONFLICT` waits for a transaction
    /// that holds a conflicting row (one erasing an old quarantined body, say), and the
    /// login that can hold one open must not hold back the batch that meets its key again.
    pub fn insert_new_sql(&self, present_keys: &str) -> String {
        let arrays: Vec<String> = self
            .key
            .iter()
            .filter_map(|k| self.columns.iter().position(|c| c.name == *k))
            .map(|i| format!("${}::{}[]", i + 1, self.columns[i].sql_type.array_element()))
            .collect();
        let same = self.key.iter().map(|k| format!("k.{k} = r.{k}")).collect::<Vec<_>>().join(" AND ");
        self.insert_rows_sql(&format!(
            "WHERE NOT EXISTS (SELECT 1 FROM {present_keys}({}) k WHERE {same}) ",
            arrays.join(", ")
        ))
    }

    /// Binary `COPY … FROM STDIN` of every column.
    pub fn copy_sql(&self) -> String {
        let names = self.column_names().collect::<Vec<_>>().join(", ");
        format!("COPY {} ({names}) FROM STDIN (FORMAT binary)", self.name)
    }

    /// The types binary COPY sends, in column order.
    pub fn copy_types(&self) -> Vec<Type> {
        self.columns.iter().map(|c| c.sql_type.copy_type()).collect()
    }

    /// The INSERT's parameters: one array per column.
    pub fn column_arrays<'a>(&self, rows: &'a [R]) -> Vec<Vec<Cell<'a>>> {
        self.columns.iter().map(|c| rows.iter().map(|row| c.cell(row)).collect()).collect()
    }

    /// The INSERT's parameter types, in column order (the unnamed statement is sent with
    /// its types: no prepare, no round trip to learn them).
    pub fn array_types(&self) -> Vec<Type> {
        self.columns.iter().map(|c| c.sql_type.array_type()).collect()
    }
}

/// `user_logins`: the exercise's columns (kept as given) and the design's. The PII is
/// here only as masks; `loaded_at` is the table's own default.
pub static USER_LOGINS: Table<LoginRow> = Table {
    name: "login_data.user_logins",
    columns: &[
        Column::varchar("sqs_message_id", 128, |r| &r.sqs_message_id),
        Column::varchar("user_id", 128, |r| r.details.user_id()),
        Column::varchar("device_type", 32, |r| r.details.device_type()),
        Column::varchar("masked_ip", 256, |r| r.masked_ip.as_str()),
        Column::varchar("masked_device_id", 256, |r| r.masked_device_id.as_str()),
        Column::optional_varchar("locale", 32, |r| r.details.locale()),
        Column::integer("app_version", |r| r.details.app_version().encoded()),
        Column::varchar("app_version_raw", 32, |r| r.details.app_version().raw()),
        Column::date("create_date", |r| r.sent_at.date_naive()),
        Column::timestamptz("sent_at", |r| r.sent_at),
        Column::integer("index_key_version", |r| r.index_key_version),
    ],
    // The primary key (sql/V13__user_logins_partitioned.sql): the message id and its date.
    // Sorted by it, the rows keep the lock order whichever partitions they go to (one
    // INSERT routes them one by one, in its ORDER BY).
    key: &["sqs_message_id", "create_date"],
    partition_key: Some("create_date"),
    filled_by_table: &["loaded_at"],
};

pub static INSERT_LOGINS: LazyLock<String> = LazyLock::new(|| USER_LOGINS.insert_sql());

/// One value of a column, bound as the column's type (the column arrays of the INSERT are
/// arrays of these; the benchmark's COPY row is a slice of them).
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Text(&'a str),
    OptionalText(Option<&'a str>),
    Int4(i32),
    OptionalInt4(Option<i32>),
    Date(NaiveDate),
    Timestamptz(DateTime<Utc>),
    OptionalTimestamptz(Option<DateTime<Utc>>),
    Bytes(&'a [u8]),
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Text(text) => text.to_sql(ty, out),
            Cell::OptionalText(text) => text.to_sql(ty, out),
            Cell::Int4(n) => n.to_sql(ty, out),
            Cell::OptionalInt4(n) => n.to_sql(ty, out),
            Cell::Date(date) => date.to_sql(ty, out),
            Cell::Timestamptz(at) => at.to_sql(ty, out),
            Cell::OptionalTimestamptz(at) => at.to_sql(ty, out),
            Cell::Bytes(bytes) => bytes.to_sql(ty, out),
        }
    }

    /// Any type a column may have; which one a cell holds is fixed by its column.
    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
            || <i32 as ToSql>::accepts(ty)
            || <NaiveDate as ToSql>::accepts(ty)
            || <DateTime<Utc> as ToSql>::accepts(ty)
            || <&[u8] as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_binds_one_array_per_column_in_order_and_inserts_in_key_order() {
        let names = USER_LOGINS.column_names().collect::<Vec<_>>().join(", ");
        // The array types written out here, apart from the code that generates them.
        let arrays: Vec<String> = USER_LOGINS
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let element = match c.sql_type {
                    SqlType::Varchar(_) => "text",
                    SqlType::Integer => "int4",
                    SqlType::Date => "date",
                    SqlType::Timestamptz => "timestamptz",
                    SqlType::Bytea => "bytea",
                };
                format!("${}::{element}[]", i + 1)
            })
            .collect();
        assert_eq!(
            USER_LOGINS.insert_sql(),
            format!(
                "INSERT INTO login_data.user_logins ({names}) SELECT r.* FROM UNNEST({}) AS r({names}) \
                 ORDER BY r.sqs_message_id COLLATE \"C\", r.create_date ON CONFLICT DO NOTHING",
                arrays.join(", ")
            )
        );
        assert_eq!(
            USER_LOGINS.copy_sql(),
            format!("COPY login_data.user_logins ({names}) FROM STDIN (FORMAT binary)")
        );
    }

    /// A row whose every text value is its own column's name: a described column that
    /// reads another column's field (two adjacent varchar columns swapped) shows at once.
    #[test]
    fn each_column_reads_its_own_field() {
        use crate::crypto::BlindIndex;
        use crate::event::LoginEvent;

        let body = r#"{"user_id": "user_id", "app_version": "2.3.0", "device_type": "device_type",
                       "ip": "192.0.2.1", "locale": "locale", "device_id": "d"}"#;
        let (details, _, _) = LoginEvent::parse(body).expect("valid").into_parts();
        let sent_at = DateTime::from_timestamp_millis(1_763_625_600_000).expect("time");
        let mask =
            |text: &str| BlindIndex::parse(&format!("{:0>64}", hex::encode(text))[..64]).expect("mask");
        let row = LoginRow {
            sqs_message_id: "sqs_message_id".into(),
            sent_at,
            details,
            masked_ip: mask("ip"),
            masked_device_id: mask("device"),
            index_key_version: 7,
        };
        for column in USER_LOGINS.columns {
            let cell = column.cell(&row);
            match (column.name, cell) {
                ("masked_ip", Cell::Text(text)) => assert_eq!(text, row.masked_ip.as_str()),
                ("masked_device_id", Cell::Text(text)) => assert_eq!(text, row.masked_device_id.as_str()),
                ("app_version_raw", Cell::Text(text)) => assert_eq!(text, "2.3.0"),
                ("app_version", Cell::Int4(n)) => assert_eq!(n, 2_003_000),
                ("index_key_version", Cell::Int4(n)) => assert_eq!(n, 7),
                ("create_date", Cell::Date(date)) => assert_eq!(date, sent_at.date_naive()),
                ("sent_at", Cell::Timestamptz(at)) => assert_eq!(at, sent_at),
                (name, Cell::Text(text) | Cell::OptionalText(Some(text))) => assert_eq!(text, name),
                (name, other) => panic!("{name} reads {other:?}"),
            }
        }
    }

    #[test]
    fn column_names_are_distinct_and_the_key_is_a_column() {
        let names: Vec<&str> = USER_LOGINS.column_names().collect();
        let mut distinct = names.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), names.len());
        assert!(USER_LOGINS.key.iter().all(|k| names.contains(k)));
        assert!(
            USER_LOGINS.partition_key.is_none_or(|p| USER_LOGINS.key.contains(&p)),
            "the key holds the partition key"
        );
        assert!(USER_LOGINS.filled_by_table.iter().all(|c| !names.contains(c)));
    }
}
