//! Reasons that look blank on an auditor's screen, sent to the real service: each is
//! refused, recorded as refused, and reveals nothing (issue 18's red-team list).

use login_etl_core::crypto::PiiField;
use pii_vault_protocol::{ErrorCode, RevealTarget};
use pii_vault_service::ServiceError;
use testkit::*;

#[tokio::test]
async fn blank_looking_and_hidden_character_reasons_are_refused_on_the_record() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    let target = RevealTarget::Mask { field: PiiField::Ip, mask: index.as_str().to_owned() };
    let reasons = [
        "\u{2800}".repeat(8),
        "\u{2800}".repeat(8) + "x",
        "ticket\u{2065}4711".to_owned(),
        "ticket\u{FFF0}4711".to_owned(),
        "ticket\u{E0080}4711".to_owned(),
        "ticket\u{17B4}4711".to_owned(),
        "ticket\u{1D159}4711".to_owned(),
        "ticket\u{2028}4711".to_owned(),
        "ticket\u{E000}4711".to_owned(),
        "!!!!!!!!!!!!!!!!".to_owned(),
    ];
    let mallory = staff("mallory");
    for reason in &reasons {
        let error = service.reveal(&mallory, &target, Some(reason)).await.expect_err("refused");
        assert!(matches!(error, ServiceError::Reason(_)), "{}: {error}", reason.escape_unicode());
        assert_eq!(error.code(), ErrorCode::BadReason);
    }
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE caller LIKE '%/mallory' AND outcome = 'refused'")
            .await,
        reasons.len() as i64,
        "each refusal is on the record"
    );
    assert_eq!(db.count("SELECT count(*) FROM pii_audit WHERE outcome = 'revealed'").await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE reason IS NOT NULL AND outcome = 'refused'").await,
        0,
        "an unusable reason is never stored"
    );
    // A reason in any script, with 8 letters or digits, is fine.
    service.reveal(&mallory, &target, Some("Prüfung Nr. 4711")).await.expect("a real reason");
}
