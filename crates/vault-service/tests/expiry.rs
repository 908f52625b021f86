//! The vault's expiry (docs/security.md, "Expiry"; `pii_vault_service::expiry`), on the
//! real database and KMS: exactly the values no login has carried for the retention are
//! deleted, for both fields; each batch is on the record before it works; an interrupted
//! pass resumes where it stopped; a value seen again is vaulted again and revealable; a
//! value only in a dropped partition expires; ingest racing the expiry never leaves a
//! recent login without its value's vault row; the scheduled function's login reaches
//! nothing else.

// The racing futures nest deep.
#![recursion_limit = "256"]

use std::collections::BTreeSet;
use std::time::Duration;

use login_etl::{App, handler};
use login_etl_core::crypto::PiiField;
use pii_vault_protocol::{Outcome, RevealTarget};
use pii_vault_service::expiry::{self, Retention};
use pii_vault_service::{ServiceError, VaultService};
use testkit::*;
use tokio_postgres::error::SqlState;

const DAY_MS: i64 = 86_400_000;

/// The time `days` ago, in ms since the epoch (a message sent then is dated that UTC day).
fn days_ago(days: i64) -> i64 {
    chrono::Utc::now().timestamp_millis() - days * DAY_MS
}

/// One batch of logins (id, ip, device id), sent `days` ago.
async fn logins(app: &App, days: i64, logins: &[(&str, &str, &str)]) {
    let records: Vec<(String, String)> = logins
        .iter()
        .map(|(id, ip, device)| ((*id).to_owned(), login_body(&format!("user-{id}"), ip, device)))
        .collect();
    let response = handler::handle(app, event_sent_at(&records, days_ago(days))).await.expect("batch");
    assert!(response.batch_item_failures.is_empty());
}

/// Every vault row as `field:mask`.
async fn vaulted(db: &TestDb) -> BTreeSet<String> {
    db.texts("SELECT field || ':' || blind_index FROM vault.pii_vault", &[]).await.into_iter().collect()
}

fn key(app: &App, field: PiiField, value: &str) -> String {
    format!("{}:{}", field.as_str(), app.keyring.indexer.index(field, value).as_str())
}

/// What the database's owner can do: makes every vault row `days` old.
async fn age_vault(db: &TestDb, days: i32) {
    db.connect()
        .await
        .execute("UPDATE vault.pii_vault SET created_at = now() - make_interval(days => $1)", &[&days])
        .await
        .expect("age the vault");
}

/// `pii-vault admin expire` as the CLI runs it: batches until the pass is done.
async fn expire_all(service: &VaultService, batch_size: i64) -> (u64, u64) {
    let (mut scanned, mut expired) = (0, 0);
    loop {
        let batch = service.expire(&key_admin(), batch_size).await.expect("expire");
        (scanned, expired) = (scanned + batch.scanned, expired + batch.expired);
        if batch.done {
            return (scanned, expired);
        }
    }
}

async fn service_keeping(db: &TestDb, kms: &login_etl_core::keys::Kms, retention: Retention) -> VaultService {
    vault_service(db, kms, 100).await.with_vault_retention(retention)
}

#[tokio::test]
async fn expire_removes_exactly_the_values_unseen_for_the_period() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    // 40 days ago: an old pair, and a pair whose ip and device id are seen again today.
    logins(&app, 40, &[("x-old", "192.0.2.1", "dev-old"), ("x-both", "192.0.2.2", "dev-both")]).await;
    // 29 days ago (inside 30 days): kept.
    logins(&app, 29, &[("x-edge", "192.0.2.3", "dev-edge")]).await;
    logins(&app, 0, &[("x-today", "192.0.2.2", "dev-both")]).await;
    age_vault(&db, 100).await;
    // A late message dated 40 days ago, vaulted just now: kept until its row is 30 days old.
    logins(&app, 40, &[("x-late", "192.0.2.4", "dev-late")]).await;
    let before = vaulted(&db).await;
    assert_eq!(before.len(), 8);

    let service = service_keeping(&db, &kms, Retention::days(30).expect("30")).await;
    let (scanned, expired) = expire_all(&service, 1000).await;
    assert_eq!((scanned, expired), (8, 2));

    let gone: BTreeSet<String> = before.difference(&vaulted(&db).await).cloned().collect();
    let expected: BTreeSet<String> =
        [key(&app, PiiField::Ip, "192.0.2.1"), key(&app, PiiField::DeviceId, "dev-old")].into();
    assert_eq!(gone, expected, "exactly the values unseen for 30 days, both fields");
    // The logins keep their masks: duplicates stay visible.
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 5);

    // On the record: each batch a request and its outcome, counts only (no mask).
    let rows = db
        .texts(
            "SELECT caller || '|' || coalesce(outcome, '-') || '|' || coalesce(detail, '-') || '|' ||
                    coalesce(blind_index, '-')
               FROM pii_audit_log.pii_audit WHERE action = 'expire'",
            &[],
        )
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].contains("|done|2 of 8 vault row(s) expired (retention 30 days); pass done|-"),
        "{rows:?}"
    );

    // Run again: nothing left to expire.
    assert_eq!(expire_all(&service, 1000).await, (6, 0));
}

