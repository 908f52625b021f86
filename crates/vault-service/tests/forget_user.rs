//! `forget --user-id`: an erasure request names a person. Every value of the user's rows is
//! erased, a value other users share included (for them too); it spends the erasure quota,
//! never the reveal budget, and a bad user id is refused on the record.

use login_etl::handler;
use login_etl_core::crypto::PiiField;
use pii_vault_protocol::{Outcome, RevealTarget};
use pii_vault_service::budget::Limits;
use pii_vault_service::http;
use pii_vault_service::{ServiceError, VaultService};
use testkit::*;

const STAFF_ARN: &str = "arn:aws:sts::123456789012:assumed-role/pii-vault-staff/erin";

/// `u-erase` logs in twice (two ips, one device), `u-other` once, sharing the first ip.
async fn two_users(db: &TestDb, kms: &login_etl_core::keys::Kms) {
    let app = cold_start(db, kms).await;
    let logins = [
        ("fu-1", "u-erase", "203.0.113.10", "dev-e1"),
        ("fu-2", "u-erase", "203.0.113.11", "dev-e1"),
        ("fu-3", "u-other", "203.0.113.10", "dev-o1"),
        ("fu-4", "u-third", "203.0.113.12", "dev-t1"),
    ];
    let records: Vec<_> =
        logins.iter().map(|(id, u, ip, d)| ((*id).to_owned(), login_body(u, ip, d))).collect();
    handler::handle(&app, event(&records)).await.expect("batch");
}

/// (field, outcome, value) of each value of `user`'s rows, as a reveal answers them.
async fn revealed(service: &VaultService, user: &str) -> Vec<(PiiField, Outcome, Option<String>)> {
    let mut values: Vec<_> = service
        .reveal(&staff("rita"), &RevealTarget::UserId(user.into()), Some(REASON))
        .await
        .expect("reveal")
        .into_iter()
        .map(|v| (v.field, v.outcome, v.value.map(|p| p.expose().to_owned())))
        .collect();
    values.sort_by_key(|v| (v.0.as_str(), v.2.clone()));
    values.dedup();
    values
}

#[tokio::test]
async fn forget_user_erases_every_value_of_the_users_rows_and_a_shared_value_for_everyone() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    two_users(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;

    let body = serde_json::json!({"op": "forget-user", "user_id": "u-erase", "reason": REASON});
    let answer = http::handle(
        &service,
        &staff_and_key_admin_roles(),
        url_request(STAFF_ARN, &body.to_string()),
        "erase-1",
    )
    .await;
    assert_eq!(answer.status_code, 200, "{:?}", answer.body);
    let answer: serde_json::Value = serde_json::from_str(&answer.body.unwrap_or_default()).expect("json");
    assert_eq!((answer["erased"].as_u64(), answer["shared"].as_u64()), (Some(3), Some(1)), "{answer}");

    for (field, outcome, value) in revealed(&service, "u-erase").await {
        assert_eq!((outcome, value), (Outcome::Erased, None), "{field} of the erased user");
    }
    // The shared ip is one vault entry: erased for the other user too; the rest is theirs.
    let other = revealed(&service, "u-other").await;
    assert_eq!(
        other,
        vec![
            (PiiField::DeviceId, Outcome::Revealed, Some("dev-o1".into())),
            (PiiField::Ip, Outcome::Erased, None)
        ]
    );
    // On the record, and paid from the erasure quota, not the reveal budget.
    let row = db
        .connect()
        .await
        .query_one("SELECT action, target, outcome, reason FROM pii_audit WHERE request_id = 'erase-1'", &[])
        .await
        .expect("row");
    let row: (String, Option<String>, Option<String>, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        row,
        ("forget".into(), Some("user_id:u-erase".into()), Some("forgotten".into()), Some(REASON.into()))
    );
    let spent = db
        .count("SELECT count(*) FROM pii_budget.pii_budget_spent WHERE kind = 'erasure' AND units = 1")
        .await;
    assert_eq!(spent, 1);

    // A caller in no role erases nothing.
    let nobody = "arn:aws:sts::123456789012:assumed-role/other/mallory";
    let body = serde_json::json!({"op": "forget-user", "user_id": "u-third", "reason": REASON});
    let answer = http::handle(
        &service,
        &staff_and_key_admin_roles(),
        url_request(nobody, &body.to_string()),
        "erase-2",
    )
    .await;
    assert_eq!(answer.status_code, 403, "{:?}", answer.body);
    assert!(revealed(&service, "u-third").await.iter().all(|v| v.1 == Outcome::Revealed));
}

