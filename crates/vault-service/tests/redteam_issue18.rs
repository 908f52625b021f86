//! Red team of issue 18's claims (budgets, forget, erasure, locks, requests on the record,
//! bounded answers, the chained audit, reasons), against the real service code, Postgres
//! and moto KMS. Tests that run are attacks that hold; tests marked
//! `ignore = "BREAK: …"` are attacks that work today, each failing while its hole stands
//! (`cargo test -p pii-vault-service --test redteam_issue18 -- --ignored`).
//! Documentation addresses only (192.0.2.x, 198.51.100.x, 203.0.113.x).

#![recursion_limit = "256"]

use std::time::{Duration, Instant};

use login_etl::handler;
use login_etl_core::crypto::PiiField;
use pii_vault_protocol::{ForgetTarget, Outcome, Plaintext, RevealTarget};
use pii_vault_service::budget::Limits;
use pii_vault_service::http;
use pii_vault_service::{ServiceError, VaultService};
use testkit::*;
use tokio_postgres::error::SqlState;

const ROLE: &str = "arn:aws:sts::123456789012:assumed-role/pii-vault-staff";

fn staff_arn(session: &str) -> String {
    format!("{ROLE}/{session}")
}

/// POSTs `body` as `arn` through the function URL front; (status, body).
async fn post(service: &VaultService, arn: &str, body: &str, request_id: &str) -> (i64, String) {
    let answer =
        http::handle(service, &staff_and_key_admin_roles(), url_request(arn, body), request_id).await;
    (answer.status_code, answer.body.unwrap_or_default())
}

fn forget_body(field: &str, value: &str) -> String {
    serde_json::json!({"op": "forget", "field": field, "target": {"plaintext": value}, "reason": REASON})
        .to_string()
}

fn plaintext(value: &str) -> ForgetTarget {
    ForgetTarget::Plaintext(Plaintext::new(value))
}

/// A sample login with a user id and an ip: (user id, ip).
fn sample_user_and_ip(n: usize) -> (String, String) {
    let m = sample_messages()
        .into_iter()
        .filter(|m| m["user_id"].is_string() && m["ip"].is_string())
        .nth(n)
        .expect("a sample login");
    (m["user_id"].as_str().expect("u").to_owned(), m["ip"].as_str().expect("ip").to_owned())
}

// ------------------------------------------------------------------------------------
// Answers bounded
// ------------------------------------------------------------------------------------

/// Issue 18 ("answers bounded"): a function URL answers at most 6 MB. The audit listing
/// and the quarantine list are paged, but `find` answers every row of the value in one
/// answer for one budget unit. An ip shared by very many logins (a carrier NAT, an
/// office's egress) has tens of thousands of rows: the answer is larger than the function
/// URL can carry, so the unit is spent and the staff member gets an error from AWS instead.
#[tokio::test]
async fn a_find_of_a_value_shared_by_very_many_rows_stays_under_six_megabytes() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let ip = "192.0.2.10";
    let mask = app.keyring.indexer.index(PiiField::Ip, ip);
    // 25,000 logins from one egress ip (written here directly, as the ingest would).
    db.connect()
        .await
        .execute(
            "INSERT INTO login_data.user_logins (user_id, device_type, masked_ip, masked_device_id, locale, app_version,
                                      create_date, sqs_message_id, app_version_raw, sent_at, index_key_version)
             SELECT gen_random_uuid()::text, t.device_type, $1, t.masked_device_id, t.locale, t.app_version,
                    t.create_date, gen_random_uuid()::text, t.app_version_raw, t.sent_at, t.index_key_version
               FROM generate_series(1, 25000) g,
                    (SELECT * FROM login_data.user_logins WHERE masked_device_id IS NOT NULL LIMIT 1) t",
            &[&mask.as_str()],
        )
        .await
        .expect("the logins of one egress ip");
    let body = serde_json::json!({"op": "find", "field": "ip", "value": ip, "reason": null}).to_string();
    let (status, answer) = post(&service, &staff_arn("nat"), &body, "nat-find").await;
    assert_eq!(status, 200);
    assert!(
        answer.len() <= 6_000_000,
        "a find answered {} bytes: more than a function URL carries (6 MB), for one unit",
        answer.len()
    );
}

/// Issue 18 ("forget erases"; "statement_timeout on service sessions"). `forget` rewrote
/// every row of the value in one UPDATE, through a plpgsql row trigger (per row: jsonb
/// conversions, catalog lookups, a lookup in `pii_erasures`), under the session's 10 s
/// `statement_timeout`: a value in enough rows (an egress ip of a carrier or an office)
/// could never be forgotten, and the 503 told a present popular value from an absent one.
/// Now the rows are rewritten in statements of 5000 through a WHEN-clause guard.
#[tokio::test]
async fn a_value_in_very_many_rows_can_be_forgotten() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let ip = "192.0.2.11";
    let mask = app.keyring.indexer.index(PiiField::Ip, ip);
    db.connect()
        .await
        .execute(
            "INSERT INTO login_data.user_logins (user_id, device_type, masked_ip, masked_device_id, locale, app_version,
                                      create_date, sqs_message_id, app_version_raw, sent_at, index_key_version)
             SELECT gen_random_uuid()::text, t.device_type, $1, t.masked_device_id, t.locale, t.app_version,
                    t.create_date, gen_random_uuid()::text, t.app_version_raw, t.sent_at, t.index_key_version
               FROM generate_series(1, 150000) g,
                    (SELECT * FROM login_data.user_logins WHERE masked_device_id IS NOT NULL LIMIT 1) t",
            &[&mask.as_str()],
        )
        .await
        .expect("the logins of one egress ip");
    let started = Instant::now();
    let result = service.forget(&staff("pop"), PiiField::Ip, &plaintext(ip), Some(REASON)).await;
    eprintln!(
        "forget of a value in 150k rows: {:?} after {:?}",
        result.as_ref().map_err(|e| e.to_string()),
        started.elapsed()
    );
    assert_eq!(result.expect("forgotten"), Outcome::Forgotten);
    let left =
        db.count(&format!("SELECT count(*) FROM login_data.user_logins WHERE masked_ip = '{mask}'")).await;
    assert_eq!(left, 0, "{left} rows keep the value's mask");
}

// ------------------------------------------------------------------------------------
// Erasure unlinks
// ------------------------------------------------------------------------------------

