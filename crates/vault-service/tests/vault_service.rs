//! The vault as an audited service, on real Postgres logins in the migrations' roles and
//! the moto KMS: what every role can reach, audit first, budgets, reasons and key
//! administration (erasure and its races: tests/erasure.rs).

use login_etl::handler;
use login_etl_core::crypto::{BlindIndex, KeyPurpose, PiiField};
use pii_vault_protocol::{ErrorCode, ForgetTarget, Outcome, Plaintext, RevealTarget};
use pii_vault_service::{Reencrypted, ServiceError};
use testkit::*;
use tokio_postgres::error::SqlState;

async fn denied(client: &tokio_postgres::Client, sql: &str) {
    let error = client.batch_execute(sql).await.expect_err(sql);
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
}

async fn allowed(client: &tokio_postgres::Client, sql: &str) {
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn mask(field: PiiField, mask: &BlindIndex) -> RevealTarget {
    RevealTarget::Mask { field, mask: mask.as_str().to_owned() }
}

#[tokio::test]
async fn no_human_role_reaches_the_vault_or_the_keys_and_the_writer_only_appends() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;

    for role in ["login_etl_analyst", "login_etl_vault_reader", "login_etl_auditor"] {
        let person = connect(&db.login_in(role).await).await;
        denied(&person, "SELECT * FROM vault.pii_vault").await;
        denied(&person, "SELECT * FROM vault.pii_keys").await;
        denied(&person, "INSERT INTO pii_audit_log.pii_audit_entries (caller, action) VALUES ('x', 'find')")
            .await;
        denied(&person, "UPDATE pii_audit_log.pii_audit_entries SET reason = 'x'").await;
        // Nothing in the schema that a person may execute returns vault content: no
        // function of the schema is executable by the role at all.
        let executable: i64 = person
            .query_one(
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname = 'public' AND has_function_privilege(p.oid, 'EXECUTE')",
                &[],
            )
            .await
            .expect("functions")
            .get(0);
        assert_eq!(executable, 0, "{role} can execute functions of the schema");
        // The old bypass: the reveal function no longer exists.
        let error =
            person.batch_execute("SELECT * FROM pii_reveal('ip', 'x', 'x', 'x')").await.expect_err("gone");
        assert_eq!(error.code(), Some(&SqlState::UNDEFINED_FUNCTION), "{error}");
    }
    let analyst = connect(&db.login_in("login_etl_analyst").await).await;
    allowed(&analyst, "SELECT masked_ip, masked_device_id FROM user_logins").await;
    denied(&analyst, "SELECT * FROM pii_audit").await;
    let auditor = connect(&db.login_in("login_etl_auditor").await).await;
    allowed(&auditor, "SELECT * FROM pii_audit").await;
    denied(&auditor, "SELECT * FROM user_logins").await;
    denied(&auditor, "SELECT * FROM login_data.user_logins").await;

    let writer = connect(&db.login_in("login_etl_writer").await).await;
    allowed(&writer, "SELECT count(*) FROM vault.pii_keys").await;
    denied(&writer, "SELECT * FROM vault.pii_vault").await;
    denied(&writer, "SELECT * FROM login_data.user_logins").await;
    denied(
        &writer,
        "INSERT INTO vault.pii_keys (purpose, version, kms_key_id, wrapped_key) VALUES ('data', 2, 'k', '\\x00')",
    )
    .await;
    denied(&writer, "UPDATE vault.pii_keys SET version = 2").await;
    denied(&writer, "DELETE FROM vault.pii_keys").await;
    denied(&writer, "UPDATE vault.pii_vault SET erased_at = now()").await;
    denied(
        &writer,
        &format!(
            "INSERT INTO vault.pii_vault (field, blind_index, erased_at) VALUES ('ip', '{}', now())",
            "a".repeat(64)
        ),
    )
    .await;

    // Not even the owner rewrites history with DML (what it can do with DDL, `audit verify`
    // catches: tests/audit_chain.rs).
    let owner = db.connect().await;
    owner.batch_execute("SET ROLE login_etl_audit_owner").await.expect("the owner");
    vault_service(&db, &kms, 100).await.audit(&staff("ann"), None, None, None).await.expect("an entry");
    for sql in [
        "UPDATE pii_audit_log.pii_audit_entries SET caller = 'y'",
        "DELETE FROM pii_audit_log.pii_audit_entries",
        "TRUNCATE pii_audit_log.pii_audit_entries",
    ] {
        let error = owner.batch_execute(sql).await.expect_err(sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
    }
}

/// A find answers the oldest `FIND_MAX_ROWS` rows and how many match, so no value, however
/// common, makes an answer larger than the function URL's 6 MB (the 1,200 rows here would
/// be answered whole without the bound).
#[tokio::test]
async fn a_find_of_a_value_on_very_many_rows_answers_a_bounded_page_and_the_count() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 1000).await;
    let ip = "192.0.2.200";
    let (mask, none) = service.find(&staff("fay"), PiiField::Ip, ip, None).await.expect("find");
    assert!(none.is_empty());
    // 1,200 rows carrying the value, copies of a loaded row with ids of the column's width.
    db.connect()
        .await
        .execute(
            "INSERT INTO login_data.user_logins
             SELECT (jsonb_populate_record(NULL::login_data.user_logins, to_jsonb(u) || jsonb_build_object(
                        'sqs_message_id', rpad('many-' || g, 128, 'x'), 'masked_ip', $1::text))).*
               FROM (SELECT * FROM login_data.user_logins LIMIT 1) u, generate_series(1, 1200) g",
            &[&mask.as_str()],
        )
        .await
        .expect("rows");
    let answer = service
        .handle(
            &staff("fay"),
            pii_vault_protocol::Request::Find {
                field: PiiField::Ip,
                value: Plaintext::new(ip),
                reason: None,
            },
        )
        .await
        .expect("find");
    let pii_vault_protocol::Response::Find { rows, total, .. } = &answer else { panic!("{answer:?}") };
    assert_eq!((rows.len(), *total), (pii_vault_protocol::FIND_MAX_ROWS, 1200));
    let bytes = serde_json::to_vec(&answer).expect("json").len();
    assert!(bytes < 6_000_000 / 4, "a find answered {bytes} bytes");
}

