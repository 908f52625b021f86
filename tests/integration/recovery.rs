//! Least-privilege roles and the `pii-vault` operations, on real Postgres logins in the
//! migrations' roles and the moto KMS.

use login_etl::App;
use login_etl::crypto::{BlindIndex, PiiField};
use login_etl::error::report;
use login_etl::handler;
use login_etl::keys::{self, DataKeyCache};
use login_etl::recovery::{self, RecoveryError};
use testkit::*;
use tokio_postgres::error::SqlState;

async fn denied(client: &tokio_postgres::Client, sql: &str) {
    let error = client.batch_execute(sql).await.expect_err(sql);
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
}

async fn allowed(client: &tokio_postgres::Client, sql: &str) {
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The function, running as a login in the writer role, loads the exercise's queue.
async fn loaded_by_writer(db: &TestDb, kms: &login_etl::keys::Kms) -> App {
    let mut config = db.app_config();
    config.database = db.login_in("login_etl_writer").await;
    let app = App::init(&config, kms).await.expect("the writer creates the first keys");
    let response = handler::handle(&app, load_event("events/login-queue-100.json")).await.expect("batch");
    assert_eq!(response.batch_item_failures.len(), 1);
    app
}

#[tokio::test]
async fn each_role_reaches_exactly_what_it_must() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let mask = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    let reveal = format!("SELECT * FROM pii_reveal('ip', '{mask}', 'role test', 'tester')");

    let writer = connect(&db.login_in("login_etl_writer").await).await;
    allowed(&writer, "SELECT count(*) FROM pii_keys").await;
    denied(&writer, "SELECT * FROM pii_vault").await;
    denied(&writer, "SELECT * FROM user_logins").await;
    denied(&writer, "DELETE FROM user_logins").await;
    denied(&writer, &reveal).await;

    let analyst = connect(&db.login_in("login_etl_analyst").await).await;
    allowed(&analyst, "SELECT masked_ip, masked_device_id FROM user_logins").await;
    denied(&analyst, "SELECT * FROM pii_vault").await;
    denied(&analyst, "SELECT * FROM pii_keys").await;
    denied(&analyst, "SELECT * FROM pii_audit").await;
    denied(&analyst, "INSERT INTO user_logins (user_id) VALUES ('x')").await;
    denied(&analyst, &reveal).await;
    denied(&analyst, &format!("SELECT pii_forget('ip', '{mask}', 'r', 'a')")).await;

    let reader = connect(&db.login_in("login_etl_vault_reader").await).await;
    denied(&reader, "SELECT * FROM pii_vault").await;
    denied(&reader, "UPDATE pii_audit SET reason = 'x'").await;
    denied(&reader, "DELETE FROM pii_audit").await;
    denied(&reader, "INSERT INTO pii_audit (actor, action, field, blind_index, reason, outcome) VALUES ('a','reveal','ip','x','r','unknown')").await;
    let before = db.count("SELECT count(*) FROM pii_audit").await;
    let row = reader.query_one(&reveal, &[]).await.expect("reveal through the function");
    assert_eq!(row.get::<_, String>(0), "revealed");
    assert_eq!(db.count("SELECT count(*) FROM pii_audit").await, before + 1);
    let audit = db
        .connect()
        .await
        .query_one(
            "SELECT db_user, actor, reason, field, blind_index FROM pii_audit ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .expect("audit row");
    assert!(audit.get::<_, String>(0).contains("vault_reader"), "the login is recorded");
    assert_eq!(audit.get::<_, String>(1), "tester");
    assert_eq!(audit.get::<_, String>(2), "role test");
    assert_eq!(audit.get::<_, String>(4), mask.as_str());

    // Without a reason the function refuses and audits nothing.
    let error = reader
        .query_one(&format!("SELECT * FROM pii_reveal('ip', '{mask}', ' ', 'tester')"), &[])
        .await
        .expect_err("no reason");
    assert_eq!(error.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{error}");
    assert_eq!(db.count("SELECT count(*) FROM pii_audit").await, before + 1);
}

#[tokio::test]
async fn every_sample_login_is_found_by_plaintext_and_revealed_to_the_original() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let reader = connect(&db.login_in("login_etl_vault_reader").await).await;
    let indexer = keys::load_indexer(&reader, &kms).await.expect("index keys");
    let mut data_keys = DataKeyCache::new();

    let logins: Vec<_> = sample_messages().into_iter().filter(|m| m.get("user_id").is_some()).collect();
    for login in &logins {
        let user_id = login["user_id"].as_str().expect("user_id");
        for (field, name) in [(PiiField::Ip, "ip"), (PiiField::DeviceId, "device_id")] {
            let value = login[name].as_str().expect("value");
            let (index, rows) = recovery::find(&reader, &indexer, field, value).await.expect("find");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].user_id.as_deref(), Some(user_id));
            let revealed = recovery::reveal(&reader, &kms, &mut data_keys, field, &index, "test", "tester")
                .await
                .expect("reveal");
            assert_eq!(revealed.value.as_str(), value);
        }
        // By user id: both values of the row.
        let targets = recovery::masks_of_user(&reader, user_id).await.expect("targets");
        assert_eq!(targets.len(), 2);
    }
    assert_eq!(db.count("SELECT count(*) FROM pii_audit WHERE action = 'reveal'").await, 2 * 99);
}