/// Issue 18 ("after forget, nothing a person can reach — find, … the audit listing — links
/// the erased value to its rows"). The audit keeps a mask's keyed digest, equal for equal
/// masks. A reveal by user id made before the erasure recorded the digest of the user's
/// ip next to `user_id:U` (one request id). After the forget, a staff member who guesses
/// the value runs one `find` of it: 0 rows, but its audit entry records the same digest
/// (find records the mask it computed), and the listing joins it to the old reveal's
/// target. The erased value is linked to its user's rows for one unit.
#[tokio::test]
async fn after_forget_a_find_of_the_value_is_not_linked_to_its_rows_by_the_audit_listing() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (user, ip) = sample_user_and_ip(3);

    // Before the erasure request: a ticket had the user's values revealed.
    service.reveal(&staff("ann"), &RevealTarget::UserId(user.clone()), Some(REASON)).await.expect("reveal");
    // The erasure request.
    let outcome = service.forget(&staff("ann"), PiiField::Ip, &plaintext(&ip), Some(REASON)).await;
    assert_eq!(outcome.expect("forget"), Outcome::Forgotten);

    // Another staff member with a guess: one find, which finds nothing.
    let (_, rows) = service.find(&staff("ben"), PiiField::Ip, &ip, None).await.expect("find");
    assert!(rows.is_empty(), "the erased value still finds rows");

    let entries = service.audit(&staff("ben"), None, None, None).await.expect("audit").0;
    let guess = entries
        .iter()
        .rev()
        .find(|e| e.action == "find" && e.caller.ends_with("/ben"))
        .and_then(|e| e.blind_index.clone())
        .expect("the guess's digest is listed");
    let requests: Vec<_> = entries
        .iter()
        .filter(|e| e.blind_index.as_deref() == Some(guess.as_str()) && !e.caller.ends_with("/ben"))
        .filter_map(|e| e.request_id.clone())
        .collect();
    let linked: Vec<_> = entries
        .iter()
        .filter(|e| e.request_id.as_ref().is_some_and(|r| requests.contains(r)))
        .filter_map(|e| e.target.clone())
        .collect();
    assert!(
        linked.is_empty(),
        "the audit listing links the erased value (guessed by one find) to {linked:?}"
    );

    // No oracle: the find of the erased value is listed as that of a value never seen.
    service.find(&staff("ben"), PiiField::Ip, "203.0.113.77", None).await.expect("find");
    let entries = service.audit(&staff("ben"), None, None, None).await.expect("audit").0;
    let finds: Vec<_> = entries.iter().filter(|e| e.action == "find" && e.caller.ends_with("/ben")).collect();
    let [erased, absent] = [finds[finds.len() - 2], finds[finds.len() - 1]];
    let shape = |e: &pii_vault_protocol::AuditRow| {
        (e.field.clone(), e.outcome.clone(), e.detail.clone(), e.blind_index.as_ref().map(String::len))
    };
    assert_eq!(shape(erased), shape(absent), "an erased value's find differs from an absent one's");
    assert_eq!(shape(erased).3, Some(64));
    let digests = |d: &Option<String>| entries.iter().filter(|e| &e.blind_index == d).count();
    assert_eq!(digests(&erased.blind_index), 1, "the erased value's digest is recorded elsewhere");
}