#[tokio::test]
async fn every_sample_value_is_found_and_revealed_each_act_on_the_record_with_its_caller() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 1000).await;
    let alice = staff("alice");

    let logins: Vec<_> = sample_messages().into_iter().filter(|m| m.get("user_id").is_some()).collect();
    for login in &logins {
        let user_id = login["user_id"].as_str().expect("user_id");
        for (field, name) in [(PiiField::Ip, "ip"), (PiiField::DeviceId, "device_id")] {
            let value = login[name].as_str().expect("value");
            let (index, rows) = service.find(&alice, field, value, None).await.expect("find");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].user_id.as_deref(), Some(user_id));
            let revealed = service.reveal(&alice, &mask(field, &index), Some(REASON)).await.expect("reveal");
            assert_eq!(revealed[0].outcome, Outcome::Revealed);
            assert_eq!(revealed[0].value.as_ref().map(Plaintext::expose), Some(value));
        }
    }
    let by_user = service
        .reveal(
            &alice,
            &RevealTarget::UserId(logins[0]["user_id"].as_str().expect("id").into()),
            Some(REASON),
        )
        .await
        .expect("by user");
    assert_eq!(by_user.len(), 2);
    let revealed_rows = format!(
        "SELECT count(*) FROM pii_audit WHERE caller = '{}' AND action = 'reveal' AND outcome = 'revealed'
            AND reason = '{REASON}' AND request_id IS NOT NULL",
        alice.caller
    );
    assert_eq!(db.count(&revealed_rows).await, 2 * 99 + 2);
    assert_eq!(db.count("SELECT count(*) FROM pii_audit WHERE action = 'find' AND outcome = 'found' AND blind_index IS NOT NULL").await, 2 * 99);
}

