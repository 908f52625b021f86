//! Red team, second round, on the quarantine's operations (issue 17): the service's own
//! database login, the key administrator and a caller in no role, and the bounds of an
//! answer. Each test is an attack; it fails if the attack works. Those marked `ignore` are
//! breaks found by this round, kept as the specification of their fix.

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use login_etl::handler;
use login_etl_core::crypto::PiiField;
use pii_vault_protocol::{ForgetTarget, Outcome, Plaintext};
use pii_vault_service::http::{self, Access};
use pii_vault_service::{RequestContext, ServiceError};
use testkit::*;

/// A rejected message (no app_version) whose ip and device id can be read.
fn bad_body(ip: &str, device: &str) -> String {
    format!(r#"{{"user_id": "u", "ip": "{ip}", "device_id": "{device}"}}"#)
}

fn nobody() -> RequestContext {
    RequestContext {
        caller: "arn:aws:sts::123456789012:assumed-role/other/nobody".into(),
        request_id: format!("req-{}", unique_suffix()),
        staff: false,
        key_admin: false,
    }
}

/// Two quarantined bodies: `qa-erased` (erased by a forget of its ip) and `qa-replayed`
/// (marked replayed, as a replay leaves it), and the app that quarantined them.
async fn erased_and_replayed(db: &TestDb, kms: &login_etl_core::keys::Kms) -> login_etl::App {
    let app = cold_start(db, kms).await;
    handler::handle_with_stats(
        &app,
        event(&[
            ("qa-erased".into(), bad_body("203.0.113.61", "dev-qa-1")),
            ("qa-replayed".into(), bad_body("203.0.113.62", "dev-qa-2")),
        ]),
    )
    .await
    .expect("batch");
    let service = vault_service(db, kms, 100).await;
    service
        .forget(
            &staff("ola"),
            PiiField::Ip,
            &ForgetTarget::Plaintext(Plaintext::new("203.0.113.61")),
            Some(REASON),
        )
        .await
        .expect("forget");
    db.connect()
        .await
        .batch_execute(
            "UPDATE login_data.login_quarantine SET replayed_at = now(), replay_attempt = 1 WHERE message_id = 'qa-replayed'",
        )
        .await
        .expect("mark replayed");
    app
}

/// (message id, erased_by, erased_at, ciphertext present, replay_attempt) of every row.
async fn state(db: &TestDb) -> Vec<(String, Option<String>, Option<String>, bool, Option<i32>)> {
    db.connect()
        .await
        .query(
            "SELECT message_id, erased_by, erased_at::text, ciphertext IS NOT NULL, replay_attempt
               FROM login_data.login_quarantine ORDER BY message_id, attempt",
            &[],
        )
        .await
        .expect("state")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// Was a break, fixed by the trigger `login_quarantine_guard` (sql/V6). The service's own
/// login (`login_etl_vault_service`) holds UPDATE on
/// `key_version, nonce, ciphertext, erased_at, erased_by, replayed_at, replay_attempt` under
/// a `USING (true) WITH CHECK (true)` policy, so it can do more than "erase, re-seal or mark
/// a replay" (sql/V6__quarantine.sql): it can put a body back into a row `forget` erased
/// (any sealed body under its data key, which it unwraps), relabel or re-date an erasure
/// (the runbook's evidence of a forget), and clear a replay's mark so that the row is sent
/// again. The purge's login cannot (its policy checks the new row); the service's can.
#[tokio::test]
async fn the_service_login_cannot_unerase_relabel_or_unreplay_a_quarantined_row() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = erased_and_replayed(&db, &kms).await;
    let before = state(&db).await;
    let service = connect(&db.login_in("login_etl_vault_service").await).await;
    let planted = app.keyring.data_key.seal_body("qa-erased", 0, "planted").expect("seal");

    let mut worked = Vec::new();
    let relabel = service
        .execute(
            "UPDATE login_data.login_quarantine SET erased_by = 'purge', erased_at = now() - interval '30 days'
              WHERE message_id = 'qa-erased' AND erased_at IS NOT NULL",
            &[],
        )
        .await;
    if relabel.is_ok_and(|n| n > 0) {
        worked.push("relabelled and re-dated a forget");
    }
    let unerase = service
        .execute(
            "UPDATE login_data.login_quarantine SET erased_at = NULL, erased_by = NULL,
                    key_version = $1, nonce = $2, ciphertext = $3
              WHERE message_id = 'qa-erased'",
            &[&planted.key_version, &planted.nonce.as_slice(), &planted.ciphertext],
        )
        .await;
    if unerase.is_ok_and(|n| n > 0) {
        worked.push("un-erased a forgotten body");
    }
    let unreplay = service
        .execute(
            "UPDATE login_data.login_quarantine SET replayed_at = NULL, replay_attempt = NULL WHERE message_id = 'qa-replayed'",
            &[],
        )
        .await;
    if unreplay.is_ok_and(|n| n > 0) {
        worked.push("cleared a replay's mark");
    }
    assert!(
        worked.is_empty(),
        "the service's login {worked:?}; before {before:?}, after {:?}",
        state(&db).await
    );
}

/// Holds: the service's login cannot delete rows or masks (evidence), truncate, backdate a
/// row into the purge's reach, rekey a row, or turn row security off.
#[tokio::test]
async fn the_service_login_cannot_delete_backdate_rekey_or_unprotect_the_quarantine() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    erased_and_replayed(&db, &kms).await;
    let before = state(&db).await;
    let masks = db.count("SELECT count(*) FROM login_data.login_quarantine_masks").await;
    let service = connect(&db.login_in("login_etl_vault_service").await).await;
    for sql in [
        "DELETE FROM login_data.login_quarantine",
        "DELETE FROM login_data.login_quarantine_masks",
        "TRUNCATE login_data.login_quarantine_masks",
        "TRUNCATE login_data.login_quarantine",
        "UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '100 days'",
        "UPDATE login_data.login_quarantine SET message_id = 'other-id' WHERE message_id = 'qa-replayed'",
        "UPDATE login_data.login_quarantine SET sent_at = '2020-01-01' WHERE message_id = 'qa-replayed'",
        "UPDATE login_data.login_quarantine SET source = 'queue', reason_code = 'dead_lettered'",
        "UPDATE login_data.login_quarantine_masks SET blind_index = repeat('0', 64)",
        "INSERT INTO login_data.login_quarantine (message_id, attempt, source, reason_code, quarantined_at, erased_at, erased_by)
         VALUES ('backdated', 0, 'queue', 'not_json', now() - interval '100 days', now(), 'purge')",
        "ALTER TABLE login_data.login_quarantine DISABLE ROW LEVEL SECURITY",
        "DROP POLICY service_works ON login_data.login_quarantine",
    ] {
        let result = service.batch_execute(sql).await;
        assert!(result.is_err(), "the service's login may: {sql}");
    }
    assert_eq!(state(&db).await, before);
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine_masks").await, masks);
}