/// Held: `forget` answers and records the same for a value that was there (in the vault,
/// in rows) and one never seen, by plaintext and by mask; the audit entries (request and
/// outcome, in `pii_audit_entries`, not only the view) differ only in ids, times and
/// chain; both spend one unit. Latency differs (printed, not asserted): a forget that
/// rewrites rows is slower, but it costs the unit a find costs, which answers more.
#[tokio::test]
async fn forget_answers_and_records_a_present_and_an_absent_value_alike() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 4).await;
    let (_, present) = sample_user_and_ip(5);
    let absent = "203.0.113.91";
    let (_, other) = sample_user_and_ip(6);
    let present_mask = app.keyring.indexer.index(PiiField::Ip, &other);
    let absent_mask = app.keyring.indexer.index(PiiField::Ip, "203.0.113.92");
    let arn = staff_arn("fay");

    let mut answers = Vec::new();
    for (id, body) in [
        ("p-plain", forget_body("ip", &present)),
        ("a-plain", forget_body("ip", absent)),
        (
            "p-mask",
            serde_json::json!({"op": "forget", "field": "ip", "target": {"mask": present_mask.as_str()}, "reason": REASON})
                .to_string(),
        ),
        (
            "a-mask",
            serde_json::json!({"op": "forget", "field": "ip", "target": {"mask": absent_mask.as_str()}, "reason": REASON})
                .to_string(),
        ),
    ] {
        let started = Instant::now();
        answers.push((id, post(&service, &arn, &body, id).await, started.elapsed()));
    }
    eprintln!("forget latencies: {:?}", answers.iter().map(|a| (a.0, a.2)).collect::<Vec<_>>());
    assert_eq!(answers[0].1, answers[1].1, "by plaintext: the answer tells present from absent");
    assert_eq!(answers[2].1, answers[3].1, "by mask: the answer tells present from absent");
    assert_eq!(answers[0].1.0, 200);

    // Every entry of each request, as an auditor (and so staff, through the view) reads them.
    let entries = |request_id: &'static str| {
        let db = &db;
        async move {
            db.connect()
                .await
                .query(
                    "SELECT action, field, target, reason, outcome, detail, outcome_of IS NOT NULL,
                            blind_index IS NOT NULL
                       FROM pii_audit_log.pii_audit_entries WHERE request_id = $1 ORDER BY id",
                    &[&request_id],
                )
                .await
                .expect("entries")
                .iter()
                .map(|r| {
                    format!(
                        "{:?}",
                        (
                            r.get::<_, String>(0),
                            r.get::<_, Option<String>>(1),
                            r.get::<_, Option<String>>(2),
                            r.get::<_, Option<String>>(3),
                            r.get::<_, Option<String>>(4),
                            r.get::<_, Option<String>>(5),
                            r.get::<_, bool>(6),
                            r.get::<_, bool>(7),
                        )
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(entries("p-plain").await, entries("a-plain").await, "entries differ by plaintext");
    assert_eq!(entries("p-mask").await, entries("a-mask").await, "entries differ by mask");
    // Four units spent: the fifth request of any kind is refused.
    let (status, _) = post(&service, &arn, &forget_body("ip", "203.0.113.93"), "fifth").await;
    assert_eq!(status, 429, "each forget spends a unit");
    assert_eq!(
        db.count("SELECT count(*) FROM vault.pii_erasures").await,
        4,
        "the refused forget marked nothing"
    );
}

/// Held: a later login with an erased value in another spelling (IPv4-mapped IPv6, white
/// space around a device id) gets the value's token and is never vaulted: the ingest
/// canonicalizes before it masks, so no spelling brings the value back.
#[tokio::test]
async fn a_later_login_with_an_erased_value_in_another_spelling_gets_its_token() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    service
        .forget(&staff("sue"), PiiField::Ip, &plaintext("192.0.2.60"), Some(REASON))
        .await
        .expect("forget");
    let device = ForgetTarget::Plaintext(Plaintext::new("dev-erased-1"));
    service.forget(&staff("sue"), PiiField::DeviceId, &device, Some(REASON)).await.expect("forget");
    let vaulted = db.count("SELECT count(*) FROM vault.pii_vault").await;
    let later = event(&[
        ("later-1".to_owned(), login_body("u-later-1", "::ffff:192.0.2.60", " dev-erased-1 ")),
        ("later-2".to_owned(), login_body("u-later-2", "::FFFF:c000:023c", "dev-erased-1\t")),
    ]);
    let (response, stats) = handler::handle_with_stats(&app, later).await.expect("batch");
    assert!(response.batch_item_failures.is_empty());
    eprintln!("written {}, quarantined {}", stats.written, stats.quarantined);
    assert_eq!(
        db.count("SELECT count(*) FROM vault.pii_vault").await,
        vaulted,
        "an erased value was vaulted again"
    );
    let ip_mask = app.keyring.indexer.index(PiiField::Ip, "192.0.2.60");
    let dev_mask = app.keyring.indexer.index(PiiField::DeviceId, "dev-erased-1");
    let raw = db
        .count(&format!(
            "SELECT count(*) FROM login_data.user_logins WHERE masked_ip = '{ip_mask}' OR masked_device_id = '{dev_mask}'"
        ))
        .await;
    assert_eq!(raw, 0, "a later login wrote the erased value's mask");
    let tokens = db
        .count(
            "SELECT count(*) FROM login_data.user_logins u WHERE u.sqs_message_id LIKE 'later-%'
                AND EXISTS (SELECT 1 FROM vault.pii_erasures e WHERE e.field = 'ip' AND e.token = u.masked_ip)",
        )
        .await;
    assert_eq!(tokens, stats.written as i64, "each later login carries the ip's token");
    let (_, rows) = service.find(&staff("sue"), PiiField::Ip, "::ffff:192.0.2.60", None).await.expect("find");
    assert!(rows.is_empty(), "a find in another spelling links the erased value");
}

/// Documented limit, asserted as documented (docs/vault.md, "No oracle for values"): after
/// a forget of a guessed value, `quarantine list` shows which bodies held it
/// (`erased_by = forget`); the guess costs the forget's unit. Kept as a test so that a
/// change of it is noticed.
#[tokio::test]
async fn quarantine_list_after_a_forget_shows_the_bodies_that_held_the_guess_as_documented() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let event = event(&[
        ("q-held".to_owned(), rejected_login_body("u-q1", "192.0.2.55", "dev-q1")),
        ("q-other".to_owned(), rejected_login_body("u-q2", "192.0.2.56", "dev-q2")),
    ]);
    let (_, stats) = handler::handle_with_stats(&app, event).await.expect("batch");
    assert_eq!(stats.quarantined, 2);
    service
        .forget(&staff("gil"), PiiField::Ip, &plaintext("192.0.2.55"), Some(REASON))
        .await
        .expect("forget");
    let filter = pii_vault_service::QuarantineFilter::default();
    let (rows, _) = service.quarantine_list(&staff("gil"), &filter).await.expect("list");
    let listed = serde_json::to_string(&rows).expect("json");
    let held = rows.iter().find(|r| r.message_id == "q-held").expect("listed");
    let other = rows.iter().find(|r| r.message_id == "q-other").expect("listed");
    assert_ne!(
        serde_json::to_string(held).expect("json").replace("q-held", ""),
        serde_json::to_string(other).expect("json").replace("q-other", ""),
        "documented: the list tells which body held the forgotten guess; if this changed, update docs/vault.md"
    );
    assert!(
        !listed.contains(app.keyring.indexer.index(PiiField::Ip, "192.0.2.55").as_str()),
        "a mask listed"
    );
}

// ------------------------------------------------------------------------------------
// Locks other logins can take
// ------------------------------------------------------------------------------------

/// The statements PostgreSQL may lock a table for before it checks any right on it (or,
/// for the others, that a login without rights must be refused before they lock): each
/// would queue a lock on `name` that every later INSERT waits behind.
fn lock_first_statements(name: &str) -> Vec<String> {
    // No right on a table is needed to hold ACCESS SHARE on it to the end of a transaction:
    // neither PREPARE nor a view checks SELECT. On a table out of reach they are refused;
    // on a view a person may read they hold the view and its table, as the person's read
    // does anyway.
    let holds = [
        format!("PREPARE stall AS SELECT 1 FROM {name}"),
        format!("CREATE TEMP VIEW stall AS SELECT 1 FROM {name}"),
    ];
    let holds = if name.contains('.') { holds.to_vec() } else { Vec::new() };
    holds
        .into_iter()
        .chain([
            format!("CREATE RULE stall AS ON INSERT TO {name} DO ALSO NOTHING"),
            format!("LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"),
            format!("LOCK TABLE {name} IN SHARE MODE"),
            format!("ALTER TABLE {name} ADD COLUMN stall integer"),
            format!("COMMENT ON TABLE {name} IS 'stall'"),
            format!(
                "CREATE TRIGGER stall BEFORE INSERT ON {name} FOR EACH STATEMENT
             EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()"
            ),
            format!("CREATE TEMP TABLE stall (x bigint REFERENCES {name})"),
            format!("TRUNCATE {name}"),
        ])
        .collect()
}

/// Sends every lock-first statement on every name, each from a session of its own of
/// `login`, without waiting for it: (statement, its eventual result).
async fn queue_lock_first(
    login: &tokio_postgres::Config,
    names: &[&str],
) -> Vec<(String, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>)> {
    let mut queued = Vec::new();
    for name in names {
        for sql in lock_first_statements(name) {
            let session = connect(login).await;
            let statement = sql.clone();
            queued.push((
                sql,
                tokio::spawn(
                    async move { session.batch_execute(&format!("BEGIN; {statement}; COMMIT")).await },
                ),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    queued
}

/// Every queued statement was refused: on a table's qualified name at once, for want of
/// the schema (42501, before any lock); on a view, for want of ownership or because it is
/// no table.
async fn all_refused(queued: Vec<(String, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>)>) {
    for (sql, task) in queued {
        let error = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap_or_else(|_| panic!("{sql}: still waiting after the reader ended"))
            .expect("task")
            .expect_err(&sql);
        let refused = [
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::WRONG_OBJECT_TYPE,
            SqlState::INVALID_FOREIGN_KEY,
            SqlState::FEATURE_NOT_SUPPORTED,
        ];
        assert!(error.code().is_some_and(|code| refused.contains(code)), "{sql}: {error:?}");
        if ["login_data.", "pii_audit_log.", "pii_budget.", "vault."]
            .iter()
            .any(|schema| sql.contains(schema))
        {
            assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error:?}");
        }
    }
}

/// Issue 18 ("no lock another database login can take … to stall the service"). The
/// auditor may read the audit, so it may hold ACCESS SHARE on it as long as it likes (an
/// open transaction), and `CREATE RULE` (and a few others) lock the table they name before
/// checking ownership: a second auditor session once queued ACCESS EXCLUSIVE on
/// `pii_audit_entries` behind the first, and every request of the service (each writes its
/// entry) queued behind that until `lock_timeout`. Now the audit's tables are in
/// `pii_audit_log`, which only the service may use, and the auditor reads views in
/// `public`: the strongest attack left reads through the views in an open transaction (so
/// holding ACCESS SHARE on the tables behind them) and queues every lock-first statement
/// on each view and on each table's qualified name. Those on the tables are refused before
/// any lock, those on a view wait for the view only, and the service goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auditor_login_can_stall_the_vault_service_with_a_queued_lock_on_the_audit() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (_, ip) = sample_user_and_ip(0);
    service.find(&staff("cy"), PiiField::Ip, &ip, None).await.expect("warm");

    let auditor = db.login_in("login_etl_auditor").await;
    let mut reader = connect(&auditor).await;
    let tx = reader.transaction().await.expect("tx");
    for view in ["pii_audit_entries", "pii_audit", "pii_audit_refusals_over_limit"] {
        tx.query_one(&format!("SELECT count(*) FROM {view}"), &[]).await.expect("the auditor reads");
    }
    let queued = queue_lock_first(
        &auditor,
        &[
            "pii_audit_entries",
            "pii_audit",
            "pii_audit_refusals_over_limit",
            "pii_audit_log.pii_audit_entries",
            "pii_audit_log.pii_audit_chain_head",
            "pii_audit_log.pii_audit_refusals_over_limit",
            "pii_audit_log.pii_audit",
            "pii_budget.pii_budget_keys",
            "pii_budget.pii_budget_spent",
            "vault.pii_vault",
            "vault.pii_keys",
            "vault.pii_erasures",
        ],
    )
    .await;

    let started = Instant::now();
    let result = service.find(&staff("cy"), PiiField::Ip, &ip, None).await;
    let elapsed = started.elapsed();
    tx.rollback().await.expect("rollback");
    assert!(
        result.is_ok() && elapsed < Duration::from_secs(2),
        "an auditor stalled the service: {:?} after {elapsed:?}",
        result.err().map(|e| e.to_string())
    );
    all_refused(queued).await;
}

/// Issue 18 ("no lock another database login can take … to stall … ingest"). An analyst
/// session reading `user_logins` in an open transaction, and a second queuing `CREATE RULE`
/// (ACCESS EXCLUSIVE, before the ownership check) behind it, once held every batch's
/// INSERT back until `lock_timeout`: the analyst alone stopped ingest. Now the table is
/// `login_data.user_logins`, in a schema only the function and the service may use, and
/// the analyst reads the view `public.user_logins`: the strongest attack left reads
/// through the view in an open transaction and queues every lock-first statement on the
/// view and on the qualified tables the function writes. Those on the tables are refused
/// before any lock; those on the view wait for the view only; the batch is written at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_analyst_login_can_stall_ingest_beyond_the_batches_in_flight() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;

    let analyst = db.login_in("login_etl_analyst").await;
    let mut reader = connect(&analyst).await;
    let tx = reader.transaction().await.expect("tx");
    tx.query_one("SELECT count(*) FROM user_logins", &[]).await.expect("the analyst reads");
    let queued = queue_lock_first(
        &analyst,
        &[
            "user_logins",
            "login_data.user_logins",
            "login_data.login_quarantine",
            "login_data.login_quarantine_masks",
            "vault.pii_vault",
            "vault.pii_keys",
            "vault.pii_erasures",
        ],
    )
    .await;

    let started = Instant::now();
    let batch = tokio::time::timeout(
        Duration::from_secs(30),
        handler::handle_with_stats(&app, event(&many_logins(5, "late"))),
    )
    .await;
    let elapsed = started.elapsed();
    tx.rollback().await.expect("rollback");
    let written = match &batch {
        Ok(Ok((response, stats))) if response.batch_item_failures.is_empty() => stats.written,
        _ => 0,
    };
    assert!(
        written == 5 && elapsed < Duration::from_secs(2),
        "an analyst stalled ingest: {written} of 5 written after {elapsed:?} ({:?})",
        batch
            .as_ref()
            .map(|b| b.as_ref().map(|(r, _)| r.batch_item_failures.len()).map_err(|e| e.to_string()))
    );
    all_refused(queued).await;
}

/// The quarantine purge's login has no right on the quarantine any more (it calls
/// `purge_expired_quarantine`): it cannot read, row-lock or lock the table, nor name it
/// in a statement that locks first, so it can hold back neither the function's batches
/// nor the service while the purge of another body is waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_login_cannot_name_or_lock_the_quarantine() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let aged = event(&[("q-aged".to_owned(), rejected_login_body("u-aged", "192.0.2.58", "dev-aged"))]);
    handler::handle_with_stats(&app, aged).await.expect("quarantined");
    let purge = db.login_in("login_etl_quarantine_purge").await;
    let session = connect(&purge).await;
    for sql in [
        "SELECT message_id FROM login_data.login_quarantine FOR UPDATE",
        "SELECT message_id FROM login_data.login_quarantine",
        "UPDATE login_data.login_quarantine SET erased_by = 'purge'",
        "SELECT 1 FROM login_data.login_quarantine_masks FOR KEY SHARE",
    ] {
        let error = session.batch_execute(sql).await.expect_err(sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error:?}");
    }
    // Nor by the old name: there is nothing of that name in public.
    let error = session.batch_execute("SELECT 1 FROM login_quarantine").await.expect_err("gone");
    assert_eq!(error.code(), Some(&SqlState::UNDEFINED_TABLE), "{error}");

    // A batch in flight holds the quarantine (its INSERT); the purge login's lock-first
    // statements on it are refused at once rather than queued behind the batch.
    let mut batch_session = db.connect().await;
    let batch = batch_session.transaction().await.expect("tx");
    batch
        .execute("UPDATE login_data.login_quarantine SET receive_count = receive_count WHERE false", &[])
        .await
        .expect("a writer holds the table");
    let queued =
        queue_lock_first(&purge, &["login_data.login_quarantine", "login_data.login_quarantine_masks"]).await;
    // A batch that writes both the logins and the quarantine.
    let mut messages = many_logins(3, "purge-late");
    messages.push(("q-late".to_owned(), rejected_login_body("u-late", "192.0.2.59", "dev-late")));
    let started = Instant::now();
    let (_, stats) = handler::handle_with_stats(&app, event(&messages)).await.expect("the batch");
    let elapsed = started.elapsed();
    assert_eq!(stats.written, 3);
    batch.rollback().await.expect("rollback");
    assert!(elapsed < Duration::from_secs(2), "the purge login held ingest back: {elapsed:?}");
    all_refused(queued).await;
}

/// The purge still works through its function, as the V6 policies allowed and no further:
/// it erases the bodies past the retention and labels them `purge`; asked for less than a
/// day (0, or a negative number of days) it still spares every body younger than a day; it
/// never touches a body already erased (a `forget` stays a `forget`, with its date); and
/// only the purge's login and the service may call it.
#[tokio::test]
async fn the_purge_erases_through_its_function_only_what_is_older_than_a_day_and_relabels_nothing() {
    use login_etl_core::store::quarantine::purge_expired;

    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let bodies = [("q-2d", "192.0.2.61"), ("q-12h", "192.0.2.62"), ("q-forgot", "192.0.2.63")]
        .map(|(id, ip)| (id.to_owned(), rejected_login_body(id, ip, "dev-purge")));
    handler::handle_with_stats(&app, event(&bodies)).await.expect("quarantined");
    let owner = db.connect().await;
    owner
        .batch_execute(
            "UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '2 days'
              WHERE message_id = 'q-2d';
             UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '12 hours'
              WHERE message_id = 'q-12h';
             UPDATE login_data.login_quarantine
                SET quarantined_at = now() - interval '3 days', key_version = NULL, nonce = NULL,
                    ciphertext = NULL, erased_at = '2026-01-01', erased_by = 'forget'
              WHERE message_id = 'q-forgot';",
        )
        .await
        .expect("aged");

    let purge = connect(&db.login_in("login_etl_quarantine_purge").await).await;
    let raw: i64 = purge
        .query_one("SELECT public.purge_expired_quarantine(-5, 100)", &[])
        .await
        .expect("the purge login calls it")
        .get(0);
    assert_eq!(raw, 1, "a negative retention is a day");
    let pool =
        login_etl_core::store::stateless_pool(db.login_in("login_etl_quarantine_purge").await.into(), 1)
            .expect("pool");
    let mut pooled = pool.get().await.expect("session");
    assert_eq!(purge_expired(&mut pooled, 0, 100).await.expect("again"), 0);
    assert_eq!(purge_expired(&mut pooled, 1, 0).await.expect("no rows asked"), 0);
    let state = |id: &'static str| {
        let owner = &owner;
        async move {
            let row = owner
                .query_one(
                    "SELECT erased_by::text, erased_at::text, ciphertext IS NULL
                       FROM login_data.login_quarantine WHERE message_id = $1",
                    &[&id],
                )
                .await
                .expect(id);
            (row.get::<_, Option<String>>(0), row.get::<_, Option<String>>(1), row.get::<_, bool>(2))
        }
    };
    let (by, _, erased) = state("q-2d").await;
    assert_eq!((by.as_deref(), erased), (Some("purge"), true), "the expired body is purged");
    assert_eq!(state("q-12h").await, (None, None, false), "a body younger than a day was erased");
    let (by, at, _) = state("q-forgot").await;
    assert_eq!(by.as_deref(), Some("forget"), "an erasure was relabelled");
    assert!(at.is_some_and(|at| at.starts_with("2026-01-01")), "an erasure was redated");

    for group in ["login_etl_analyst", "login_etl_auditor", "login_etl_vault_reader", "login_etl_writer"] {
        let other = connect(&db.login_in(group).await).await;
        let error =
            other.batch_execute("SELECT public.purge_expired_quarantine(1, 100)").await.expect_err(group);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{group}: {error}");
    }
}

