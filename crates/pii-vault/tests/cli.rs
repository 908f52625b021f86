//! The `pii-vault` binary as staff run it, against the real `pii-vault-service` binary
//! served as a function URL on the local stack (the same path as `make run`).

use login_etl::{App, handler};
use login_etl_core::crypto::{KeyPurpose, PiiField};
use testkit::*;

/// Runs the `pii-vault` binary as staff would, against the service at `url`.
fn pii_vault(url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(args)
        .env("PII_VAULT_URL", url)
        .env_remove("VAULT_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run pii-vault")
}

fn json_of(output: &std::process::Output) -> serde_json::Value {
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pii_vault_binary_does_everything_through_the_running_service() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let service =
        LocalVaultService::start(&db, &kms, &workspace_binary("pii-vault-service-local"), "local:e2e-staff")
            .await;
    let url = service.url.as_str();

    // Keys by the admin operation, through the service; then the function loads them.
    let created = json_of(&pii_vault(url, &["admin", "init-keys", "--json"]));
    // Every purpose but the audit key's, which the service made for this request's own entry.
    assert_eq!(created["created"].as_array().map(Vec::len), Some(KeyPurpose::ALL.len() - 1));
    let mut config = db.app_config();
    config.database = db.login_in("login_etl_writer").await.into();
    let app = App::init(&config, &kms).await.expect("keys exist");
    handler::handle(&app, load_event("events/login-queue-100.json")).await.expect("batch");

    // Every sample value revealed to its original.
    let logins: Vec<_> = sample_messages().into_iter().filter(|m| m.get("user_id").is_some()).collect();
    for login in &logins {
        let user = login["user_id"].as_str().expect("user");
        let revealed = json_of(&pii_vault(url, &["reveal", "--user-id", user, "--reason", REASON, "--json"]));
        for item in revealed.as_array().expect("array") {
            let field = item["field"].as_str().expect("field");
            assert_eq!(item["value"], login[field], "{field} of {user}");
        }
    }
    // find, forget, audit and the admin operations take the same path.
    let ip = logins[0]["ip"].as_str().expect("ip");
    let found = json_of(&pii_vault(url, &["find", "--ip", ip, "--json"]));
    assert_eq!(found["rows"][0]["user_id"], logins[0]["user_id"]);
    let forgotten = json_of(&pii_vault(url, &["forget", "--ip", ip, "--reason", REASON, "--json"]));
    assert_eq!(forgotten["outcome"], "forgotten");
    assert!(forgotten.get("mask").is_none(), "a forget by value answers no mask: {forgotten}");
    let user = logins[1]["user_id"].as_str().expect("user");
    let erased_user = json_of(&pii_vault(url, &["forget", "--user-id", user, "--reason", REASON, "--json"]));
    assert_eq!((erased_user["user_id"].as_str(), erased_user["erased"].as_u64()), (Some(user), Some(2)));
    let mask = found["mask"].as_str().expect("mask");
    // Erasure unlinks: the value's mask is gone, it reveals as a mask never seen (exit 3).
    let erased = pii_vault(url, &["reveal", "--masked-ip", mask, "--reason", REASON]);
    assert_eq!(erased.status.code(), Some(3));
    assert_eq!(json_of(&pii_vault(url, &["admin", "rotate-key", "--json"]))["version"], 2);
    assert_eq!(
        json_of(&pii_vault(url, &["admin", "reencrypt", "--json"]))["reencrypted"],
        195,
        "198 values, 3 erased"
    );
    let audit = json_of(&pii_vault(url, &["audit", "--json"]));
    let rows = audit.as_array().expect("rows");
    assert!(rows.iter().all(
        |r| r["caller"] == "local:e2e-staff" && r["request_id"].as_str().is_some_and(|id| !id.is_empty())
    ));
    assert_eq!(rows.iter().filter(|r| r["action"] == "reveal" && r["outcome"] == "revealed").count(), 2 * 99);
    for action in ["find", "forget", "rotate-key", "reencrypt", "init-keys"] {
        assert!(rows.iter().any(|r| r["action"] == action), "{action} audited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_refuses_without_reason_says_errors_once_and_names_missing_settings() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    let service =
        LocalVaultService::start(&db, &kms, &workspace_binary("pii-vault-service-local"), "local:e2e").await;
    let url = &service.url.clone();

    let output = pii_vault(url, &["reveal", "--masked-ip", index.as_str()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("a reason is required"));
    assert!(output.stdout.is_empty());
    // (The service's readiness probe, a GET, is on the record as a refused `request`.)
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE action <> 'request'").await,
        0,
        "refused before contacting anything"
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(["audit"])
        .env_remove("PII_VAULT_URL")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        "pii-vault: configuration: PII_VAULT_URL is not set"
    );

    // A tampered row: refused, the error said once.
    db.tamper_vault_row("ip", index.as_str()).await;
    let output = pii_vault(url, &["reveal", "--masked-ip", index.as_str(), "--reason", REASON]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        "pii-vault: vault row: vault ciphertext failed authentication (tampered, moved to another row, or wrong key)"
    );
    // The service is unreachable: said so, by exit code 7.
    drop(service);
    let output = pii_vault(url, &["audit"]);
    assert_eq!(output.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .starts_with("pii-vault: cannot reach the vault service at http://127.0.0.1:")
    );
}

/// Red team: a body is whatever a sender chose. Printed by `quarantine show` (and its id by
/// `list`), nothing of it may reach the terminal as a control: no ESC (ANSI sequences, a
/// retitled window), no 8-bit CSI, no bidi override or zero-width character, no line
/// separator; `--json` gives the same body back to a parser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_quarantined_body_is_printed_inert() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let body =
        "{\"user_id\": \"\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202E}gnp.exe\u{200B}\u{2028}\r\n\u{7f}\"}";
    let id = "hostile-id";
    handler::handle(&app, event(&[(id.into(), body.into())])).await.expect("quarantined");
    let service =
        LocalVaultService::start(&db, &kms, &workspace_binary("pii-vault-service-local"), "local:e2e").await;
    let url = service.url.as_str();

    let inert = |output: &std::process::Output| {
        for stream in [&output.stdout, &output.stderr] {
            let text = String::from_utf8(stream.clone()).expect("utf-8");
            let bad: Vec<char> = text
                .chars()
                .filter(|c| {
                    *c != '\n'
                        && (c.is_control()
                            || login_etl_core::event::text::is_invisible(*c)
                            || *c == '\u{2028}')
                })
                .collect();
            assert!(bad.is_empty(), "{bad:?} reached the terminal: {text}");
        }
    };
    let shown = pii_vault(url, &["quarantine", "show", id, "--reason", REASON]);
    assert_eq!(shown.status.code(), Some(0), "{}", String::from_utf8_lossy(&shown.stderr));
    inert(&shown);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("\\u{001b}[2J"), "escaped, still readable");
    let json = pii_vault(url, &["--json", "quarantine", "show", id, "--reason", REASON]);
    inert(&json);
    assert_eq!(json_of(&json)["body"], body);
    let listed = pii_vault(url, &["quarantine", "list"]);
    assert_eq!(listed.status.code(), Some(0));
    inert(&listed);
    inert(&pii_vault(url, &["--json", "quarantine", "list"]));
    // A refusal does not echo what was typed either.
    let refused = pii_vault(url, &["quarantine", "list", "--since", "\u{1b}]0;pwned\u{7}"]);
    assert_eq!(refused.status.code(), Some(2));
    inert(&refused);
}

