//! Keys and faults: concurrent first cold starts, encryption contexts, unreachable
//! database or KMS, a failing transaction, and init errors that name the problem.

use login_etl::App;
use login_etl::app::InitError;
use login_etl::handler::{self, BatchError};
use login_etl_core::crypto::KeyPurpose;
use login_etl_core::crypto::PiiField;
use login_etl_core::error::report;
use login_etl_core::keys::{self, KeyError, Kms, WrappedKey};
use login_etl_core::store;
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_init_keys_end_with_one_key_per_purpose_and_all_instances_agree() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let config = db.app_config();
    // Before init-keys, a cold start fails and names the command that creates them.
    let error = App::init(&config, &kms).await.expect_err("no keys yet");
    assert_eq!(
        report(&error),
        "keys: no index:ip key in pii_keys: create the keys first with `pii-vault admin init-keys`"
    );
    let inits = (0..8).map(|_| {
        let (config, kms) = (db.config.clone(), kms.clone());
        tokio::spawn(async move {
            let client = testkit::connect(&config).await;
            login_etl_core::keys::create_missing_keys(&client, &kms).await
        })
    });
    let mut created = 0;
    for init in inits {
        created += init.await.expect("task").expect("init-keys").len();
    }
    assert_eq!(created, KeyPurpose::ALL.len(), "each key created by exactly one of the racing calls");
    let mut apps = Vec::new();
    for _ in 0..4 {
        apps.push(App::init(&config, &kms).await.expect("init"));
    }

    let client = db.connect().await;
    let per_purpose = client
        .query("SELECT purpose, count(*) FROM vault.pii_keys GROUP BY purpose ORDER BY purpose", &[])
        .await
        .expect("keys");
    let per_purpose: Vec<(String, i64)> = per_purpose.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        per_purpose,
        vec![
            ("audit".into(), 1),
            ("data".into(), 1),
            ("erasure".into(), 1),
            ("index:device_id".into(), 1),
            ("index:ip".into(), 1)
        ]
    );
    // All instances agree: same masks, and each can open what another sealed.
    let index = apps[0].keyring.indexer.index(PiiField::DeviceId, "123-45-6789");
    let sealed = apps[0].keyring.data_key.seal(PiiField::DeviceId, &index, "123-45-6789").expect("seal");
    for app in &apps[1..] {
        assert_eq!(app.keyring.indexer.index(PiiField::DeviceId, "123-45-6789"), index);
        let opened = app.keyring.data_key.open(PiiField::DeviceId, &index, &sealed).expect("open");
        assert_eq!(opened.as_str(), "123-45-6789");
    }
}

#[tokio::test]
async fn keys_are_stored_only_wrapped_and_bound_to_their_encryption_context() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let client = db.connect().await;
    let stored = keys::latest_wrapped_keys(&client).await.expect("keys");
    assert_eq!(stored.len(), KeyPurpose::ALL.len());
    let data = stored.iter().find(|k| k.purpose == KeyPurpose::Data).expect("data key");

    // Unwrapped with its own context it is the key in use.
    let material = kms.unwrap(data).await.expect("unwrap");
    let index = app.keyring.indexer.index(PiiField::Ip, "10.9.8.7");
    let sealed = app.keyring.data_key.seal(PiiField::Ip, &index, "10.9.8.7").expect("seal");
    let reopened = login_etl_core::crypto::DataKey::new(data.version, &material);
    assert_eq!(reopened.open(PiiField::Ip, &index, &sealed).expect("open").as_str(), "10.9.8.7");
    // The stored blob is not the key itself.
    assert!(!data.blob.windows(material.expose().len()).any(|w| w == material.expose()));

    // Presented as another purpose or version, KMS refuses it.
    for wrong in [
        WrappedKey { purpose: KeyPurpose::Index(PiiField::Ip), ..data.clone() },
        WrappedKey { version: data.version + 1, ..data.clone() },
    ] {
        let error = kms.unwrap(&wrong).await.expect_err("wrong context must fail");
        assert!(matches!(error, KeyError::Kms { operation: "Decrypt", .. }), "{error}");
    }
}

/// A server address nothing listens on.
fn unreachable() -> login_etl_core::config::database::Database {
    login_etl_core::config::database::parse_database_url("postgres://postgres@127.0.0.1:1/nowhere")
        .expect("url")
}

#[tokio::test]
async fn database_unreachable_fails_the_invocation_and_writes_nothing() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let cut_off = App { pool: store::stateless_pool(unreachable(), 2).expect("pool"), ..app };

    let result = handler::handle(&cut_off, load_event("events/mixed-batch.json")).await;

    let error = result.expect_err("must fail the whole invocation, not report item failures");
    assert!(matches!(error, BatchError::Store(_)), "{error}");
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 0);
}