#[tokio::test]
async fn expire_is_recorded_before_it_works_and_only_for_the_key_administrator() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    logins(&app, 40, &[("r-1", "192.0.2.11", "dev-r1")]).await;
    age_vault(&db, 100).await;
    let service = service_keeping(&db, &kms, Retention::days(30).expect("30")).await;

    // Staff may not expire: refused, on the record, nothing deleted.
    let refused = service.expire(&staff("erin"), 1000).await.expect_err("staff");
    assert!(matches!(refused, ServiceError::NotAllowed { .. }), "{refused:?}");
    // A batch size out of bounds is refused on the record too.
    let refused = service.expire(&key_admin(), 0).await.expect_err("batch size 0");
    assert!(matches!(refused, ServiceError::BadRequest(_)), "{refused:?}");

    // The work fails (the service's login lost its DELETE): the request was recorded first.
    db.connect()
        .await
        .batch_execute("REVOKE DELETE ON vault.pii_vault FROM login_etl_vault_service")
        .await
        .expect("revoke");
    let failed = service.expire(&key_admin(), 1000).await.expect_err("no delete right");
    assert!(matches!(failed, ServiceError::Db(_)), "{failed:?}");
    assert_eq!(vaulted(&db).await.len(), 2, "nothing deleted");

    let outcomes = db
        .texts(
            "SELECT caller || '|' || coalesce(outcome, 'pending') FROM pii_audit_log.pii_audit
              WHERE action = 'expire' ORDER BY id",
            &[],
        )
        .await;
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(outcomes[0].contains("pii-vault-staff/erin|refused"), "{outcomes:?}");
    assert!(outcomes[1].ends_with("|refused"), "{outcomes:?}");
    assert!(outcomes[2].contains("pii-vault-key-admin/admin|failed"), "{outcomes:?}");
    // The request entry was committed before the outcome entry, as a request of its own.
    let ordered = db
        .count(
            "SELECT count(*) FROM pii_audit_log.pii_audit_entries r
               JOIN pii_audit_log.pii_audit_entries o ON o.outcome_of = r.id
              WHERE r.action = 'expire' AND r.outcome IS NULL AND o.outcome = 'failed' AND r.seq < o.seq",
        )
        .await;
    assert_eq!(ordered, 1);
}

#[tokio::test]
async fn an_interrupted_expiry_resumes_where_it_stopped() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    logins(
        &app,
        40,
        &[("i-1", "192.0.2.21", "dev-i1"), ("i-2", "192.0.2.22", "dev-i2"), ("i-3", "192.0.2.23", "dev-i3")],
    )
    .await;
    logins(&app, 0, &[("i-4", "192.0.2.24", "dev-i4")]).await;
    age_vault(&db, 100).await;
    let retention = Retention::days(30).expect("30");

    // One batch of 3, then the run is cut off (the process goes away).
    let first = service_keeping(&db, &kms, retention).await.expire(&key_admin(), 3).await.expect("batch");
    assert_eq!((first.scanned, first.done), (3, false));

    // A new process goes on from the cursor: the 5 rows left, not the 8 again.
    let service = service_keeping(&db, &kms, retention).await;
    let (scanned, expired) = expire_all(&service, 3).await;
    assert_eq!(scanned, 5, "resumed after the 3 rows decided, not from the start");
    assert_eq!(first.expired + expired, 6);
    assert_eq!(
        vaulted(&db).await,
        [key(&app, PiiField::DeviceId, "dev-i4"), key(&app, PiiField::Ip, "192.0.2.24")].into()
    );
    // The pass is done: the next one starts at the beginning again.
    assert_eq!(expire_all(&service, 3).await, (2, 0));
}