/// Was a hole of issue 18 ("no lock another database login can take … to stall the
/// service"): the quarantine purge's login erases bodies older than a day (through
/// `purge_expired_quarantine`, its only right since version 12), and the rows it erased
/// stay locked until its transaction ends (a SECURITY DEFINER function does not change
/// that: the locks belong to the caller's transaction). Holding the row of a body that
/// holds a value made every `forget` of that value fail after the service's
/// `lock_timeout`. Now forget, show and replay skip an old body another session holds;
/// its masks become the token, so it stays erased for them until it is erased for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_login_cannot_hold_back_the_forget_of_a_quarantined_value() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let event = event(&[("q-old".to_owned(), rejected_login_body("u-old", "192.0.2.57", "dev-old"))]);
    handler::handle_with_stats(&app, event).await.expect("quarantined");
    // Two days old (the owner dates it; the purge's policy is about age).
    db.connect()
        .await
        .execute(
            "UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '2 days' WHERE message_id = 'q-old'",
            &[],
        )
        .await
        .expect("aged");

    let purge = db.login_in("login_etl_quarantine_purge").await;
    let mut holder = connect(&purge).await;
    let tx = holder.transaction().await.expect("tx");
    let erased: i64 = tx
        .query_one("SELECT public.purge_expired_quarantine(1, 100)", &[])
        .await
        .expect("the purge login's function locks the rows it erases, in the caller's transaction")
        .get(0);
    assert_eq!(erased, 1);

    let started = Instant::now();
    let result = service.forget(&staff("ida"), PiiField::Ip, &plaintext("192.0.2.57"), Some(REASON)).await;
    let elapsed = started.elapsed();
    // While the purge login still holds the body, it is erased for everyone who asks.
    let started = Instant::now();
    let shown = service.quarantine_show(&staff("ida"), "q-old", None, Some(REASON)).await;
    let shown_after = started.elapsed();
    tx.rollback().await.expect("rollback");
    assert!(
        result.is_ok() && elapsed < Duration::from_secs(2),
        "the purge login held back an erasure: {:?} after {elapsed:?}",
        result.err().map(|e| e.to_string())
    );
    assert!(
        matches!(&shown, Ok(s) if s.outcome == Outcome::Erased && s.body.is_none())
            && shown_after < Duration::from_secs(2),
        "the held body was shown or held back show: {:?} after {shown_after:?}",
        shown.map(|s| s.outcome)
    );
    // Released (the purge rolled back): the next show erases it for good.
    service.quarantine_show(&staff("ida"), "q-old", None, Some(REASON)).await.expect("show");
    let row = db
        .connect()
        .await
        .query_one(
            "SELECT ciphertext IS NULL, erased_by FROM login_data.login_quarantine WHERE message_id = 'q-old'",
            &[],
        )
        .await
        .expect("row");
    assert_eq!((row.get::<_, bool>(0), row.get::<_, Option<String>>(1).as_deref()), (true, Some("forget")));
}

