//! A database of each test's own on the stack's PostgreSQL, and logins in its roles.

use std::sync::Mutex;

use login_etl_core::config::{Config, database};

use login_etl_core::store::partitions::{self, Interval, Window};

use crate::{env, unique_suffix};

/// The oldest date a test's message carries (`attack.rs`' and `quarantine.rs`' backdated
/// replays, 2025-01-02; the events' own `FIRST_SENT_MS` is 2025-11-20).
pub const OLDEST_TEST_DATE: &str = "2025-01-01";
/// Months made ahead of today's, as the maintenance's default.
pub const TEST_MONTHS_AHEAD: u32 = partitions::DEFAULT_MONTHS_AHEAD;

/// The months a test database has partitions for: [`OLDEST_TEST_DATE`]'s to
/// [`TEST_MONTHS_AHEAD`] after today's.
pub fn test_window() -> Window {
    let today = chrono::Utc::now().date_naive();
    let oldest: chrono::NaiveDate = OLDEST_TEST_DATE.parse().expect("date");
    let days_back = u32::try_from((today - oldest).num_days()).unwrap_or(0);
    Window::around(today, days_back, TEST_MONTHS_AHEAD)
}

/// A database of this test's own, migrated; dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub config: tokio_postgres::Config,
    admin: tokio_postgres::Config,
    /// Login roles made for this test (cluster-wide): dropped after the database.
    logins: Mutex<Vec<String>>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let db = TestDb::empty().await;
        let mut client = db.connect().await;
        login_etl_migrations::migrate(&mut client).await.expect("migrations apply");
        db.make_partitions(&mut client).await;
        db
    }

    /// Migrated up to and including `version`, as an earlier release left it.
    pub async fn at_version(version: i32) -> TestDb {
        let db = TestDb::empty().await;
        let mut client = db.connect().await;
        login_etl_migrations::migrate_to(&mut client, version).await.expect("migrations apply");
        if version >= login_etl_migrations::PARTITIONED {
            db.make_partitions(&mut client).await;
        }
        db
    }

    /// Applies the migrations still pending, then makes the partitions; their names.
    pub async fn migrate(&self) -> Vec<String> {
        let mut client = self.connect().await;
        let applied = login_etl_migrations::migrate(&mut client).await.expect("migrations apply");
        self.make_partitions(&mut client).await;
        applied
    }

    /// `user_logins`'s partitions, made as the scheduled maintenance makes them (the one
    /// code path, with its default interval, months), for [`test_window`]: every month a
    /// test's message may carry.
    pub async fn make_partitions(&self, client: &mut tokio_postgres::Client) {
        partitions::ensure(client, test_window(), Interval::Month).await.expect("partitions made");
    }

    /// Created but not migrated.
    pub async fn empty() -> TestDb {
        let admin = database::parse_database_url(&env("DATABASE_URL")).expect("DATABASE_URL parses").config;
        let name = format!("etl_test_{}", unique_suffix());
        let admin_client = connect(&admin).await;
        admin_client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        let mut config = admin.clone();
        config.dbname(&name);
        TestDb { name, config, admin, logins: Mutex::default() }
    }

    /// A new login in `group` (e.g. `login_etl_analyst`) and the config to connect as it.
    pub async fn login_in(&self, group: &str) -> tokio_postgres::Config {
        let login = format!(
            "{}_{}_{}",
            self.name,
            group.trim_start_matches("login_etl_"),
            self.logins.lock().expect("logins").len()
        );
        self.admin_connect()
            .await
            .batch_execute(&format!("CREATE ROLE {login} LOGIN IN ROLE {group}"))
            .await
            .expect("create login role");
        self.logins.lock().expect("logins").push(login.clone());
        let mut config = self.config.clone();
        config.user(&login);
        config
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.config).await
    }

    /// A connection to the database `DATABASE_URL` names (not this test's).
    pub async fn admin_connect(&self) -> tokio_postgres::Client {
        connect(&self.admin).await
    }

    /// A real fault inside the database: a statement-level BEFORE INSERT trigger on `table`
    /// runs `action` (PL/pgSQL; `call` is this statement's number, from 1) on each INSERT.
    /// The calls are counted in a sequence, which a rollback does not undo.
    /// The sequence and the function go in the table's schema (`table` may be qualified).
    pub async fn fault_on_insert(&self, table: &str, action: &str) {
        let trigger = table.rsplit('.').next().unwrap_or(table);
        self.connect()
            .await
            .batch_execute(&format!(
                "CREATE SEQUENCE {table}_fault_calls;
                 CREATE FUNCTION {table}_fault() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
                     SET search_path = public, pg_catalog AS
                     $$ DECLARE call bigint := nextval('{table}_fault_calls');
                        BEGIN {action} RETURN NULL; END $$;
                 CREATE TRIGGER {trigger}_fault BEFORE INSERT ON {table}
                     FOR EACH STATEMENT EXECUTE FUNCTION {table}_fault();"
            ))
            .await
            .expect("fault trigger");
    }

    /// Makes every INSERT into `table` raise `message`.
    pub async fn fail_inserts_into(&self, table: &str, message: &str) {
        self.fault_on_insert(table, &format!("RAISE EXCEPTION '{message}';")).await;
    }

    /// How many INSERT statements into `table` the fault trigger saw.
    pub async fn fault_calls(&self, table: &str) -> i64 {
        self.count(&format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {table}_fault_calls"))
            .await
    }

    /// What the audit's owner can do: removes the audit's entries after `last_kept` (the
    /// trigger in the way is disabled, then enabled again) and moves the chain head back
    /// to it, so that the service goes on from there.
    pub async fn cut_audit_tail(&self, last_kept: i64) {
        self.connect()
            .await
            .batch_execute(&format!(
                "SET ROLE login_etl_audit_owner;
                 ALTER TABLE pii_audit_log.pii_audit_entries DISABLE TRIGGER pii_audit_append_only;
                 DELETE FROM pii_audit_log.pii_audit_entries WHERE seq > {last_kept};
                 UPDATE pii_audit_log.pii_audit_chain_head SET (seq, chain) =
                     (SELECT seq, chain FROM pii_audit_log.pii_audit_entries WHERE seq = {last_kept});
                 ALTER TABLE pii_audit_log.pii_audit_entries ENABLE TRIGGER pii_audit_append_only"
            ))
            .await
            .expect("the owner cuts the audit's tail");
    }

    /// Flips one bit of the ciphertext of the vault row (`field`, `mask`), as an attacker
    /// with write access to the table would: opening it must then fail.
    pub async fn tamper_vault_row(&self, field: &str, mask: &str) {
        self.connect()
            .await
            .execute(
                "UPDATE vault.pii_vault SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)
                  WHERE field = $1 AND blind_index = $2",
                &[&field, &mask],
            )
            .await
            .expect("tamper");
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.connect().await.query_one(sql, &[]).await.expect(sql).get(0)
    }

    /// The first column of each row of `sql`, as text.
    pub async fn texts(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<String> {
        self.connect().await.query(sql, params).await.expect(sql).iter().map(|r| r.get(0)).collect()
    }

    /// `user_logins`'s partitions, by name.
    pub async fn partition_names(&self) -> Vec<String> {
        self.texts(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'login_data.user_logins'::regclass ORDER BY 1",
            &[],
        )
        .await
    }

    /// Leaves `partition` pending detach, as an interrupted retention run does: its
    /// `DETACH … CONCURRENTLY` waits for an open read and gives up at its lock timeout.
    pub async fn leave_pending_detach(&self, partition: &str) {
        let reader = self.connect().await;
        reader
            .batch_execute("BEGIN; SELECT count(*) FROM login_data.user_logins")
            .await
            .expect("an open read");
        let interrupted = self.connect().await;
        interrupted.batch_execute("SET lock_timeout = 300").await.expect("set");
        let error = interrupted
            .batch_execute(&format!(
                "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.{partition} CONCURRENTLY"
            ))
            .await
            .expect_err("its wait for the read times out");
        assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE));
        reader.batch_execute("COMMIT").await.expect("read ends");
    }

    /// The function's configuration against this database.
    pub fn app_config(&self) -> Config {
        Config {
            database: self.config.clone().into(),
            kms_key_id: String::new(),
            pool_size: 2,
            retry_budget: login_etl_core::config::DEFAULT_RETRY_BUDGET,
            outage: Default::default(),
            replay_queue_arn: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        let logins = std::mem::take(&mut *self.logins.lock().unwrap_or_else(|e| e.into_inner()));
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let client = connect(&admin).await;
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()?;
                for login in logins {
                    client.batch_execute(&format!("DROP ROLE IF EXISTS {login}")).await.ok()?;
                }
                Some(())
            })
        })
        .join();
    }
}

