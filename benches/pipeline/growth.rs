//! Growth (issue 19): the largest batch into a database that already holds years of
//! logins. Each database is prefilled by SQL (not through the handler: minutes, not
//! hours), its rows spread evenly over the 12 months that end with the batches' month, so
//! the current partition holds a whole month's share (the end of a month: its largest).
//! The vault is filled alongside, at one value per four logins (one run: one per login).
//!
//! Each prefilled month is built as the maintenance would never build it but a bulk load
//! may: a standalone table filled without indexes, indexed by sorting, then attached
//! (its indexes are adopted by the parent's). The result is the same table, indexes and
//! partitions as months of ingest would leave, vacuumed and analyzed as autovacuum would.
//!
//! Each filled database is measured against an empty one with the same partitions, batch
//! for batch alternated, so that the ratio holds on a machine whose load changes during the
//! long run: first as the fill leaves it, then, when it fits in shared_buffers, with its
//! hot set read in.
//!
//! `BENCH_GROWTH_ROWS` (default `10000000,50000000`) lists the sizes;
//! `BENCH_GROWTH_FULL_VAULT_ROWS` (default 10,000,000; `0` skips it) the size of the run
//! with one vault row per login; `BENCH_GROWTH_MONTHS` (default 12) the months the logins
//! are spread over (60: the same total as five years of a smaller rate);
//! `PARTITION_INTERVAL=day` prefills every month as a partition per day, as the maintenance
//! with that setting makes them (default: a partition per month).

use std::time::{Duration, Instant};

use chrono::{Datelike, Months, NaiveDate};
use login_etl::{App, handler};
use login_etl_core::store::partitions::{self, Interval, Window};
use testkit::TestDb;

use super::{FIRST_SENT_MS, LARGEST_BATCH, cold_start, counted_kms, decode, event_bytes_from, ms, smoke};

/// One database size to measure.
struct Fill {
    logins: u64,
    /// Vault rows per login: 1 in 4, or 1.
    vault_per_login: (u64, u64),
}

fn sizes() -> Vec<Fill> {
    let list = |var: &str, default: &str| -> Vec<u64> {
        std::env::var(var)
            .unwrap_or_else(|_| default.to_owned())
            .split(',')
            .filter_map(|n| n.trim().replace('_', "").parse().ok())
            .collect()
    };
    let (quarter, full) = if smoke() {
        (vec![24_000], vec![24_000])
    } else {
        (list("BENCH_GROWTH_ROWS", "10000000,50000000"), list("BENCH_GROWTH_FULL_VAULT_ROWS", "10000000"))
    };
    let mut fills: Vec<Fill> =
        quarter.into_iter().map(|logins| Fill { logins, vault_per_login: (1, 4) }).collect();
    fills.extend(full.into_iter().filter(|n| *n > 0).map(|logins| Fill { logins, vault_per_login: (1, 1) }));
    fills
}

/// The batches' date (their `SentTimestamp`s' UTC date).
fn batch_date() -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(FIRST_SENT_MS).expect("a valid timestamp").date_naive()
}

/// The batches' month.
fn batch_month() -> NaiveDate {
    batch_date().with_day(1).expect("day 1")
}

/// `PARTITION_INTERVAL`, as the maintenance reads it.
fn interval() -> Interval {
    Interval::from_setting(std::env::var("PARTITION_INTERVAL").ok().as_deref()).expect("PARTITION_INTERVAL")
}

/// The partition the batches go to: their month's, or their day's.
fn batch_partition() -> String {
    let (from, to) = match interval() {
        Interval::Month => (batch_month(), partitions::next_month(batch_month())),
        Interval::Day => (batch_date(), batch_date().succ_opt().expect("a day")),
    };
    format!("login_data.{}", partitions::partition_name(from, to))
}