/// Held: the people's views in `public` are no way in. No role but their owners holds any
/// privilege on them other than SELECT, so no person may write through one, row-lock
/// through one, or `LOCK TABLE` one (which would lock the table behind it) beyond ACCESS
/// SHARE; and the function and the service hold none on them at all.
#[tokio::test]
async fn the_views_in_public_are_select_only_and_lock_nothing_behind_them() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let views = ["user_logins", "pii_audit", "pii_audit_entries", "pii_audit_refusals_over_limit"];
    let other_grants = db
        .count(
            "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v'
                AND a.grantee <> c.relowner
                AND (a.privilege_type <> 'SELECT'
                     OR a.grantee NOT IN ('login_etl_analyst'::regrole, 'login_etl_vault_reader'::regrole,
                                          'login_etl_auditor'::regrole))",
        )
        .await;
    assert_eq!(other_grants, 0, "a view in public grants more than SELECT to the people");
    for group in [
        "login_etl_analyst",
        "login_etl_vault_reader",
        "login_etl_auditor",
        "login_etl_quarantine_purge",
        "login_etl_writer",
        "login_etl_vault_service",
    ] {
        let mut other = connect(&db.login_in(group).await).await;
        for view in views {
            for sql in [
                format!("INSERT INTO {view} DEFAULT VALUES"),
                format!("UPDATE {view} SET user_id = user_id"),
                format!("DELETE FROM {view}"),
                format!("SELECT 1 FROM {view} FOR KEY SHARE"),
                format!("LOCK TABLE {view} IN ROW EXCLUSIVE MODE"),
            ] {
                let tx = other.transaction().await.expect("tx");
                let error = tx.batch_execute(&sql).await.expect_err(&sql);
                let refused = [
                    SqlState::INSUFFICIENT_PRIVILEGE,
                    SqlState::UNDEFINED_COLUMN,
                    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    SqlState::FEATURE_NOT_SUPPORTED,
                ];
                assert!(error.code().is_some_and(|code| refused.contains(code)), "{group}: {sql}: {error:?}");
            }
        }
    }
}

/// Held: every transaction of the service is bounded by `lock_timeout` and
/// `statement_timeout` (`SET LOCAL` as it begins: `store::begin`), whatever the login's
/// defaults, and its sessions carry nothing (so a transaction pooler may share them).
#[tokio::test]
async fn service_transactions_have_a_lock_timeout_whatever_the_login_defaults() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    init_keys(&db, &kms).await;
    let login = db.login_in("login_etl_vault_service").await;
    // A login-level default cannot undo them (the transaction's SET LOCAL wins).
    db.admin_connect()
        .await
        .batch_execute(&format!("ALTER ROLE {} SET lock_timeout = 0", login.get_user().expect("user")))
        .await
        .expect("alter role");
    let service = vault_service_on(login, 1, &kms, 100);
    let client = service.pool().get().await.expect("session");
    let lock: String = client.query_typed_one("SHOW lock_timeout", &[]).await.expect("show").get(0);
    assert_eq!(lock, "0", "nothing set on the session");
    drop(client);

    // A forget in progress elsewhere holds the erasure lock: this one waits no longer
    // than the bound (3 s), and fails with nothing done.
    let mut holder = db.connect().await;
    let other = holder.transaction().await.expect("begin");
    other.batch_execute("SELECT only_row FROM pii_locks.erasure FOR UPDATE").await.expect("lock");
    let started = Instant::now();
    let forget = ForgetTarget::Plaintext(Plaintext::new("192.0.2.1"));
    let error =
        service.forget(&staff("lena"), PiiField::Ip, &forget, Some(REASON)).await.expect_err("bounded");
    let waited = started.elapsed();
    other.rollback().await.expect("release");
    let ServiceError::Db(db_error) = &error else { panic!("{error:?}") };
    assert_eq!(db_error.code(), Some(&SqlState::LOCK_NOT_AVAILABLE), "{error:?}");
    assert!(waited < Duration::from_secs(8), "bounded by lock_timeout (3 s): {waited:?}");
}