#[tokio::test]
async fn the_audit_row_is_committed_before_the_vault_is_read_and_without_it_nothing_is_answered() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    let service = vault_service(&db, &kms, 10).await;

    // The step after the audit fails (the vault cannot be read): the row is there.
    db.connect()
        .await
        .batch_execute("REVOKE SELECT ON vault.pii_vault FROM login_etl_vault_service")
        .await
        .expect("revoke");
    let error =
        service.reveal(&staff("bob"), &mask(PiiField::Ip, &index), Some(REASON)).await.expect_err("fails");
    assert!(matches!(error, ServiceError::Db(_)), "{error}");
    let digest = audit_digest(&db, &kms, PiiField::Ip, &index).await;
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM pii_audit WHERE action = 'reveal' AND blind_index = '{digest}' AND outcome = 'failed'")).await,
        1
    );
    db.connect()
        .await
        .batch_execute("GRANT SELECT ON vault.pii_vault TO login_etl_vault_service")
        .await
        .expect("grant");

    // The audit cannot be written: nothing is read, nothing answered.
    db.fail_inserts_into("pii_audit_log.pii_audit_entries", "audit storage unavailable (simulated)").await;
    let error =
        service.reveal(&staff("bob"), &mask(PiiField::Ip, &index), Some(REASON)).await.expect_err("no audit");
    assert!(matches!(error, ServiceError::AuditUnavailable(_)), "{error}");
    assert_eq!(error.code(), ErrorCode::AuditUnavailable);
    let error =
        service.find(&staff("bob"), PiiField::Ip, "199.172.111.135", None).await.expect_err("no audit");
    assert!(matches!(error, ServiceError::AuditUnavailable(_)), "{error}");
}

#[tokio::test]
async fn over_budget_is_refused_and_audited_and_bad_reasons_are_refused() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 3).await;
    let carol = staff("carol");
    let ips = ["199.172.111.135", "64.38.218.171", "81.98.156.49"];
    for ip in &ips[..2] {
        let index = app.keyring.indexer.index(PiiField::Ip, ip);
        service.reveal(&carol, &mask(PiiField::Ip, &index), Some(REASON)).await.expect("within budget");
    }
    service.find(&carol, PiiField::Ip, ips[2], None).await.expect("third unit of the budget");
    let index = app.keyring.indexer.index(PiiField::Ip, ips[2]);
    let error = service.reveal(&carol, &mask(PiiField::Ip, &index), Some(REASON)).await.expect_err("budget");
    assert!(matches!(error, ServiceError::Budget { budget: 3, used: 3 }), "{error}");
    assert_eq!(error.code(), ErrorCode::BudgetExhausted);
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE outcome = 'refused' AND detail LIKE 'daily budget%'")
            .await,
        1
    );
    // Another caller has a budget of their own.
    service.reveal(&staff("dave"), &mask(PiiField::Ip, &index), Some(REASON)).await.expect("dave");

    for reason in [None, Some("."), Some("short"), Some("ticket\u{200B}4711"), Some("ticket\u{202E}4711")] {
        let error =
            service.reveal(&staff("erin"), &mask(PiiField::Ip, &index), reason).await.expect_err("reason");
        assert!(matches!(error, ServiceError::Reason(_)), "{reason:?}: {error}");
        assert_eq!(error.code(), ErrorCode::BadReason);
    }
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE caller LIKE '%/erin' AND outcome = 'refused'").await,
        5,
        "each refusal is on the record"
    );
    // An admin operation from staff, and a reveal from the key administrator, are refused.
    let error = service.rotate_key(&staff("frank")).await.expect_err("not admin");
    assert!(matches!(error, ServiceError::NotAllowed { .. }), "{error}");
    let error =
        service.reveal(&key_admin(), &mask(PiiField::Ip, &index), Some(REASON)).await.expect_err("admin");
    assert!(matches!(error, ServiceError::NotAllowed { .. }), "{error}");
}