#[tokio::test]
async fn an_erasure_is_not_blocked_by_the_reveal_budget_and_has_a_quota_of_its_own() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    two_users(&db, &kms).await;
    let limits = Limits { reveals_per_person: 2, reveals_per_role: 1000, erasures_per_person: 2 };
    let service = vault_service(&db, &kms, 2).await.with_limits(limits);
    let erin = || staff("erin");

    for ip in ["203.0.113.12", "203.0.113.10"] {
        service.find(&erin(), PiiField::Ip, ip, None).await.expect("the reveal units");
    }
    let error = service.find(&erin(), PiiField::Ip, "203.0.113.11", None).await.expect_err("spent");
    assert!(matches!(error, ServiceError::Budget { .. }), "{error}");

    // The reveal budget is spent; erasures go on, up to their own quota.
    for user in ["u-erase", "u-other"] {
        service.forget_user(&erin(), user, Some(REASON)).await.expect("erasure");
    }
    let caller = erin();
    let error = service.forget_user(&caller, "u-third", Some(REASON)).await.expect_err("quota");
    assert!(matches!(error, ServiceError::ErasureQuota { quota: 2, used: 2 }), "{error}");
    let outcome = db
        .count(&format!(
            "SELECT count(*) FROM pii_audit WHERE request_id = '{}' AND outcome = 'refused'",
            caller.request_id
        ))
        .await;
    assert_eq!(outcome, 1, "the refusal is on the record");
    // Nothing of the third user was erased (another person reveals it).
    let values = service
        .reveal(&staff("rita"), &RevealTarget::UserId("u-third".into()), Some(REASON))
        .await
        .expect("reveal");
    assert!(values.iter().all(|v| v.outcome == Outcome::Revealed), "{values:?}");
    // The quota is per person: someone else may erase.
    service.forget_user(&staff("rita"), "u-third", Some(REASON)).await.expect("another person's quota");
}

#[tokio::test]
async fn a_user_id_no_row_can_hold_is_refused_on_the_record_and_spends_no_quota() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    two_users(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;

    for user in [String::new(), "u".repeat(129), "u\u{7}x".into(), "u\u{200b}x".into()] {
        let caller = staff("erin");
        let error = service.forget_user(&caller, &user, Some(REASON)).await.expect_err("malformed");
        assert!(matches!(error, ServiceError::BadRequest(_)), "{error}");
        let refused = db
            .count(&format!(
                "SELECT count(*) FROM pii_audit WHERE request_id = '{}' AND outcome = 'refused' AND target IS NULL",
                caller.request_id
            ))
            .await;
        assert_eq!(refused, 1, "recorded refused, the id not kept");
    }
    let error = service.forget_user(&staff("erin"), "u-erase", None).await.expect_err("no reason");
    assert!(matches!(error, ServiceError::Reason(_)), "{error}");
    // A user id is 128 characters at most, like user_logins.user_id; one that long is fine.
    let done = service.forget_user(&staff("erin"), &"u".repeat(128), Some(REASON)).await.expect("no rows");
    assert_eq!((done.erased, done.shared), (0, 0));
    assert_eq!(db.count("SELECT coalesce(sum(units), 0) FROM pii_budget.pii_budget_spent").await, 1);
}