#[tokio::test]
async fn forget_erases_the_value_for_good_and_leaves_the_row() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let reader = connect(&db.login_in("login_etl_vault_reader").await).await;
    let device_id = "593-47-5928";
    let index = app.keyring.indexer.index(PiiField::DeviceId, device_id);

    let outcome = recovery::forget(&reader, PiiField::DeviceId, &index, "erasure request #1", "tester").await;
    assert_eq!(outcome.expect("forget"), "forgotten");

    let mut data_keys = DataKeyCache::new();
    let error =
        recovery::reveal(&reader, &kms, &mut data_keys, PiiField::DeviceId, &index, "check", "tester")
            .await
            .err()
            .expect("erased");
    assert!(matches!(error, RecoveryError::Erased(PiiField::DeviceId)), "{error}");
    assert_eq!(error.exit_code(), 4);
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM user_logins WHERE masked_device_id = '{index}'")).await,
        1,
        "the row and its mask stay"
    );
    // A later message with the same value does not vault it again.
    let again = event(&[("again".into(), login_body("u-again", "192.0.2.55", device_id))]);
    handler::handle(&app, again).await.expect("batch");
    assert_eq!(db.count(&format!("SELECT count(*) FROM pii_vault WHERE blind_index = '{index}'")).await, 0);
    let audit: Vec<String> = db
        .connect()
        .await
        .query("SELECT action || ':' || outcome FROM pii_audit ORDER BY id", &[])
        .await
        .expect("audit")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit, vec!["forget:forgotten".to_string(), "reveal:erased".to_string()]);

    let unknown = BlindIndex::parse(&"ab".repeat(32)).expect("mask");
    let error =
        recovery::reveal(&reader, &kms, &mut data_keys, PiiField::Ip, &unknown, "check", "tester").await;
    assert_eq!(error.err().map(|e| e.exit_code()), Some(3));
}

#[tokio::test]
async fn rotate_and_reencrypt_keep_every_value_and_mask() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let first = loaded_by_writer(&db, &kms).await;
    let owner = db.connect().await;

    let version = recovery::rotate_data_key(&owner, &kms).await.expect("rotate");
    assert_eq!(version, 2);
    // A new cold start seals with version 2; old rows stay readable.
    let second = cold_start(&db, &kms).await;
    assert_eq!(second.keyring.data_key.version(), 2);
    handler::handle(&second, event(&[("new".into(), login_body("u-new", "203.0.113.9", "900-00-0009"))]))
        .await
        .expect("batch");
    assert_eq!(db.count("SELECT count(*) FROM pii_vault WHERE key_version = 2").await, 2);
    let masks_before =
        db.count("SELECT count(DISTINCT masked_ip || masked_device_id) FROM user_logins").await;

    let mut owner = db.connect().await;
    let mut data_keys = DataKeyCache::new();
    let mut reports = 0;
    let done = recovery::reencrypt(&mut owner, &kms, &mut data_keys, 50, |_, _| reports += 1)
        .await
        .expect("reencrypt");
    assert_eq!(done, 198);
    assert!(reports >= 4, "progress is reported per batch");
    assert_eq!(db.count("SELECT count(*) FROM pii_vault WHERE key_version < 2").await, 0);
    // Resumable: a second run finds nothing left.
    assert_eq!(recovery::reencrypt(&mut owner, &kms, &mut data_keys, 50, |_, _| {}).await.expect("again"), 0);

    let reader = connect(&db.login_in("login_etl_vault_reader").await).await;
    let mut reader_keys = DataKeyCache::new();
    for login in sample_messages().iter().filter(|m| m.get("ip").is_some()) {
        let ip = login["ip"].as_str().expect("ip");
        let index = first.keyring.indexer.index(PiiField::Ip, ip);
        assert_eq!(index, second.keyring.indexer.index(PiiField::Ip, ip), "masks unchanged");
        let revealed =
            recovery::reveal(&reader, &kms, &mut reader_keys, PiiField::Ip, &index, "rotation check", "t")
                .await;
        assert_eq!(revealed.expect("reveal").value.as_str(), ip);
    }
    assert_eq!(
        db.count("SELECT count(DISTINCT masked_ip || masked_device_id) FROM user_logins").await,
        masks_before
    );
}