pub async fn growth(out: &mut Vec<String>) {
    let reps = if smoke() { 2 } else { 7 };
    let size = if smoke() { 200 } else { LARGEST_BATCH };
    out.push(format!(
        "## Growth: {size}-message batches into a database already holding N logins over {} months, \
         against an empty one, alternated ({reps} batches each after a first one, fresh values each, medians)",
        months()
    ));
    out.push(
        "| logins before | vault rows before | current partition (rows, table + indexes) | prefill | the filled database's buffers | first batch after the fill | messages/s, empty | messages/s, filled | filled ÷ empty |"
            .into(),
    );
    out.push("| --- | --- | --- | --- | --- | --- | --- | --- | --- |".into());
    for fill in sizes() {
        let (empty, filled) = (TestDb::empty().await, TestDb::empty().await);
        let mut admin = filled.connect().await;
        login_etl_migrations::migrate(&mut admin).await.expect("migrations apply");
        let started = Instant::now();
        let vault_rows = prefill(&admin, &fill).await;
        let prefill_time = started.elapsed();
        // Every other partition a batch may need, as the maintenance makes them; the empty
        // database gets the same partitions, so that only the rows differ.
        let today = chrono::Utc::now().date_naive();
        let days_back = u32::try_from((today - first_month()).num_days()).unwrap_or(0);
        let window = Window::around(today, days_back, 1);
        partitions::ensure(&mut admin, window, interval()).await.expect("partitions");
        let mut empty_admin = empty.connect().await;
        login_etl_migrations::migrate(&mut empty_admin).await.expect("migrations apply");
        partitions::ensure(&mut empty_admin, window, interval()).await.expect("partitions");
        let partition = batch_partition();
        let (current_rows, current_bytes): (i64, i64) = {
            let row = admin
                .query_one(
                    &format!("SELECT count(*), pg_total_relation_size('{partition}') FROM {partition}"),
                    &[],
                )
                .await
                .expect("current partition");
            (row.get(0), row.get(1))
        };

        let (kms, _) = counted_kms().await;
        let (empty_app, filled_app) = (cold_start(&empty, &kms).await, cold_start(&filled, &kms).await);
        // Values numbered far above the prefill's: every batch brings new ones, as a
        // growing user base does; each batch's 30 % repeats are its own.
        let value_base = 1_000_000_000usize;
        let batch = |rep: usize, db: &str| {
            event_bytes_from(size, &format!("g{}{db}r{rep}", fill.logins), rep * 13, value_base + rep * size)
        };
        handler::handle_with_stats(&empty_app, decode(&batch(0, "e"))).await.expect("warm-up");
        let first = {
            let bytes = batch(0, "f");
            let started = Instant::now();
            handler::handle_with_stats(&filled_app, decode(&bytes)).await.expect("first batch");
            started.elapsed()
        };
        let (empty_rate, filled_rate) = alternate(&empty_app, &filled_app, reps, size, &batch, 1).await;
        let row = |state: &str, first: String, empty_rate: f64, filled_rate: f64| {
            format!(
                "| {} | {} | {} rows, {} | {} | {state} | {first} | {:.0} | {:.0} | {:.2} |",
                thousands(fill.logins),
                thousands(vault_rows),
                thousands(u64::try_from(current_rows).unwrap_or(0)),
                megabytes(current_bytes),
                human(prefill_time),
                empty_rate,
                filled_rate,
                filled_rate / empty_rate,
            )
        };
        out.push(row("as left by the fill", format!("{:.0} ms", ms(first)), empty_rate, filled_rate));
        // A database that has taken ingest for hours holds what each insert touches (the
        // month's indexes, the vault's key) in shared buffers, if they fit; the fill's bulk
        // statements leave them on disk. Measured again with them read in, when they fit.
        let (hot_bytes, buffer_bytes) = hot_set(&admin, &partition).await;
        if hot_bytes < buffer_bytes * 3 / 4 {
            admin
                .batch_execute(&format!(
                    "CREATE EXTENSION IF NOT EXISTS pg_prewarm;
                     SELECT pg_prewarm(indexrelid) FROM ({}) hot",
                    hot_set_query(&partition)
                ))
                .await
                .expect("prewarm");
            let (empty_rate, filled_rate) =
                alternate(&empty_app, &filled_app, reps, size, &batch, reps + 1).await;
            let state = format!("its hot set ({}) read in", megabytes(hot_bytes));
            out.push(row(&state, "–".into(), empty_rate, filled_rate));
        } else {
            eprintln!(
                "bench: growth {} logins: the hot set ({}) does not fit in shared_buffers ({}): no warm run",
                fill.logins,
                megabytes(hot_bytes),
                megabytes(buffer_bytes)
            );
        }
        eprintln!("bench: growth {} logins done", fill.logins);
    }
}