/// The message ids in the quarantine, sorted bytewise.
pub async fn quarantined_ids(db: &TestDb) -> Vec<String> {
    db.connect()
        .await
        .query(
            "SELECT message_id FROM login_data.login_quarantine ORDER BY message_id COLLATE \"C\", attempt",
            &[],
        )
        .await
        .expect("quarantine")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The masks a quarantined message holds (`login_quarantine_masks`): (field, blind index),
/// sorted.
pub async fn quarantine_masks(db: &TestDb, message_id: &str) -> Vec<(String, String)> {
    db.connect()
        .await
        .query(
            "SELECT field::text, blind_index::text FROM login_data.login_quarantine_masks WHERE message_id = $1
              ORDER BY field, blind_index",
            &[&message_id],
        )
        .await
        .expect("masks")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// A connection with the function's own connect (TLS as the config asks).
pub async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    database::connect(&config.clone().into()).await.expect("connect to test Postgres")
}

/// A `postgres://` URL for a TCP config of the test server (for binaries run as processes).
pub fn url_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the test server must be reached over TCP, not {other:?}"),
    };
    format!(
        "postgres://{}@{host}:{}/{}",
        config.get_user().expect("user"),
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().expect("dbname")
    )
}

/// Runs each of `statements` on `client` and asserts each is refused for want of a right
/// (SQLSTATE 42501), naming `who` and the statement when one is not.
pub async fn assert_refused_for_rights(client: &tokio_postgres::Client, who: &str, statements: &[&str]) {
    for sql in statements {
        let error = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{who}: {sql}: {error}"
        );
    }
}