#[tokio::test]
async fn a_fault_inside_the_transaction_commits_nothing() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    // The vault rows are the batch's last statement: its login rows are in by then.
    db.fail_inserts_into("vault.pii_vault", "disk full (simulated)").await;

    let error = handler::handle(&app, load_event("events/duplicates.json")).await.expect_err("fault");

    // Said once, outermost context first, with the server's SQLSTATE.
    assert_eq!(report(&error), "batch not written, will be retried: database: disk full (simulated) (P0001)");
    // The login rows of the batch were rolled back with it, and a non-transient error is
    // not retried.
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 0);
    assert_eq!(db.fault_calls("vault.pii_vault").await, 1);
    let diagnostic: lambda_runtime::Diagnostic = error.into();
    assert_eq!(diagnostic.error_type, "BatchNotWritten.Database");
}

#[tokio::test]
async fn init_fails_clearly_when_the_database_is_unreachable() {
    let db = TestDb::new().await;
    let mut config = db.app_config();
    config.database = unreachable();
    let error = App::init(&config, &new_kms().await).await.expect_err("no database");
    assert!(matches!(error, InitError::Database(_)), "{error}");
    assert!(report(&error).starts_with("database unreachable at init: database: "), "{error}");
}

#[tokio::test]
async fn init_fails_clearly_when_kms_is_unreachable() {
    let db = TestDb::new().await;
    init_keys(&db, &new_kms().await).await;
    let client = aws_sdk_kms::Client::new(&sdk_config("http://127.0.0.1:1").await);
    let kms = Kms::new(client, "alias/pii-vault");
    let error = App::init(&db.app_config(), &kms).await.expect_err("no KMS");
    let message = report(&error);
    assert!(message.starts_with("keys: KMS DescribeKey failed"), "{message}");
}

#[tokio::test]
async fn keys_wrapped_under_another_kms_key_or_a_second_index_version_are_refused() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    init_keys(&db, &kms).await;
    let owner = db.connect().await;
    // A second index-key version cannot even be stored: duplicates would stop matching.
    let error = owner
        .execute(
            "INSERT INTO vault.pii_keys (purpose, version, kms_key_id, wrapped_key)
             SELECT purpose, 2, kms_key_id, wrapped_key FROM vault.pii_keys WHERE purpose = 'index:ip'",
            &[],
        )
        .await
        .expect_err("one index key version");
    assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION));
    // A data key wrapped under another KMS key is refused by name at cold start.
    let other = new_kms().await;
    let (_, foreign) = other.generate(KeyPurpose::Data, 2).await.expect("generate");
    keys::insert_wrapped_key(&owner, &foreign).await.expect("stored by the owner");
    let error = App::init(&db.app_config(), &kms).await.expect_err("foreign key");
    let message = report(&error);
    assert!(
        message.starts_with("keys: the data key version 2 in pii_keys is wrapped under KMS key"),
        "{message}"
    );
    assert!(message.contains("not the configured"), "{message}");
}

#[tokio::test]
async fn the_binary_names_a_missing_setting_and_exits_non_zero() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_login-etl"))
        .env_clear()
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run login-etl");
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("DATABASE_URL (or DATABASE_SECRET_ARN) is not set"), "{stdout}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_login-etl"))
        .env_clear()
        .env("AWS_REGION", "us-east-1")
        .env("DATABASE_URL", "postgres://u:hunter2@127.0.0.1:notaport/db")
        .env("KMS_KEY_ID", "alias/pii-vault")
        .output()
        .expect("run login-etl");
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("DATABASE_URL is malformed"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[tokio::test]
async fn the_database_settings_can_come_from_a_secrets_manager_secret() {
    let db = TestDb::new().await;
    let sdk = sdk_config(&std::env::var("AWS_ENDPOINT_URL").expect("env")).await;
    let host = match db.config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("test database must be reached over TCP, not {other:?}"),
    };
    let secret = serde_json::json!({
        "engine": "postgres", "host": host, "port": db.config.get_ports()[0],
        "username": db.config.get_user().expect("user"), "password": "unused-with-trust", "dbname": db.name,
    });
    let arn = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(format!("login-etl/{}", db.name))
        .secret_string(secret.to_string())
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("arn");

    let mut config = db.app_config();
    config.database =
        login_etl_core::config::secrets::database_config(&sdk, &arn).await.expect("read secret");
    let kms = new_kms().await;
    init_keys(&db, &kms).await;
    let app = App::init(&config, &kms).await.expect("init from the secret");
    handler::handle(&app, load_event("events/duplicates.json")).await.expect("batch");
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 6);

    let error = login_etl_core::config::secrets::database_config(
        &sdk,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:none",
    )
    .await
    .expect_err("no such secret");
    assert!(error.to_string().starts_with("DATABASE_SECRET_ARN could not be read"), "{error}");
}