/// Holds: the key administrator and a caller in no role reach no quarantined body through
/// `forget` (staff's) or `reencrypt` (the key administrator's), and each refusal is on the
/// record; the administrator's rotation and re-encryption never bring an erased body back.
#[tokio::test]
async fn key_admin_and_nobody_reach_the_quarantine_only_as_their_role_allows_and_on_the_record() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    erased_and_replayed(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let before = state(&db).await;

    for caller in [key_admin(), nobody()] {
        let error = service
            .forget(
                &caller,
                PiiField::Ip,
                &ForgetTarget::Plaintext(Plaintext::new("203.0.113.62")),
                Some(REASON),
            )
            .await
            .expect_err("only staff forget");
        assert!(matches!(error, ServiceError::NotAllowed { .. }), "{error}");
        let outcome = db
            .connect()
            .await
            .query_one("SELECT action, outcome FROM pii_audit WHERE request_id = $1", &[&caller.request_id])
            .await
            .expect("on the record");
        assert_eq!(
            (outcome.get::<_, String>(0), outcome.get::<_, Option<String>>(1)),
            ("forget".to_owned(), Some("refused".to_owned()))
        );
    }
    for caller in [staff("pat"), nobody()] {
        let error = service.reencrypt(&caller, 10).await.expect_err("only the key administrator");
        assert!(matches!(error, ServiceError::NotAllowed { .. }), "{error}");
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM pii_audit WHERE request_id = '{}' AND action = 'reencrypt' AND outcome = 'refused'",
                caller.request_id
            ))
            .await,
            1
        );
    }
    assert_eq!(state(&db).await, before, "nothing erased, nothing re-sealed");

    // Rotation and re-encryption: the sealed body moves to version 2, the erased one stays erased.
    let admin = key_admin();
    assert_eq!(service.rotate_key(&admin).await.expect("rotate"), 2);
    let done = service.reencrypt(&admin, 1).await.expect("reencrypt");
    assert_eq!(done.quarantine, 1, "only the sealed body");
    let rows = db
        .connect()
        .await
        .query(
            "SELECT message_id, key_version, ciphertext IS NULL, erased_by FROM login_data.login_quarantine ORDER BY 1",
            &[],
        )
        .await
        .expect("rows");
    let rows: Vec<(String, Option<i32>, bool, Option<String>)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        rows,
        vec![
            ("qa-erased".into(), None, true, Some("forget".into())),
            ("qa-replayed".into(), Some(2), false, None),
        ]
    );
    let shown = service.quarantine_show(&staff("pat"), "qa-erased", None, Some(REASON)).await.expect("show");
    assert_eq!((shown.outcome, shown.body.is_none()), (Outcome::Erased, true));
}