#[tokio::test]
async fn the_tool_refuses_a_reveal_without_reason_and_shows_nothing() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let mask = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    let reader_url = url_of(&db.login_in("login_etl_vault_reader").await);

    let run = |args: &[&str]| pii_vault(&reader_url, args, &[]);
    let output = run(&["reveal", "--masked-ip", mask.as_str()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("a reason is required"));
    assert!(output.stdout.is_empty());
    assert_eq!(db.count("SELECT count(*) FROM pii_audit").await, 0);

    let output = run(&["reveal", "--masked-ip", mask.as_str(), "--reason", "ticket 42", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json[0]["value"], "199.172.111.135");
    assert_eq!(db.count("SELECT count(*) FROM pii_audit").await, 1);

    let output = run(&["audit", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json[0]["reason"], "ticket 42");
}

#[tokio::test]
async fn no_audit_no_reveal_and_the_wrong_role_gets_a_clear_denial() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    let mut data_keys = DataKeyCache::new();

    // The analyst may not call the reveal function at all.
    let analyst = connect(&db.login_in("login_etl_analyst").await).await;
    let error = recovery::reveal(&analyst, &kms, &mut data_keys, PiiField::Ip, &index, "why", "a").await;
    let error = error.err().expect("denied");
    assert!(matches!(error, RecoveryError::PermissionDenied(_)), "{error}");
    assert_eq!(error.exit_code(), 5);

    // If the audit row cannot be written, nothing is shown (fail closed).
    db.fail_inserts_into("pii_audit", "audit storage unavailable (simulated)").await;
    let reader = connect(&db.login_in("login_etl_vault_reader").await).await;
    let result = recovery::reveal(&reader, &kms, &mut data_keys, PiiField::Ip, &index, "why", "a").await;
    let error = result.err().expect("no audit, no reveal");
    assert_eq!(report(&error), "database: audit storage unavailable (simulated) (P0001)");
    assert_eq!(db.count("SELECT count(*) FROM pii_audit").await, 0);
}

#[tokio::test]
async fn the_audit_lists_what_happened_since_a_time() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let reader = connect(&db.login_in("login_etl_vault_reader").await).await;
    let mut data_keys = DataKeyCache::new();
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    recovery::reveal(&reader, &kms, &mut data_keys, PiiField::Ip, &index, "first", "alice")
        .await
        .expect("reveal");
    let between: chrono::DateTime<chrono::Utc> =
        reader.query_one("SELECT clock_timestamp()", &[]).await.expect("now").get(0);
    recovery::reveal(&reader, &kms, &mut data_keys, PiiField::Ip, &index, "second", "bob")
        .await
        .expect("reveal");

    let all = recovery::audit(&reader, None).await.expect("audit");
    assert_eq!(all.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(), vec!["first", "second"]);
    let recent = recovery::audit(&reader, Some(between)).await.expect("audit");
    assert_eq!(recent.len(), 1);
    assert_eq!((recent[0].actor.as_str(), recent[0].action.as_str()), ("bob", "reveal"));
}

/// Runs the `pii-vault` binary against the stack as it runs for staff.
fn pii_vault(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(args)
        .env("VAULT_DATABASE_URL", database_url)
        .env_remove("KMS_KEY_ID")
        .envs(env.iter().copied())
        .output()
        .expect("run pii-vault")
}

#[tokio::test]
async fn a_tampered_vault_row_is_refused_with_its_error_said_once() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let mask = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    db.connect()
        .await
        .execute(
            "UPDATE pii_vault SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)
              WHERE field = 'ip' AND blind_index = $1",
            &[&mask.as_str()],
        )
        .await
        .expect("tamper");

    let reader = url_of(&db.login_in("login_etl_vault_reader").await);
    let output =
        pii_vault(&reader, &["reveal", "--masked-ip", mask.as_str(), "--reason", "tamper check"], &[]);

    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        "pii-vault: vault row: vault ciphertext failed authentication (tampered, moved to another row, or wrong key)"
    );
}

#[tokio::test]
async fn rotate_key_without_kms_key_id_names_the_setting() {
    let db = TestDb::new().await;
    let owner = url_of(&db.config);
    let output = pii_vault(&owner, &["rotate-key"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end(), "pii-vault: configuration: KMS_KEY_ID is not set");
    assert_eq!(db.count("SELECT count(*) FROM pii_keys").await, 0);
}