/// Held: no other login can lock the chain head or the budget rows, nor the erasure
/// lock's row, and the audit owner's role cannot be used by any login but the migrator.
#[tokio::test]
async fn no_person_login_can_lock_the_chain_head_the_budget_rows_or_the_erasure_row() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (_, ip) = sample_user_and_ip(0);
    service.find(&staff("kit"), PiiField::Ip, &ip, None).await.expect("rows exist");
    for group in [
        "login_etl_analyst",
        "login_etl_vault_reader",
        "login_etl_auditor",
        "login_etl_quarantine_purge",
        "login_etl_writer",
    ] {
        let mut other = connect(&db.login_in(group).await).await;
        for sql in [
            "SELECT 1 FROM pii_audit_log.pii_audit_chain_head FOR UPDATE",
            "SELECT 1 FROM pii_audit_log.pii_audit_chain_head FOR KEY SHARE",
            "LOCK TABLE pii_audit_log.pii_audit_chain_head IN ACCESS EXCLUSIVE MODE",
            "LOCK TABLE pii_audit_log.pii_audit_entries IN SHARE MODE",
            "SELECT 1 FROM pii_audit_log.pii_audit_entries FOR KEY SHARE",
            "SELECT 1 FROM pii_budget.pii_budget_keys FOR KEY SHARE",
            "SET ROLE login_etl_audit_owner",
            "SET ROLE login_etl_vault_service",
        ] {
            let tx = other.transaction().await.expect("tx");
            let error = tx.batch_execute(sql).await.expect_err(sql);
            assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{group}: {sql}: {error}");
        }
        if group != "login_etl_writer" {
            let tx = other.transaction().await.expect("tx");
            let error =
                tx.batch_execute("SELECT 1 FROM pii_locks.erasure FOR KEY SHARE").await.expect_err(group);
            assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{group}: {error}");
        }
    }
}

// ------------------------------------------------------------------------------------
// Requests on the record
// ------------------------------------------------------------------------------------

/// Issue 18 ("authorize-before-validate … refusal rows rate-limited per caller"; the
/// flood test: "staff asking for an admin operation leaves at most the limit of rows").
/// serde accepts an internally tagged enum as a JSON array whose first element is the
/// tag, so `["rotate-key"]` parsed as `Request::RotateKey`; the front read the op from a
/// JSON object only, saw none (`request`), and let staff through: two entries per request,
/// outside the refusal limit. Now a body that is not a JSON object is refused at the front
/// (400), within the limit.
#[tokio::test]
async fn an_admin_operation_sent_as_an_array_is_refused_at_the_front_within_the_limit() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let limit = pii_vault_service::audit::REFUSAL_ROWS_PER_MINUTE;
    let arn = staff_arn("sly");
    let bodies = [r#"["rotate-key"]"#, r#"["init-keys"]"#, r#"["reencrypt", 10]"#];
    for n in 0..(limit + 10) {
        let body = bodies[n as usize % bodies.len()];
        let (status, answer) = post(&service, &arn, body, &format!("arr-{n}")).await;
        assert!(matches!(status, 400 | 403), "{body}: {status} {answer}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM vault.pii_keys WHERE purpose = 'data' AND version > 1").await,
        0
    );
    let entries = db
        .count(&format!("SELECT count(*) FROM pii_audit_log.pii_audit_entries WHERE caller = '{arn}'"))
        .await;
    assert!(entries <= limit, "{entries} audit entries from {} refused requests (limit {limit})", limit + 10);
}

/// Issue 18 ("refusal rows rate-limited per caller"; "a flood of refusals leaves at most
/// the limit of rows"). The limit is keyed by the exact caller ARN. A principal that can
/// assume any role with a session name of its choosing (in no role of the service) gets
/// a fresh limit per session name: 40 names × 2 refusals leave 80 rows, and
/// `pii_audit_refusals_over_limit` never counts a thing.
#[tokio::test]
async fn a_flood_of_refusals_under_many_session_names_of_one_role_stays_within_the_limit() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let limit = pii_vault_service::audit::REFUSAL_ROWS_PER_MINUTE;
    let mut sent = 0;
    for session in 0..40 {
        let arn = format!("arn:aws:sts::123456789012:assumed-role/developer/m-{session}");
        for n in 0..2 {
            let (status, _) = post(&service, &arn, "not json", &format!("m-{session}-{n}")).await;
            assert_eq!(status, 403);
            sent += 1;
        }
    }
    let rows = db
        .count("SELECT count(*) FROM pii_audit_log.pii_audit_entries WHERE caller LIKE '%/developer/m-%'")
        .await;
    let counted = db
        .count("SELECT coalesce(sum(refused), 0)::int8 FROM pii_audit_log.pii_audit_refusals_over_limit WHERE caller LIKE '%/developer/%'")
        .await;
    assert_eq!(rows + counted, sent, "every refusal on the record");
    assert!(rows <= limit, "{rows} refused rows in a minute from one role's sessions (limit {limit})");
}

/// Held: hostile bodies from staff (bad base64 padding, non-UTF-8 after base64, JSON nested
/// past serde's limit, the op twice, a field twice, an op of the other role hidden second)
/// are each refused 400/403, recorded refused with a digest, and do nothing; from a caller
/// in no role they are refused 403.
#[tokio::test]
async fn hostile_bodies_are_refused_on_the_record_and_do_nothing() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let nesting = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let cases: Vec<(&str, String, bool)> = vec![
        ("bad padding", "eyJvcCI6ICJhdWRpdCJ9=".to_owned(), true),
        ("not base64", "!!!!".to_owned(), true),
        ("non-utf8", "/wD+".to_owned(), true),
        ("deep nesting", nesting, false),
        ("op twice", r#"{"op": "audit", "op": "rotate-key"}"#.to_owned(), false),
        ("op twice, admin last", r#"{"op": "rotate-key", "op": "audit"}"#.to_owned(), false),
        (
            "field twice",
            r#"{"op": "find", "field": "ip", "value": "192.0.2.1", "value": "192.0.2.2", "reason": null}"#
                .to_owned(),
            false,
        ),
        ("unknown field", r#"{"op": "audit", "since": null, "sudo": true}"#.to_owned(), false),
    ];
    for (who, in_role) in
        [(staff_arn("hal"), true), ("arn:aws:sts::123456789012:assumed-role/other/hal".into(), false)]
    {
        for (n, (name, body, base64)) in cases.iter().enumerate() {
            let mut request = url_request(&who, body);
            request.is_base64_encoded = *base64;
            let answer =
                http::handle(&service, &staff_and_key_admin_roles(), request, &format!("h-{in_role}-{n}"))
                    .await;
            let expected = if in_role { [400, 403] } else { [403, 403] };
            assert!(expected.contains(&answer.status_code), "{who} {name}: {:?}", answer.body);
        }
        let recorded = db
            .count(&format!(
                "SELECT count(*) FROM pii_audit WHERE caller = '{who}' AND outcome = 'refused'
                    AND detail ~ 'hmac-sha256 [0-9a-f]{{64}}'"
            ))
            .await;
        assert_eq!(recorded, cases.len() as i64, "{who}: each on the record with its digest");
    }
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_keys WHERE version > 1").await, 0, "nothing rotated");
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pii_audit WHERE outcome IS DISTINCT FROM 'refused' AND caller LIKE '%/hal'"
        )
        .await,
        0
    );
}