/// `reps` batches into each database, alternated (which goes first flips each time);
/// their median rates, (empty, filled). `first_rep` keeps each batch's values new.
async fn alternate(
    empty_app: &App,
    filled_app: &App,
    reps: usize,
    size: usize,
    batch: &impl Fn(usize, &str) -> Vec<u8>,
    first_rep: usize,
) -> (f64, f64) {
    let (mut empty_times, mut filled_times) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for rep in first_rep..first_rep + reps {
        let mut runs = [(empty_app, "e", &mut empty_times), (filled_app, "f", &mut filled_times)];
        if rep % 2 == 0 {
            runs.reverse();
        }
        for (app, db, times) in runs {
            let bytes = batch(rep, db);
            let started = Instant::now();
            handler::handle_with_stats(app, decode(&bytes)).await.expect("batch");
            times.push(started.elapsed());
        }
    }
    let rate = |times: Vec<Duration>| size as f64 / super::median(times).as_secs_f64();
    (rate(empty_times), rate(filled_times))
}

/// What a batch's inserts touch at random: the current month's indexes and the vault's
/// key (the vault's other index and the tables take their rows at their ends).
fn hot_set_query(partition: &str) -> String {
    format!(
        "SELECT indexrelid FROM pg_index WHERE indrelid = '{partition}'::regclass
         UNION ALL SELECT 'vault.pii_vault_blind_index_key'::regclass"
    )
}

/// The hot set's size and shared_buffers', in bytes.
async fn hot_set(admin: &tokio_postgres::Client, partition: &str) -> (i64, i64) {
    let row = admin
        .query_one(
            &format!(
                "SELECT (SELECT sum(pg_relation_size(indexrelid))::bigint FROM ({}) hot),
                        (SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers')",
                hot_set_query(partition)
            ),
            &[],
        )
        .await
        .expect("hot set");
    (row.get(0), row.get(1))
}

/// How many months the prefill spreads its logins over.
fn months() -> u32 {
    std::env::var("BENCH_GROWTH_MONTHS").ok().and_then(|m| m.parse().ok()).filter(|m| *m > 0).unwrap_or(12)
}

/// The first of the prefilled months.
fn first_month() -> NaiveDate {
    batch_month().checked_sub_months(Months::new(months() - 1)).expect("a date")
}

/// Fills `user_logins` (`months()` months, a month's rows a standalone table indexed then
/// attached) and the vault; the vault's row count.
async fn prefill(admin: &tokio_postgres::Client, fill: &Fill) -> u64 {
    admin
        .batch_execute("SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 2; SET TimeZone = 'UTC'")
        .await
        .expect("settings");
    let (num, den) = fill.vault_per_login;
    // Distinct values per field: the vault holds both fields' values.
    let values_per_field = (fill.logins * num / den / 2).max(1);
    if fill.logins > 0 {
        let per_month = fill.logins / u64::from(months());
        for k in 0..months() {
            let from = first_month().checked_add_months(Months::new(k)).expect("a month");
            let to = from.checked_add_months(Months::new(1)).expect("a month");
            let rows = if k == months() - 1 { fill.logins - per_month * u64::from(k) } else { per_month };
            let first_row = per_month * u64::from(k);
            // The month's partitions: itself, or one per day.
            let days = if interval() == Interval::Day { (to - from).num_days() } else { 1 };
            let pieces = u64::try_from(days).unwrap_or(1);
            for piece in 0..pieces {
                let piece_from = from + chrono::Days::new(piece);
                let piece_to = if piece + 1 == pieces { to } else { from + chrono::Days::new(piece + 1) };
                let (piece_first, piece_rows) =
                    (first_row + rows * piece / pieces, rows * (piece + 1) / pieces - rows * piece / pieces);
                fill_range(admin, piece_from, piece_to, piece_first, piece_rows, values_per_field).await;
            }
        }
    }
    let vault_rows = if fill.logins == 0 { 0 } else { values_per_field * 2 };
    if vault_rows > 0 {
        // The keys dropped while loading and made again as V18 makes them; the values
        // vaulted over the months, in their order.
        admin
            .batch_execute(&format!(
                "ALTER TABLE vault.pii_vault DROP CONSTRAINT pii_vault_blind_index_key;
                 DROP INDEX vault.pii_vault_vaulted_order;
                 INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext, created_at)
                 SELECT f.field, encode(sha256(convert_to(f.prefix || g, 'UTF8')), 'hex'), 1,
                        substr(sha256(convert_to('n' || g, 'UTF8')), 1, 12), sha256(convert_to('c' || g, 'UTF8')),
                        '{first}'::timestamptz + interval '1 day' * ({days}::float8 * g / {values})
                   FROM generate_series(0::bigint, {last}::bigint) g, (VALUES ('ip', 'ip'), ('device_id', 'dev')) f(field, prefix);
                 ALTER TABLE vault.pii_vault ADD CONSTRAINT pii_vault_blind_index_key EXCLUDE USING hash (blind_index WITH =);
                 CREATE INDEX pii_vault_vaulted_order ON vault.pii_vault (created_at, field, blind_index);",
                first = first_month(),
                days = (batch_month() - first_month()).num_days() + 30,
                values = values_per_field,
                last = values_per_field - 1
            ))
            .await
            .expect("vault prefill");
        admin.batch_execute("VACUUM (ANALYZE) vault.pii_vault").await.expect("vacuum");
    }
    admin.batch_execute("CHECKPOINT").await.expect("checkpoint");
    vault_rows
}