/// The batch's own backend is terminated (57P01) inside its transaction: on `pii_vault`,
/// after the login rows and before the vault rows are inserted.
const KILL_OWN_BACKEND: &str = "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);";

#[tokio::test]
async fn a_connection_killed_inside_the_batch_is_retried_and_the_batch_written_once() {
    let db = TestDb::new().await;
    let mut app = cold_start(&db, &new_kms().await).await;
    app.retry =
        store::RetryPolicy { budget: std::time::Duration::from_secs(60), ..store::RetryPolicy::default() };
    db.fault_on_insert("vault.pii_vault", &format!("IF call = 1 THEN {KILL_OWN_BACKEND} END IF;")).await;

    let (response, stats) =
        handler::handle_with_stats(&app, load_event("events/duplicates.json")).await.expect("retried");

    assert!(response.batch_item_failures.is_empty());
    assert_eq!((stats.retries, stats.written, stats.already_present), (1, 6, 0));
    assert_eq!(db.fault_calls("vault.pii_vault").await, 2);
    // The killed attempt's login rows were rolled back: the retry wrote them, once.
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 6);
    assert_eq!(db.count("SELECT count(DISTINCT sqs_message_id) FROM login_data.user_logins").await, 6);
    assert_eq!(stats.vault_values_added as i64, db.count("SELECT count(*) FROM vault.pii_vault").await);
}

#[tokio::test]
async fn a_connection_killed_on_every_attempt_fails_the_invocation_with_nothing_committed() {
    let db = TestDb::new().await;
    let mut app = cold_start(&db, &new_kms().await).await;
    // A budget far beyond the attempts, so only max_attempts bounds them however slow the machine.
    app.retry = store::RetryPolicy {
        max_attempts: 3,
        budget: std::time::Duration::from_secs(60),
        ..store::RetryPolicy::default()
    };
    db.fault_on_insert("vault.pii_vault", KILL_OWN_BACKEND).await;

    let error = handler::handle(&app, load_event("events/duplicates.json")).await.expect_err("gives up");

    assert!(report(&error).contains("(57P01)"), "{}", report(&error));
    assert_eq!(db.fault_calls("vault.pii_vault").await, 3, "bounded: max_attempts");
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 0, "never half-written");
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault").await, 0);
    // The pool recovers: the next batch on the same instance is written.
    db.connect().await.batch_execute("DROP TRIGGER pii_vault_fault ON vault.pii_vault").await.expect("drop");
    let (_, stats) =
        handler::handle_with_stats(&app, load_event("events/duplicates.json")).await.expect("ok");
    assert_eq!(stats.written, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_in_the_middle_of_a_copied_batch_is_retried_with_the_same_rows() {
    let db = TestDb::new().await;
    let mut app = cold_start(&db, &new_kms().await).await;
    app.retry =
        store::RetryPolicy { budget: std::time::Duration::from_secs(60), ..store::RetryPolicy::default() };
    // 1,000 records go in one COPY; the backend dies at its 600th row. A row trigger
    // counts the rows.
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE SEQUENCE login_rows;
             CREATE FUNCTION kill_at_row_600() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
                 SET search_path = public, pg_catalog AS
                 $$ BEGIN IF nextval('login_rows') = 600 THEN {KILL_OWN_BACKEND} END IF; RETURN NEW; END $$;
             CREATE TRIGGER kill_at_row_600 BEFORE INSERT ON login_data.user_logins
                 FOR EACH ROW EXECUTE FUNCTION kill_at_row_600();"
        ))
        .await
        .expect("row trigger");

    let (response, stats) =
        handler::handle_with_stats(&app, event(&many_logins(1000, "copied"))).await.expect("retried");

    assert!(response.batch_item_failures.is_empty());
    assert_eq!((stats.retries, stats.written, stats.already_present), (1, 1000, 0));
    // The killed attempt reached row 600 (all rolled back), the retry sent all 1,000.
    assert_eq!(db.count("SELECT last_value FROM login_rows").await, 1600);
    assert_eq!(db.count("SELECT count(DISTINCT sqs_message_id) FROM login_data.user_logins").await, 1000);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 1000);
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault").await, 14);
    assert_eq!(stats.vault_values_added, 14);
}