/// `audit verify` against the real service and its log file (the local stand-in for its
/// CloudWatch log stream): the untouched audit verifies; after the table's owner rewrites
/// a caller by a type change, or cuts the tail, it exits 10 naming the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_checks_the_chain_against_the_services_log() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    let log = std::env::temp_dir().join(format!("pii-vault-service-{}.log", unique_suffix()));
    let service = LocalVaultService::start_logging_to(
        &db,
        &kms,
        &workspace_binary("pii-vault-service-local"),
        "local:e2e-auditor",
        Some(&log),
    )
    .await;
    let url = service.url.as_str();
    for _ in 0..3 {
        json_of(&pii_vault(url, &["reveal", "--masked-ip", index.as_str(), "--reason", REASON, "--json"]));
    }
    // One page at a time unless --all: the cursor of the next is said on stderr.
    let page = pii_vault(url, &["audit", "--limit", "2", "--json"]);
    assert_eq!(json_of(&page).as_array().map(Vec::len), Some(2));
    assert!(String::from_utf8_lossy(&page.stderr).contains("more entries follow: --after"));
    let all = json_of(&pii_vault(url, &["audit", "--limit", "2", "--all", "--json"]));
    assert!(all.as_array().map(Vec::len) >= Some(4), "{all}");

    let log_arg = log.to_str().expect("utf-8 path");
    let verified = pii_vault(url, &["audit", "verify", "--log", log_arg]);
    assert_eq!(verified.status.code(), Some(0), "{}", String::from_utf8_lossy(&verified.stderr));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("chained entries verified"));

    // The owner cuts the last two entries and moves the head back.
    let end = db.count("SELECT max(seq) FROM pii_audit_log.pii_audit_entries").await;
    db.cut_audit_tail(end - 2).await;
    let caught = pii_vault(url, &["audit", "verify", "--log", log_arg, "--json"]);
    assert_eq!(caught.status.code(), Some(10), "{}", String::from_utf8_lossy(&caught.stdout));
    let report: serde_json::Value = serde_json::from_slice(&caught.stdout).expect("json");
    assert!(report["broken"]["seq"].as_i64() >= Some(end - 1), "{report}");
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_expire_asks_batch_after_batch_until_the_pass_is_done() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    let old = chrono::Utc::now().timestamp_millis() - 40 * 86_400_000;
    let records = [("x-1", "192.0.2.61", "dev-x1"), ("x-2", "192.0.2.62", "dev-x2")]
        .map(|(id, ip, device)| (id.to_owned(), login_body(id, ip, device)));
    handler::handle(&app, event_sent_at(&records[..1], old)).await.expect("old batch");
    handler::handle(&app, event_sent_at(&records[1..], old + 40 * 86_400_000)).await.expect("today's batch");
    db.connect()
        .await
        .batch_execute("UPDATE vault.pii_vault SET created_at = now() - interval '100 days'")
        .await
        .expect("age the vault");
    let service = LocalVaultService::start_with(
        &db,
        &kms,
        &workspace_binary("pii-vault-service-local"),
        "local:e2e-admin",
        &[("VAULT_RETENTION_DAYS", "30".to_owned())],
        None,
    )
    .await;

    let done = json_of(&pii_vault(&service.url, &["admin", "expire", "--batch-size", "1", "--json"]));
    assert_eq!(
        done,
        serde_json::json!({"expired": 2, "scanned": 4, "batches": 5, "retention_days": 30, "done": true})
    );
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault").await, 2);
    // Each batch a request on the record, with its count.
    let audit = json_of(&pii_vault(&service.url, &["audit", "--json"]));
    let batches: Vec<_> =
        audit.as_array().expect("rows").iter().filter(|r| r["action"] == "expire").collect();
    assert_eq!(batches.len(), 5);
    assert!(batches.iter().all(|r| r["outcome"] == "done" && r["caller"] == "local:e2e-admin"));
}