/// Held (documented limit, asserted): refusals after a request has its row (over budget)
/// are not limited, but they are bounded rows that spend nothing and answer nothing.
#[tokio::test]
async fn over_budget_refusals_answer_nothing_and_spend_nothing() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 1).await;
    let (_, ip) = sample_user_and_ip(0);
    service.find(&staff("ola"), PiiField::Ip, &ip, None).await.expect("the unit");
    for _ in 0..5 {
        let error = service.find(&staff("ola"), PiiField::Ip, &ip, None).await.expect_err("spent");
        assert!(matches!(error, ServiceError::Budget { .. }), "{error}");
    }
    let biggest = db
        .count("SELECT max(octet_length(e::text))::int8 FROM pii_audit_log.pii_audit_entries e WHERE caller LIKE '%/ola'")
        .await;
    assert!(biggest < 1024, "an entry of {biggest} bytes");
}

// ------------------------------------------------------------------------------------
// Budgets
// ------------------------------------------------------------------------------------

/// Held: the budget is the person's across session-name case, role-name case is not the
/// staff role at all, and no refusal after recording gives spent units back to be reused
/// (a refused find, show or reveal refunds only its own unit).
#[tokio::test]
async fn refusals_after_recording_refund_only_their_own_units_and_spellings_share_one_budget() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let limits = Limits { reveals_per_person: 3, reveals_per_role: 100, erasures_per_person: 10 };
    let service = vault_service(&db, &kms, 3).await.with_limits(limits);
    let (_, ip) = sample_user_and_ip(1);
    let find = |value: &str| {
        serde_json::json!({"op": "find", "field": "ip", "value": value, "reason": null}).to_string()
    };

    assert_eq!(post(&service, &staff_arn("pam"), &find(&ip), "p0").await.0, 200);
    // Refused after recording: a bad ip, a show of a bad attempt, a reveal by a bad mask.
    for (n, body) in [
        find("192.0.2.300"),
        serde_json::json!({"op": "quarantine-show", "message_id": "x", "attempt": -5, "reason": REASON}).to_string(),
        serde_json::json!({"op": "reveal", "target": {"mask": {"field": "ip", "mask": "zz"}}, "reason": REASON})
            .to_string(),
    ]
    .iter()
    .enumerate()
    {
        let (status, answer) = post(&service, &staff_arn("Pam"), body, &format!("pr-{n}")).await;
        assert!([400].contains(&status), "{body}: {status} {answer}");
    }
    assert_eq!(post(&service, &staff_arn("PAM"), &find(&ip), "p1").await.0, 200, "the second unit");
    assert_eq!(post(&service, &staff_arn("pam"), &find(&ip), "p1b").await.0, 200, "the third unit");
    let (status, answer) = post(&service, &staff_arn("pAm"), &find(&ip), "p2").await;
    assert_eq!(status, 429, "a fourth unit answered: {answer}");
    // The role's name in another case is not the staff role.
    let other_case = "arn:aws:sts::123456789012:assumed-role/PII-Vault-Staff/pam";
    assert_eq!(post(&service, other_case, &find(&ip), "p3").await.0, 403);
    let found = db.count("SELECT count(*) FROM pii_audit WHERE action = 'find' AND outcome = 'found'").await;
    assert_eq!(found, 3);
}

/// Held: `forget --user-id` spends the erasure quota, never the reveal budget: a staff
/// member whose reveal budget is spent still erases users, up to the quota, and over the
/// quota nothing is erased; a bad user id spends nothing.
#[tokio::test]
async fn forget_by_user_spends_its_own_quota_and_nothing_over_it() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let limits = Limits { reveals_per_person: 1, reveals_per_role: 100, erasures_per_person: 2 };
    let service = vault_service(&db, &kms, 1).await.with_limits(limits);
    let (_, ip) = sample_user_and_ip(0);
    service.find(&staff("quo"), PiiField::Ip, &ip, None).await.expect("the reveal unit");
    let users: Vec<String> = (0..3).map(|n| sample_user_and_ip(10 + n).0).collect();
    let bad = service.forget_user(&staff("quo"), "u\u{200b}", Some(REASON)).await.expect_err("bad id");
    assert!(matches!(bad, ServiceError::BadRequest(_)), "{bad}");
    for user in &users[..2] {
        let done = service.forget_user(&staff("quo"), user, Some(REASON)).await.expect("within the quota");
        assert!(done.erased > 0, "{user}");
    }
    let before = db.count("SELECT count(*) FROM vault.pii_erasures").await;
    let error =
        service.forget_user(&staff("QUO"), &users[2], Some(REASON)).await.expect_err("over the quota");
    assert!(matches!(error, ServiceError::ErasureQuota { .. }), "{error}");
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_erasures").await, before, "erased over the quota");
    let error = service.find(&staff("quo"), PiiField::Ip, &ip, None).await.expect_err("reveal budget");
    assert!(matches!(error, ServiceError::Budget { .. }), "{error}");
}

// ------------------------------------------------------------------------------------
// The chained audit
// ------------------------------------------------------------------------------------

/// Held: concurrent writers (finds, listings, refusals of three kinds, from 24 tasks)
/// leave a gapless chain that verifies end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_leave_a_chain_that_verifies() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = std::sync::Arc::new(vault_service(&db, &kms, 100).await);
    let (_, ip) = sample_user_and_ip(2);
    let mut tasks = Vec::new();
    for n in 0..24 {
        let (service, ip) = (service.clone(), ip.clone());
        tasks.push(tokio::spawn(async move {
            let (arn, body) = match n % 4 {
                0 => (
                    staff_arn(&format!("c{n}")),
                    format!(r#"{{"op":"find","field":"ip","value":"{ip}","reason":null}}"#),
                ),
                1 => (staff_arn("c"), r#"{"op":"audit","limit":5}"#.to_owned()),
                2 => ("arn:aws:sts::123456789012:assumed-role/other/c".to_owned(), "x".to_owned()),
                _ => (staff_arn("c"), r#"{"op":"rotate-key"}"#.to_owned()),
            };
            post(&service, &arn, &body, &format!("c-{n}")).await.0
        }));
    }
    for task in tasks {
        assert!([200, 403].contains(&task.await.expect("task")));
    }
    let page = service.audit_verify(&staff("ver"), None, None).await.expect("verify");
    assert!(page.broken.is_none(), "{:?}", page.broken);
    let chained =
        db.count("SELECT count(*) FROM pii_audit_log.pii_audit_entries WHERE seq IS NOT NULL").await;
    assert_eq!(page.verified as i64 + 1, chained, "every entry but verify's own request verified");
    let gaps = db.count("SELECT (max(seq) - count(*))::int8 FROM pii_audit_log.pii_audit_entries").await;
    assert_eq!(gaps, 0);
}

/// Held: a tampered cursor never makes a broken chain verify: a forged chain value in
/// `after` breaks at the next entry, a malformed one is refused on the record.
#[tokio::test]
async fn a_tampered_verify_cursor_is_caught_or_refused() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (_, ip) = sample_user_and_ip(2);
    for _ in 0..3 {
        service.find(&staff("vee"), PiiField::Ip, &ip, None).await.expect("entries");
    }
    let forged = format!("2:{}", "ab".repeat(32));
    let page = service.audit_verify(&staff("vee"), Some(forged), None).await.expect("verify");
    assert_eq!(page.broken.as_ref().map(|b| b.seq), Some(3), "{page:?}");
    for bad in ["0:00", "-1:ab", "2:xyz", "2", ""] {
        let error = service.audit_verify(&staff("vee"), Some(bad.to_owned()), None).await.expect_err(bad);
        assert!(matches!(error, ServiceError::BadRequest(_)), "{bad}: {error}");
    }
}

/// Issue 18 ("verify catches … inserts by the owner role"; the docs' "a copy of an entry
/// under its number (unique index dropped)" is caught as "the duplicated seq"). Verify
/// once read a page as `seq >= next ORDER BY seq LIMIT 2000` and resumed at `seq > last`:
/// a second entry under the number that ends a page (2000, 4000, …), cut off by the
/// LIMIT, was never read, and a forged entry (here a reveal "by" another staff member) at
/// a page boundary was listed and never verified. Held: pages are read in `seq, id` order
/// and resume at the number they ended with; a copy under an id below the entry's is read
/// (and fails its chain) in the page, one above it is read by the next page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_owner_slips_in_twice_at_a_page_boundary_is_caught() {
    slipped_in_at_a_page_boundary(-2000).await;
}