#[tokio::test]
async fn a_value_seen_again_after_its_expiry_is_vaulted_again_and_revealable() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    let (ip, device) = ("192.0.2.31", "dev-again");
    logins(&app, 40, &[("a-1", ip, device)]).await;
    age_vault(&db, 100).await;
    let service = service_keeping(&db, &kms, Retention::days(30).expect("30")).await;
    assert_eq!(expire_all(&service, 1000).await, (2, 2));
    let mask = app.keyring.indexer.index(PiiField::Ip, ip);
    let by_mask = RevealTarget::Mask { field: PiiField::Ip, mask: mask.as_str().to_owned() };
    let unknown = service.reveal(&staff("erin"), &by_mask, Some(REASON)).await.expect("reveal");
    assert_eq!(unknown[0].outcome, Outcome::Unknown, "an expired value is unknown, as one never seen");

    // Seen again today: the function vaults it again (no marker stopped it).
    logins(&app, 0, &[("a-2", ip, device)]).await;
    assert_eq!(vaulted(&db).await.len(), 2);
    let revealed = service.reveal(&staff("erin"), &by_mask, Some(REASON)).await.expect("reveal");
    assert_eq!(revealed.len(), 1);
    assert_eq!(revealed[0].outcome, Outcome::Revealed);
    assert_eq!(revealed[0].value.as_ref().map(|v| v.expose()), Some(ip));
    // And kept by the next expiry: seen today.
    assert_eq!(expire_all(&service, 1000).await, (2, 0));
}

#[tokio::test]
async fn a_value_only_in_a_dropped_partition_expires_with_it() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    // testkit's events are dated 2025-11-20: the month's partition holds them.
    let records = vec![
        ("d-1".to_owned(), login_body("u-d1", "192.0.2.41", "dev-d1")),
        ("d-2".to_owned(), login_body("u-d2", "192.0.2.42", "dev-d2")),
    ];
    assert!(handler::handle(&app, event(&records)).await.expect("batch").batch_item_failures.is_empty());
    // The second pair is also in a login of today.
    logins(&app, 0, &[("d-3", "192.0.2.42", "dev-d2")]).await;
    // Retention unset (forever): a value in any login, however old, stays.
    let service = service_keeping(&db, &kms, Retention::FOREVER).await;
    assert_eq!(expire_all(&service, 1000).await, (4, 0));

    // The month's partition dropped (what partition retention does): its values go too, and
    // only they.
    db.connect().await.batch_execute("DROP TABLE login_data.user_logins_2025_11").await.expect("drop");
    assert_eq!(expire_all(&service, 1000).await, (4, 2));
    assert_eq!(
        vaulted(&db).await,
        [key(&app, PiiField::DeviceId, "dev-d2"), key(&app, PiiField::Ip, "192.0.2.42")].into()
    );
}