/// One partition's range (a month, or a day) of `rows` logins, `sent_at` spread evenly
/// over it, masks drawn from `values_per_field` values per field (the same masks the
/// vault's rows carry).
async fn fill_range(
    admin: &tokio_postgres::Client,
    from: NaiveDate,
    to: NaiveDate,
    first_row: u64,
    rows: u64,
    values_per_field: u64,
) {
    let name = format!("login_data.{}", partitions::partition_name(from, to));
    let seconds = (to - from).num_seconds();
    let last_row = first_row + rows.max(1) - 1;
    let sql = format!(
        "CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING STORAGE);
         INSERT INTO {name} (user_id, device_type, masked_ip, masked_device_id, locale, app_version,
                             create_date, sqs_message_id, app_version_raw, sent_at, index_key_version)
         SELECT 'user-' || g, CASE WHEN g % 2 = 0 THEN 'android' ELSE 'ios' END,
                encode(sha256(convert_to('ip' || (g * 7919 % {values_per_field}), 'UTF8')), 'hex'),
                encode(sha256(convert_to('dev' || (g * 104729 % {values_per_field}), 'UTF8')), 'hex'),
                CASE WHEN g % 100 < 29 THEN NULL ELSE 'DE' END, 230,
                t::date, md5('m' || g)::uuid::text, '2.3.0', t, 1
           FROM generate_series({first_row}::bigint, {last_row}::bigint) g,
                LATERAL (SELECT timestamptz '{from} 00:00:00+00'
                                + make_interval(secs => (g - {first_row}) * {seconds}::float8 / {rows_or_one})) s(t)
          WHERE {rows} > 0;
         ALTER TABLE {name} ADD PRIMARY KEY (sqs_message_id, create_date);
         CREATE INDEX ON {name} USING hash (masked_ip);
         CREATE INDEX ON {name} USING hash (masked_device_id);
         CREATE INDEX ON {name} USING brin (sent_at);
         ALTER TABLE {name} OWNER TO {owner};
         ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES FROM ('{from}') TO ('{to}');",
        parent = partitions::PARENT,
        owner = partitions::OWNER_ROLE,
        rows_or_one = rows.max(1),
    );
    admin.batch_execute(&sql).await.expect("month prefill");
    // Each index adopted by one of the parent's (V17: hash on the masks), none built twice:
    // the month is indexed as ingest would have left it.
    let indexes = |table: &str| format!("SELECT count(*) FROM pg_index WHERE indrelid = '{table}'::regclass");
    let month: i64 = admin.query_one(&indexes(&name), &[]).await.expect("indexes").get(0);
    let parent: i64 = admin.query_one(&indexes(partitions::PARENT), &[]).await.expect("indexes").get(0);
    assert_eq!(month, parent, "{name}: the prefill's indexes are the schema's");
    // A statement of its own: VACUUM runs outside a transaction block.
    admin.batch_execute(&format!("VACUUM (ANALYZE) {name}")).await.expect("vacuum");
}

fn thousands(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.0} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn megabytes(bytes: i64) -> String {
    format!("{:.0} MB", bytes as f64 / 1_048_576.0)
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 60 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