#[tokio::test]
async fn key_administration_goes_through_the_service_and_keeps_every_value_and_mask() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let service = vault_service(&db, &kms, 1000).await;
    let admin = key_admin();
    // The audit key came first: the service made it for init-keys' own audit entry.
    assert_eq!(service.init_keys(&admin).await.expect("init").len(), KeyPurpose::ALL.len() - 1);
    assert!(service.init_keys(&admin).await.expect("idempotent").is_empty());
    let first = loaded_by_writer(&db, &kms).await;

    assert_eq!(service.rotate_key(&admin).await.expect("rotate"), 2);
    let second = cold_start(&db, &kms).await;
    assert_eq!(second.keyring.data_key.version(), 2);
    handler::handle(&second, event(&[("new".into(), login_body("u-new", "203.0.113.9", "900-00-0009"))]))
        .await
        .expect("batch");
    // The 99 logins' 198 values, and the malformed message's quarantined body.
    assert_eq!(
        service.reencrypt(&admin, 50).await.expect("reencrypt"),
        Reencrypted { vault: 198, quarantine: 1, tombstones: 0 }
    );
    assert_eq!(service.reencrypt(&admin, 50).await.expect("resumable"), Reencrypted::default());
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault WHERE key_version < 2").await, 0);
    for login in sample_messages().iter().filter(|m| m.get("ip").is_some()) {
        let ip = login["ip"].as_str().expect("ip");
        let index = first.keyring.indexer.index(PiiField::Ip, ip);
        assert_eq!(index, second.keyring.indexer.index(PiiField::Ip, ip), "masks unchanged");
        let revealed =
            service.reveal(&staff("ivy"), &mask(PiiField::Ip, &index), Some(REASON)).await.expect("reveal");
        assert_eq!(revealed[0].value.as_ref().map(Plaintext::expose), Some(ip));
    }
    // Version arithmetic cannot overflow: the table bounds versions.
    let error = db
        .connect()
        .await
        .batch_execute(
            "UPDATE vault.pii_keys SET version = 2147483647 WHERE purpose = 'data' AND version = 2",
        )
        .await
        .expect_err("bounded");
    assert_eq!(error.code(), Some(&SqlState::CHECK_VIOLATION));
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE action IN ('init-keys', 'rotate-key', 'reencrypt') AND outcome = 'done'").await,
        5
    );
}

#[tokio::test]
async fn a_request_without_an_iam_identity_is_refused_and_the_attempt_recorded() {
    use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
    use pii_vault_service::http::{self, Access};

    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let event = |authorizer: serde_json::Value| -> LambdaFunctionUrlRequest {
        serde_json::from_value(serde_json::json!({
            "version": "2.0", "rawPath": "/", "rawQueryString": "", "headers": {},
            "requestContext": {"requestId": "r-1", "timeEpoch": 0, "http": {"method": "POST", "path": "/"},
                               "authorizer": authorizer},
            "body": r#"{"op": "audit", "since": null}"#, "isBase64Encoded": false,
        }))
        .expect("event")
    };
    let access = Access {
        staff_role: Some("arn:aws:iam::123456789012:role/pii-vault-staff".into()),
        key_admin_role: Some("arn:aws:iam::123456789012:role/pii-vault-key-admin".into()),
    };
    let answer = http::handle(&service, &access, event(serde_json::Value::Null), "r-1").await;
    assert_eq!(answer.status_code, 401);
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE caller = '(no IAM identity)' AND outcome = 'refused'")
            .await,
        1
    );

    let staff = serde_json::json!({"iam": {"userArn": "arn:aws:sts::123456789012:assumed-role/pii-vault-staff/alice"}});
    let answer = http::handle(&service, &access, event(staff), "r-2").await;
    assert_eq!(answer.status_code, 200, "{:?}", answer.body);
    // Someone else's role: a caller, but not allowed.
    let other =
        serde_json::json!({"iam": {"userArn": "arn:aws:sts::123456789012:assumed-role/other/mallory"}});
    let answer = http::handle(&service, &access, event(other), "r-3").await;
    assert_eq!(answer.status_code, 403);
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE caller LIKE '%/mallory' AND outcome = 'refused'")
            .await,
        1
    );
}

/// A caller the transport proved, in neither role.
fn nobody() -> pii_vault_service::RequestContext {
    pii_vault_service::RequestContext {
        caller: "arn:aws:sts::123456789012:assumed-role/other/nobody".into(),
        request_id: format!("req-{}", unique_suffix()),
        staff: false,
        key_admin: false,
    }
}