/// Recent logins whose ip or device id has no vault row.
async fn recent_logins_without_their_vault_row(db: &TestDb, days: i32) -> i64 {
    db.connect()
        .await
        .query_one(
            "SELECT count(*) FROM login_data.user_logins u
              WHERE u.create_date >= (now() AT TIME ZONE 'UTC')::date - $1::int4
                AND (NOT EXISTS (SELECT 1 FROM vault.pii_vault v WHERE v.field = 'ip' AND v.blind_index = u.masked_ip)
                     OR NOT EXISTS (SELECT 1 FROM vault.pii_vault v
                                     WHERE v.field = 'device_id' AND v.blind_index = u.masked_device_id))",
            &[&days],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn ingest_racing_expiry_never_leaves_a_recent_login_without_its_vault_row() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    let service = service_keeping(&db, &kms, Retention::days(30).expect("30")).await;
    // Widens the window an expiry without the erasure lock would slip through: each ingest
    // batch waits 100 ms after its vault insert (which found the old rows and did nothing),
    // before its commit makes its logins visible.
    db.connect()
        .await
        .batch_execute(
            "CREATE FUNCTION vault.slow_commit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
                 SET search_path = pg_catalog AS $$ BEGIN PERFORM pg_sleep(0.1); RETURN NULL; END $$;
             CREATE TRIGGER slow_commit AFTER INSERT ON vault.pii_vault
                 FOR EACH STATEMENT EXECUTE FUNCTION vault.slow_commit();",
        )
        .await
        .expect("slow commit");
    let (mut expired_total, rounds) = (0, 12);
    for round in 0..rounds {
        // 60 values of each field, last seen 40 days ago, vaulted long ago: expirable.
        let values: Vec<(String, String, String)> = (0..60)
            .map(|i| {
                (format!("race-{round}-{i}"), format!("198.18.{round}.{i}"), format!("dev-race-{round}-{i}"))
            })
            .collect();
        let old: Vec<(String, String)> =
            values.iter().map(|(id, ip, dev)| (format!("{id}-old"), login_body(id, ip, dev))).collect();
        assert!(
            handler::handle(&app, event_sent_at(&old, days_ago(40)))
                .await
                .expect("old")
                .batch_item_failures
                .is_empty()
        );
        age_vault(&db, 100).await;
        // The same values logged in again today, while the expiry runs (small batches, so
        // the two interleave; the ingest starts at a shifting offset).
        let new: Vec<(String, String)> =
            values.iter().map(|(id, ip, dev)| (format!("{id}-new"), login_body(id, ip, dev))).collect();
        let ingest = async {
            tokio::time::sleep(Duration::from_millis(3 * round)).await;
            handler::handle(&app, event_sent_at(&new, days_ago(0))).await.expect("new")
        };
        let (response, (_, expired)) = tokio::join!(ingest, expire_all(&service, 7));
        assert!(response.batch_item_failures.is_empty());
        expired_total += expired;
        assert_eq!(recent_logins_without_their_vault_row(&db, 30).await, 0, "round {round}");
    }
    // The race was real: some rounds expired values before the ingest wrote them again.
    assert!(expired_total > 0, "the expiry never won a round");
}

#[tokio::test]
async fn the_scheduled_expiry_runs_on_its_own_login_and_reaches_nothing_else() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    logins(&app, 40, &[("s-1", "192.0.2.51", "dev-s1")]).await;
    logins(&app, 0, &[("s-2", "192.0.2.52", "dev-s2")]).await;
    age_vault(&db, 100).await;
    let login = db.login_in("login_etl_vault_expiry").await;
    let pool = login_etl_core::store::stateless_pool(login.clone().into(), 2).expect("pool");
    let scheduled = VaultService::for_schedule(pool, kms.clone(), Retention::days(30).expect("30"));
    let run =
        expiry::run_scheduled(&scheduled, &expiry::schedule_context("req-schedule"), Duration::from_secs(60))
            .await
            .expect("scheduled run");
    assert_eq!((run.scanned, run.expired, run.done), (4, 2, true));
    assert_eq!(vaulted(&db).await.len(), 2);
    // On the record as the schedule, written by its own login, and the chain still holds.
    let entries = db
        .texts(
            "SELECT caller || '|' || db_user || '|' || coalesce(outcome, 'request') FROM pii_audit_log.pii_audit_entries
              WHERE action = 'expire' ORDER BY seq",
            &[],
        )
        .await;
    let user = login.get_user().expect("user");
    assert_eq!(
        entries,
        [format!("schedule:vault-expiry|{user}|request"), format!("schedule:vault-expiry|{user}|done")]
    );
    let page = vault_service(&db, &kms, 100)
        .await
        .audit_verify(&staff("auditor"), None, None)
        .await
        .expect("verify");
    assert!(page.broken.is_none() && page.verified >= 2, "{page:?}");

    // What the login must not reach: every statement refused for its rights.
    let client = connect(&login).await;
    for sql in [
        "SELECT ciphertext FROM vault.pii_vault",
        "SELECT nonce, key_version FROM vault.pii_vault",
        "INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext) VALUES ('ip', repeat('a', 64), 1, '\\x000000000000000000000000', '\\x00')",
        "UPDATE vault.pii_vault SET created_at = now()",
        "TRUNCATE vault.pii_vault",
        "SELECT * FROM vault.pii_erasures",
        "SELECT user_id FROM login_data.user_logins",
        "SELECT * FROM login_data.user_logins",
        "UPDATE login_data.user_logins SET masked_ip = masked_device_id",
        "DELETE FROM login_data.user_logins",
        "SELECT * FROM login_data.login_quarantine",
        "SELECT * FROM login_data.login_quarantine_masks",
        "SELECT reason, target FROM pii_audit_log.pii_audit_entries",
        "SELECT * FROM pii_audit_log.pii_audit",
        "UPDATE pii_audit_log.pii_audit_entries SET detail = 'rewritten'",
        "DELETE FROM pii_audit_log.pii_audit_entries",
        "TRUNCATE pii_audit_log.pii_audit_entries",
        "INSERT INTO pii_audit_log.pii_audit_refusals_over_limit (caller, minute, refused) VALUES ('x', now(), 1)",
        "SELECT * FROM pii_budget.pii_budget_spent",
        "SELECT * FROM public.user_logins",
        "INSERT INTO vault.pii_keys (purpose, version, kms_key_id, wrapped_key) VALUES ('data', 99, 'k', '\\x00')",
        "DELETE FROM vault.pii_keys",
        "CREATE TABLE login_data.planted (x int)",
    ] {
        let error = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
    }
}

