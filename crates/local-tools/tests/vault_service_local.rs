//! Issue 18, items 5 and 9, against the real service: the `pii-vault-service-local` binary
//! behind cargo-lambda's runtime API and function URL, real Postgres, moto KMS. The same
//! attacks as `crates/vault-service/tests/redteam.rs`, through the wire.

use testkit::*;

const STAFF_ROLE: &str = "arn:aws:iam::123456789012:role/pii-vault-staff";

async fn service_as(db: &TestDb, kms: &login_etl_core::keys::Kms, caller: &str) -> LocalVaultService {
    let roles = [
        ("STAFF_ROLE_ARN", STAFF_ROLE.to_owned()),
        ("KEY_ADMIN_ROLE_ARN", "arn:aws:iam::123456789012:role/pii-vault-key-admin".to_owned()),
    ];
    LocalVaultService::start_with(
        db,
        kms,
        env!("CARGO_BIN_EXE_pii-vault-service-local"),
        caller,
        &roles,
        None,
    )
    .await
}

/// "Three reveals by a 2 MB user id wrote 6.3 MB into pii_audit.target": through the
/// function URL, a caller in no role and a staff member each send reveals whose user id is
/// 1.5 MB (cargo-lambda's URL takes bodies up to 2 MB; the in-process test sends 2 MB). Each
/// is refused unread, on the record, in a row under 1 KiB.
#[tokio::test]
async fn a_megabyte_user_id_through_the_function_url_is_refused_and_recorded_small() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let body = serde_json::json!({"op": "reveal", "target": {"user_id": "A".repeat(1_500_000)},
                                  "reason": REASON})
    .to_string();
    for (caller, status) in [
        ("arn:aws:sts::123456789012:assumed-role/other/mallory", 403),
        ("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/uma", 400),
    ] {
        let service = service_as(&db, &kms, caller).await;
        for _ in 0..3 {
            let (answer, text) = service.post(body.clone().into_bytes()).await;
            assert_eq!(answer, status, "{caller}: {text}");
        }
        let rows = db
            .connect()
            .await
            .query(
                "SELECT octet_length(pii_audit::text) FROM pii_audit
                  WHERE caller = $1 AND action = 'request' AND detail LIKE '%body of ' || $2 || ' bytes%'",
                &[&caller, &body.len().to_string()],
            )
            .await
            .expect("rows");
        assert_eq!(rows.len(), 3, "{caller}: each reveal on the record");
        assert!(rows.iter().all(|r| r.get::<_, i32>(0) < 1024), "{caller}: rows stay small");
    }
}

/// "A principal with no rights that sends GET, another path, a non-JSON body or an unknown
/// op gets 400 and leaves no audit row": through the function URL it gets 403, and each is
/// on the record; a malformed find's plaintext is not.
#[tokio::test]
async fn refusals_through_the_function_url_are_on_the_record_without_their_body() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let mallory = "arn:aws:sts::123456789012:assumed-role/other/mallory";
    let service = service_as(&db, &kms, mallory).await;
    let bodies =
        [r#"{"op": "dump-vault"}"#, "not json", r#"{"op": "find", "field": "ip", "value": "198.51.100.77"}"#];
    for body in bodies {
        let (status, text) = service.post(body.as_bytes().to_vec()).await;
        assert_eq!(status, 403, "{text}");
    }
    let details = db
        .texts(
            "SELECT detail FROM pii_audit WHERE caller = $1 AND outcome = 'refused' AND detail LIKE '%; POST /, %'",
            &[&mallory],
        )
        .await;
    assert_eq!(details.len(), 3, "{details:?}");
    assert!(details.iter().all(|d| d.contains("hmac-sha256 ") && !d.contains("198.51.100")), "{details:?}");
}

/// Issue 18, item 9: the artifact check that `make build`, `make package` and
/// `make sam-build` run on every bootstrap refuses this binary (it holds the local
/// identity), so the check would catch it in a deployable build.
#[test]
fn the_artifact_check_refuses_the_local_binary() {
    let status = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/check-bootstrap.py"))
        .args(["--self-test", env!("CARGO_BIN_EXE_pii-vault-service-local")])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("python3");
    assert!(status.success(), "check-bootstrap.py did not refuse pii-vault-service-local");
}