/// The audit rows of one request: (action, field, blind_index, target, reason, outcome, detail).
type Row =
    (String, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

async fn rows_of(db: &TestDb, request_id: &str) -> Vec<Row> {
    db.connect()
        .await
        .query(
            "SELECT action, field, blind_index, target, reason, outcome, detail FROM pii_audit
              WHERE request_id = $1 ORDER BY id",
            &[&request_id],
        )
        .await
        .expect("audit rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
        .collect()
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

#[tokio::test]
async fn every_operation_refused_for_lack_of_a_role_leaves_its_request_recorded_and_refused() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    let user = sample_messages()[0]["user_id"].as_str().expect("user").to_owned();

    // Each operation, with arguments that would pass, from a caller in no role: the
    // request as asked (field, mask, target, reason) on the record, refused.
    let (ip, mask) = (some("ip"), some(&audit_digest(&db, &kms, PiiField::Ip, &index).await));
    let reason = some(REASON);
    let cases = vec![
        ("find", ip.clone(), None, None, None),
        ("reveal", ip.clone(), mask.clone(), None, reason.clone()),
        ("reveal", None, None, Some(format!("user_id:{user}")), reason.clone()),
        ("forget", ip.clone(), mask.clone(), None, reason.clone()),
        ("audit", None, None, None, None),
        ("init-keys", None, None, None, None),
        ("rotate-key", None, None, None, None),
        ("reencrypt", None, None, None, None),
    ];
    for (n, (action, field, blind_index, target, reason)) in cases.into_iter().enumerate() {
        let caller = nobody();
        let error = match n {
            0 => service.find(&caller, PiiField::Ip, "199.172.111.135", None).await.map(drop),
            1 => service.reveal(&caller, &mask_target(&index), Some(REASON)).await.map(drop),
            2 => service.reveal(&caller, &RevealTarget::UserId(user.clone()), Some(REASON)).await.map(drop),
            3 => service
                .forget(&caller, PiiField::Ip, &ForgetTarget::Mask(index.as_str().into()), Some(REASON))
                .await
                .map(drop),
            4 => service.audit(&caller, None, None, None).await.map(drop),
            5 => service.init_keys(&caller).await.map(drop),
            6 => service.rotate_key(&caller).await.map(drop),
            _ => service.reencrypt(&caller, 10).await.map(drop),
        }
        .expect_err(action);
        assert!(matches!(error, ServiceError::NotAllowed { .. }), "{action}: {error}");
        let detail = some(&error.to_string());
        assert_eq!(
            rows_of(&db, &caller.request_id).await,
            vec![(action.to_owned(), field, blind_index, target, reason, some("refused"), detail)],
            "{action}"
        );
    }
    // Refused requests spend no budget and nothing was erased or rotated.
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault WHERE erased_at IS NOT NULL").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_keys WHERE purpose = 'data'").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM pii_audit WHERE outcome IS NULL").await, 0);
}

fn mask_target(index: &BlindIndex) -> RevealTarget {
    mask(PiiField::Ip, index)
}

#[tokio::test]
async fn a_bad_reason_or_argument_leaves_the_request_recorded_and_refused_and_spends_nothing() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 2).await;
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");

    // A reveal with an unusable reason: what was asked is recorded, refused, without the reason.
    let kim = staff("kim");
    let error = service.reveal(&kim, &mask_target(&index), Some("short")).await.expect_err("reason");
    assert!(matches!(error, ServiceError::Reason(_)), "{error}");
    let row = (
        "reveal".into(),
        some("ip"),
        some(&audit_digest(&db, &kms, PiiField::Ip, &index).await),
        None,
        None,
        some("refused"),
        some(&error.to_string()),
    );
    assert_eq!(rows_of(&db, &kim.request_id).await, vec![row]);

    // A find's reason is optional, but checked when given.
    let kim = staff("kim");
    let error = service
        .find(&kim, PiiField::Ip, "199.172.111.135", Some("x\u{202E}yyyyyyyy"))
        .await
        .expect_err("reason");
    assert!(matches!(error, ServiceError::Reason(_)), "{error}");
    let row = ("find".into(), some("ip"), None, None, None, some("refused"), some(&error.to_string()));
    assert_eq!(rows_of(&db, &kim.request_id).await, vec![row]);

    // Arguments the operation rejects: recorded, refused.
    for target in [
        mask(PiiField::Ip, &BlindIndex::parse(&"a".repeat(64)).expect("mask")),
        RevealTarget::Mask { field: PiiField::DeviceId, mask: "not-a-mask".into() },
    ] {
        let kim = staff("kim");
        let result = service.reveal(&kim, &target, Some(REASON)).await;
        let rows = rows_of(&db, &kim.request_id).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        match result {
            // A well-formed mask nobody has: answered unknown, on the record.
            Ok(values) => {
                assert_eq!((values[0].outcome, rows[0].5.as_deref()), (Outcome::Unknown, Some("unknown")))
            }
            Err(error) => {
                assert!(matches!(error, ServiceError::BadRequest(_)), "{error}");
                // The malformed mask itself is not recorded.
                assert_eq!((rows[0].2.as_deref(), rows[0].5.as_deref()), (None, Some("refused")));
            }
        }
    }
    let kim = staff("kim");
    let error = service.find(&kim, PiiField::Ip, "not an ip", None).await.expect_err("bad ip");
    assert!(matches!(error, ServiceError::BadRequest(_)), "{error}");
    assert_eq!(rows_of(&db, &kim.request_id).await[0].5.as_deref(), Some("refused"));
    let admin = key_admin();
    let error = service.reencrypt(&admin, 0).await.expect_err("batch size");
    assert!(matches!(error, ServiceError::BadRequest(_)), "{error}");
    assert_eq!(rows_of(&db, &admin.request_id).await[0].5.as_deref(), Some("refused"));

    // Refusals spend no budget: lee's two units are left after them.
    let lee = staff("lee");
    service.reveal(&lee, &mask_target(&index), Some("bad")).await.expect_err("reason");
    service.find(&lee, PiiField::Ip, "not an ip", None).await.expect_err("bad ip");
    for _ in 0..2 {
        let (_, rows) =
            service.find(&lee, PiiField::Ip, "199.172.111.135", None).await.expect("within budget");
        assert_eq!(rows.len(), 1);
    }
    assert_eq!(db.count("SELECT count(*) FROM pii_audit WHERE outcome IS NULL").await, 0);
}