/// As above, the copy under an id above every other, so the page's LIMIT cuts it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_owner_slips_in_twice_after_a_page_boundary_is_caught() {
    slipped_in_at_a_page_boundary(1_000_000_000).await;
}

/// 2000 chained entries, a copy of entry 2000 under `id` (naming another caller and
/// action), then `audit verify` page by page: it must call the chain broken.
async fn slipped_in_at_a_page_boundary(id: i64) {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    init_keys(&db, &kms).await;
    let service = std::sync::Arc::new(vault_service(&db, &kms, 100).await);
    // 2000 chained entries: one refusal each, from 2000 roles (each within its limit: the
    // sessions of one role share one).
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..500 {
                let arn = format!("arn:aws:sts::123456789012:assumed-role/other-{worker}-{n}/k");
                assert_eq!(post(&service, &arn, "x", &format!("k-{worker}-{n}")).await.0, 403);
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert!(db.count("SELECT max(seq) FROM pii_audit_log.pii_audit_entries").await >= 2000);
    // The owner: a copy of entry 2000 under its number, naming another caller and action.
    db.connect()
        .await
        .batch_execute(&format!(
            "SET ROLE login_etl_audit_owner;
             DROP INDEX pii_audit_log.pii_audit_entries_seq_idx;
             INSERT INTO pii_audit_log.pii_audit_entries (seq, id, at, db_user, caller, action, field, reason, request_id,
                                            outcome, outcome_at, detail, chain)
             SELECT seq, {id}, at, db_user, '{}', 'reveal', 'ip', 'ticket SEC-0002 framed', 'framed-2000',
                    'revealed', at, NULL, chain
               FROM pii_audit_log.pii_audit_entries WHERE seq = 2000;",
            staff_arn("victim")
        ))
        .await
        .expect("the owner slips a copy in");
    let mut after = None;
    let mut broken = None;
    for _ in 0..10 {
        let page = service.audit_verify(&staff("ver"), after.clone(), None).await.expect("verify");
        if page.broken.is_some() {
            broken = page.broken;
            break;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let listed = db.count("SELECT count(*) FROM pii_audit WHERE request_id = 'framed-2000'").await;
    assert_eq!(listed, 1, "the forged reveal is listed");
    assert_eq!(
        broken.map(|b| b.seq),
        Some(2000),
        "verify says the audit holds, with a forged entry under seq 2000"
    );
}

/// Documented limit (docs/security.md, "What a superuser (or the audit's owner) can still
/// do"), asserted as documented: in a database that never had entries before the chain,
/// the owner inserts an unchained entry under an id below the first chained one (a reveal
/// "by" another staff member). `audit verify` does not call the chain broken; it only
/// counts one more unchained entry, and the listing shows the forged reveal. Suggested
/// fix in the report: chain the number (and highest id) of the unchained history at V8,
/// so verify can call any other unchained entry an insertion.
#[tokio::test]
async fn an_unchained_entry_slipped_below_the_chain_is_only_counted_as_documented() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (_, ip) = sample_user_and_ip(2);
    service.find(&staff("una"), PiiField::Ip, &ip, None).await.expect("entries");
    let before = service.audit_verify(&staff("una"), None, None).await.expect("verify");
    assert_eq!(before.unchained, 0, "a fresh database has no history before the chain");
    db.connect()
        .await
        .batch_execute(&format!(
            "SET ROLE login_etl_audit_owner;
             ALTER TABLE pii_audit_log.pii_audit_entries DROP CONSTRAINT pii_audit_entries_chained;
             INSERT INTO pii_audit_log.pii_audit_entries (id, at, db_user, caller, action, field, reason, request_id, outcome)
             VALUES (-7, now(), 'x', '{}', 'reveal', 'ip', 'ticket SEC-0001 framed', 'framed', 'revealed');",
            staff_arn("victim")
        ))
        .await
        .expect("the owner inserts");
    let after = service.audit_verify(&staff("una"), None, None).await.expect("verify");
    assert!(after.broken.is_none(), "now caught: update docs/security.md ({:?})", after.broken);
    assert_eq!(after.unchained, 1, "at least counted");
    let listed = service.audit(&staff("una"), None, None, None).await.expect("audit").0;
    assert!(listed.iter().any(|e| e.request_id.as_deref() == Some("framed")), "listed as a reveal");
}

// ------------------------------------------------------------------------------------
// Reasons, identity
// ------------------------------------------------------------------------------------

/// Held: reasons that look like 8 letters or digits but show nothing, or hide text.
#[tokio::test]
async fn reasons_that_hide_or_show_blank_are_refused() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (user, _) = sample_user_and_ip(0);
    let bad = [
        "\u{3164}".repeat(8),
        "\u{FFA0}".repeat(8),
        "\u{115F}\u{1160}".repeat(4),
        format!("ticket{}", "\u{2800}".repeat(4)),
        "tick\u{180E}et 1".to_owned(),
        "ticket 12\u{E0041}\u{E0042}".to_owned(),
        "ticket 12\u{2028}34".to_owned(),
        "ticket 12\u{FE0F}3".to_owned(),
        "ticket 12\u{1D173}3".to_owned(),
        "ticket 12\u{13430}3".to_owned(),
        "ticket 12\u{F8FF}3".to_owned(),
        "ticket 12\u{0085}3".to_owned(),
        "ticket 12\u{00AD}3".to_owned(),
        "   \u{3000}ab\u{3000}cd  ".to_owned(),
        "\u{0300}\u{0301}\u{0302}\u{0303}\u{0304}\u{0305}\u{0306}\u{0307}\u{0308}".to_owned(),
    ];
    for reason in &bad {
        let error = service
            .reveal(&staff("rae"), &RevealTarget::UserId(user.clone()), Some(reason))
            .await
            .expect_err(reason);
        assert!(matches!(error, ServiceError::Reason(_)), "{reason:?}: {error}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE caller LIKE '%/rae' AND reason IS NOT NULL").await,
        0,
        "a refused reason was stored"
    );
}