fn request(user_arn: &str, body: &str) -> LambdaFunctionUrlRequest {
    serde_json::from_value(serde_json::json!({
        "version": "2.0", "rawPath": "/", "rawQueryString": "", "headers": {},
        "requestContext": {"requestId": "r", "timeEpoch": 0, "http": {"method": "POST", "path": "/"},
                           "authorizer": {"iam": {"userArn": user_arn}}},
        "body": body, "isBase64Encoded": false,
    }))
    .expect("event")
}

/// Holds: the largest body SQS carries (1 MiB), made of the characters JSON escapes (a
/// backslash, a quote, a tab), shown through the function URL: the invocation's answer,
/// the service's JSON inside the URL's envelope (escaped twice), stays inside Lambda's
/// 6 MB, so the body a show paid for is answered and not lost to a 502.
#[tokio::test]
async fn a_show_of_the_largest_and_most_escaped_body_fits_the_function_urls_answer() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let body: String = "\\\"\t".repeat(1024 * 1024 / 3);
    let (_, stats) =
        handler::handle_with_stats(&app, event(&[("qa-huge".into(), body.clone())])).await.expect("batch");
    assert_eq!(stats.quarantined, 1);
    let service = vault_service(&db, &kms, 100).await;
    let access = Access {
        staff_role: Some("arn:aws:iam::123456789012:role/pii-vault-staff".into()),
        key_admin_role: None,
    };
    let show = serde_json::json!({"op": "quarantine-show", "message_id": "qa-huge", "attempt": null, "reason": REASON});
    let answer = http::handle(
        &service,
        &access,
        request("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/quy", &show.to_string()),
        "r-huge",
    )
    .await;
    assert_eq!(answer.status_code, 200, "{:?}", answer.body.as_deref().map(|b| &b[..b.len().min(300)]));
    let invocation = serde_json::to_vec(&answer).expect("envelope");
    assert!(invocation.len() <= 6 * 1024 * 1024, "{} bytes answered", invocation.len());
    let inner: serde_json::Value = serde_json::from_str(answer.body.as_deref().expect("body")).expect("json");
    assert_eq!(inner["body"].as_str(), Some(body.as_str()));
}