#[tokio::test]
async fn the_request_is_recorded_before_it_is_authorized_or_checked() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");

    // With the audit down, no step after the record runs: not even the refusal of a caller
    // in no role, or of a malformed argument, is answered.
    db.fail_inserts_into("pii_audit_log.pii_audit_entries", "audit storage unavailable (simulated)").await;
    let results = [
        service.reveal(&nobody(), &mask_target(&index), Some(REASON)).await.map(drop),
        service.rotate_key(&nobody()).await.map(drop),
        service.reveal(&nobody(), &mask_target(&index), None).await.map(drop),
        service
            .reveal(
                &staff("max"),
                &RevealTarget::Mask { field: PiiField::Ip, mask: "x".into() },
                Some(REASON),
            )
            .await
            .map(drop),
        service.reencrypt(&key_admin(), 0).await.map(drop),
        service.audit(&staff("max"), None, None, None).await.map(drop),
    ];
    for result in results {
        let error = result.expect_err("no audit, no answer");
        assert!(matches!(error, ServiceError::AuditUnavailable(_)), "{error}");
    }
    assert_eq!(db.count("SELECT count(*) FROM pii_audit").await, 0);
}

#[tokio::test]
async fn a_reveal_by_user_records_each_value_before_decrypting_and_leaves_no_row_without_outcome() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let login = &sample_messages()[0];
    let user = login["user_id"].as_str().expect("user").to_owned();
    let ip = app.keyring.indexer.index(PiiField::Ip, login["ip"].as_str().expect("ip"));

    // Over budget: both value rows recorded refused, nothing decrypted.
    let service = vault_service(&db, &kms, 1).await;
    let nia = staff("nia");
    let error =
        service.reveal(&nia, &RevealTarget::UserId(user.clone()), Some(REASON)).await.expect_err("budget");
    assert!(matches!(error, ServiceError::Budget { budget: 1, used: 0 }), "{error}");
    let rows = rows_of(&db, &nia.request_id).await;
    let outcomes: Vec<_> = rows.iter().map(|r| (r.1.clone(), r.5.clone())).collect();
    assert_eq!(
        outcomes,
        vec![(None, some("refused")), (some("ip"), some("refused")), (some("device_id"), some("refused"))]
    );
    assert_eq!(rows[0].3, Some(format!("user_id:{user}")));

    // One value cannot be decrypted: that value failed, the request failed, nothing open.
    db.tamper_vault_row("ip", ip.as_str()).await;
    let service = vault_service(&db, &kms, 100).await;
    let nia = staff("nia");
    let error =
        service.reveal(&nia, &RevealTarget::UserId(user.clone()), Some(REASON)).await.expect_err("tampered");
    assert!(matches!(error, ServiceError::Seal(_)), "{error}");
    let rows = rows_of(&db, &nia.request_id).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.5.as_deref() == Some("failed") && r.4.as_deref() == Some(REASON)),
        "{rows:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM pii_audit WHERE outcome IS NULL").await, 0);
}