#[test]
fn a_bad_vault_retention_stops_the_service_and_the_scheduled_function_at_start() {
    for binary in [env!("CARGO_BIN_EXE_vault-expiry"), env!("CARGO_BIN_EXE_pii-vault-service")] {
        for bad in ["-1", "0", "99999", "thirty"] {
            // Settings only: the check comes before anything is connected or served.
            let output = std::process::Command::new(binary)
                .env("VAULT_RETENTION_DAYS", bad)
                .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
                .env("KMS_KEY_ID", "alias/pii-vault")
                .env_remove("AWS_LAMBDA_RUNTIME_API")
                .output()
                .expect("runs");
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!output.status.success(), "{binary} started with VAULT_RETENTION_DAYS={bad}");
            assert!(said.contains("VAULT_RETENTION_DAYS is malformed"), "{binary} {bad}: {said}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_expiry_binary_runs_on_a_schedules_event_as_lambda_runs_it() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    logins(&app, 40, &[("b-1", "192.0.2.71", "dev-b1")]).await;
    logins(&app, 0, &[("b-2", "192.0.2.72", "dev-b2")]).await;
    age_vault(&db, 100).await;
    let function = LocalLambda::start(
        env!("CARGO_BIN_EXE_vault-expiry"),
        &[
            ("DATABASE_URL", url_of(&db.login_in("login_etl_vault_expiry").await)),
            ("KMS_KEY_ID", kms.key_id().to_owned()),
            ("VAULT_RETENTION_DAYS", "30".to_owned()),
        ],
        None,
    )
    .await;
    let answer: serde_json::Value =
        serde_json::from_slice(&function.invoke(br#"{"source": "aws.events", "detail": {}}"#).await)
            .expect("JSON");
    assert_eq!(answer, serde_json::json!({"expired": 2, "scanned": 4, "complete": true}));
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit_log.pii_audit WHERE caller = 'schedule:vault-expiry' AND outcome = 'done'")
            .await,
        1
    );
}

/// The scheduled expiry through a transaction-pooling proxy (PgBouncer 1.18, 2 server
/// connections), two instances at once with a batch of one row each (so their batches
/// interleave on the cursor): every batch works, exactly the unseen values go, and nothing
/// is left on a server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduled_expiries_through_a_transaction_pooler_expire_exactly_and_leave_nothing_behind() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    logins(&app, 40, &[("p-1", "192.0.2.61", "dev-p1"), ("p-2", "192.0.2.62", "dev-p2")]).await;
    logins(&app, 0, &[("p-3", "192.0.2.63", "dev-p3")]).await;
    age_vault(&db, 100).await;
    let login = db.login_in("login_etl_vault_expiry").await;
    let bouncer = PgBouncer::in_front_of(&login, 2).await;
    let instances: Vec<VaultService> = (0..2)
        .map(|_| {
            let pool = login_etl_core::store::stateless_pool(bouncer.config.clone().into(), 2).expect("pool");
            VaultService::for_schedule(pool, kms.clone(), Retention::days(30).expect("30"))
        })
        .collect();
    let run = |n: usize| {
        let service = &instances[n];
        async move {
            let mut expired = 0;
            loop {
                let batch = service
                    .expire(&expiry::schedule_context(&format!("req-pooled-{n}")), 1)
                    .await
                    .expect("a batch through the pooler");
                expired += batch.expired;
                if batch.done {
                    return expired;
                }
            }
        }
    };
    let (first, second) = tokio::join!(run(0), run(1));
    assert_eq!(first + second, 4, "the two old pairs' values, once each");
    let left: BTreeSet<String> = vaulted(&db).await;
    let kept: BTreeSet<String> =
        [key(&app, PiiField::Ip, "192.0.2.63"), key(&app, PiiField::DeviceId, "dev-p3")].into();
    assert_eq!(left, kept);
    bouncer.assert_server_connections_clean().await;
}
