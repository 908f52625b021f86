//! Red team of issue 18, round 4: the tables moved out of reach (sql/V12), the forget that
//! skips held bodies, the refusal limit per role, the stateless ingest. Against the real
//! service code, Postgres and moto KMS. Tests that run are attacks that hold; tests marked
//! `ignore = "BREAK: …"` are attacks that work today, each failing while its hole stands
//! (`cargo test -p pii-vault-service --test redteam_issue18_round4 -- --include-ignored`).
//! Documentation addresses only (192.0.2.x, 198.51.100.x, 203.0.113.x).

#![recursion_limit = "256"]

use std::time::{Duration, Instant};

use login_etl::handler;
use login_etl_core::crypto::PiiField;
use pii_vault_protocol::{ForgetTarget, Outcome, Plaintext};
use pii_vault_service::VaultService;
use pii_vault_service::audit::REFUSAL_ROWS_PER_MINUTE;
use pii_vault_service::http;
use testkit::*;
use tokio_postgres::error::SqlState;

const ROLE: &str = "arn:aws:sts::123456789012:assumed-role/pii-vault-staff";

/// Every table the function or the service uses, where version 12 put it.
const MOVED: [&str; 11] = [
    "login_data.user_logins",
    "login_data.login_quarantine",
    "login_data.login_quarantine_masks",
    "pii_audit_log.pii_audit_entries",
    "pii_audit_log.pii_audit_chain_head",
    "pii_audit_log.pii_audit_refusals_over_limit",
    "pii_budget.pii_budget_keys",
    "pii_budget.pii_budget_spent",
    "vault.pii_keys",
    "vault.pii_vault",
    "vault.pii_erasures",
];

/// The groups a person's (or a scheduled job's) login is in, and `None` for a login in no
/// group at all.
const PEOPLE: [Option<&str>; 5] = [
    Some("login_etl_analyst"),
    Some("login_etl_vault_reader"),
    Some("login_etl_auditor"),
    Some("login_etl_quarantine_purge"),
    None,
];

/// POSTs `body` as `arn` through the function URL front; the status.
async fn post(service: &VaultService, arn: &str, body: &str, request_id: &str) -> i64 {
    http::handle(service, &staff_and_key_admin_roles(), url_request(arn, body), request_id).await.status_code
}

/// A login in `group`, or in no group (PUBLIC's rights only).
async fn login(db: &TestDb, group: Option<&str>) -> tokio_postgres::Config {
    match group {
        Some(group) => db.login_in(group).await,
        None => {
            let name = format!("{}_nobody_{}", db.name, unique_suffix());
            db.admin_connect()
                .await
                .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
                .await
                .expect("a login with no rights");
            let mut config = db.config.clone();
            config.user(&name);
            config
        }
    }
}

fn plaintext(value: &str) -> ForgetTarget {
    ForgetTarget::Plaintext(Plaintext::new(value))
}

/// A sample login's ip.
fn sample_ip() -> String {
    sample_messages().into_iter().find_map(|m| m["ip"].as_str().map(str::to_owned)).expect("a sample ip")
}

/// Sends `sql` from a session of `login` of its own, without waiting; its result later.
async fn queue(
    login: &tokio_postgres::Config,
    sql: String,
) -> (String, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    let session = connect(login).await;
    let statement = sql.clone();
    (sql, tokio::spawn(async move { session.batch_execute(&format!("BEGIN; {statement}; COMMIT")).await }))
}

/// A batch of 5 new logins through the function: (written, how long).
async fn timed_batch(app: &login_etl::App, tag: &str) -> (u64, Duration) {
    let started = Instant::now();
    let batch = tokio::time::timeout(
        Duration::from_secs(30),
        handler::handle_with_stats(app, event(&many_logins(5, tag))),
    )
    .await;
    let written = match &batch {
        Ok(Ok((response, stats))) if response.batch_item_failures.is_empty() => stats.written,
        _ => 0,
    };
    (written, started.elapsed())
}

/// A staff find of `ip`: (succeeded, how long).
async fn timed_find(service: &VaultService, ip: &str) -> (bool, Duration) {
    let started = Instant::now();
    let result =
        tokio::time::timeout(Duration::from_secs(30), service.find(&staff("tom"), PiiField::Ip, ip, None))
            .await;
    (matches!(result, Ok(Ok(_))), started.elapsed())
}

/// A session of `login` that runs `hold` in an open transaction, and a second one that
/// queues `CREATE RULE` (ACCESS EXCLUSIVE, taken before the owner check) on
/// `login_data.user_logins` behind it: (the holder, the queued statement's task).
async fn hold_and_queue_a_rule(
    login: &tokio_postgres::Config,
    hold: &str,
) -> (tokio_postgres::Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    let holder = connect(login).await;
    holder.batch_execute(&format!("BEGIN; {hold}")).await.expect("the login may");
    let (_, queued) = queue(
        login,
        "SET lock_timeout = 0; CREATE RULE stall AS ON INSERT TO login_data.user_logins DO ALSO NOTHING"
            .into(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    (holder, queued)
}

/// A rejected login quarantined by the function as `id`, dated `age` ago by the owner.
async fn quarantined_aged(db: &TestDb, app: &login_etl::App, id: &str, ip: &str, device: &str, age: &str) {
    let event = event(&[(id.to_owned(), rejected_login_body(&format!("u-{id}"), ip, device))]);
    handler::handle_with_stats(app, event).await.expect("quarantined");
    db.connect()
        .await
        .execute(
            &format!(
                "UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '{age}' WHERE message_id = '{id}'"
            ),
            &[],
        )
        .await
        .expect("aged");
}

/// The purge's login, holding every body older than a day in an open transaction (its
/// function erases them and keeps them locked to the end of the transaction).
async fn purge_holding_the_old_bodies(db: &TestDb) -> tokio_postgres::Client {
    let holder = connect(&db.login_in("login_etl_quarantine_purge").await).await;
    holder.batch_execute("BEGIN; SELECT public.purge_expired_quarantine(1, 100)").await.expect("held");
    holder
}

// ------------------------------------------------------------------------------------
// Requests on the record: the refusal limit per role
// ------------------------------------------------------------------------------------

/// BREAK. Issue 18, item 5: "rate-limit refusals per principal"; docs/security.md: "a
/// flood of refusals … leaves at most the limit of rows; … another caller is unaffected".
/// The limit is counted over every session of the assumed role (`principal::refusal_scope`),
/// and the template's trust policy makes the session name the person: so staff member
/// mallory, with 30 refusals in a minute, spends the limit of every other staff member.
/// Alice's refusal in that minute (an admin operation she may not run, a reveal without a
/// reason, an over-budget find) leaves no entry: only a count under her ARN, with no op,
/// size or hash. An accomplice can cover another person's probing.
#[tokio::test]
async fn one_staff_members_flood_does_not_hide_another_staff_members_refusal() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let mallory = format!("{ROLE}/mallory");
    for n in 0..REFUSAL_ROWS_PER_MINUTE {
        assert_eq!(post(&service, &mallory, r#"{"op": "rotate-key"}"#, &format!("m-{n}")).await, 403);
    }
    let alice = format!("{ROLE}/alice");
    assert_eq!(post(&service, &alice, r#"{"op": "rotate-key"}"#, "alice-1").await, 403);
    let over_budget = vault_service(&db, &kms, 0).await;
    let refused = over_budget.find(&staff("alice"), PiiField::Ip, &sample_ip(), None).await;
    assert!(refused.is_err(), "alice has no budget in this service");
    let alices_rows = db
        .count(&format!(
            "SELECT count(*) FROM pii_audit_log.pii_audit_entries WHERE caller IN ('{alice}', '{}')",
            staff("alice").caller
        ))
        .await;
    assert_eq!(alices_rows, 2, "alice's two refusals are on the record, each with its op");
}

/// BREAK. Issue 18, item 5: a refused request is recorded with "its op, its size and a keyed
/// hash". The front reads the op for the record with `Action::of_op`, whose list of ops
/// lacks two the protocol has: `forget-user` and `audit-verify`. A caller in no role (or a
/// key administrator) who sends either, well-formed, is recorded as action `request`
/// ("may not call the vault service"), so the audit does not say that someone tried to
/// erase a user (and which one is not recorded either) or to verify the audit.
#[tokio::test]
async fn every_op_of_the_protocol_refused_at_the_front_is_recorded_under_its_op() {
    use pii_vault_protocol::{Request, RevealTarget};
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let requests = [
        Request::Find { field: PiiField::Ip, value: Plaintext::new("192.0.2.1"), reason: None },
        Request::Reveal { target: RevealTarget::UserId("u-1".into()), reason: Some(REASON.into()) },
        Request::Forget { field: PiiField::Ip, target: plaintext("192.0.2.1"), reason: Some(REASON.into()) },
        Request::ForgetUser { user_id: "u-1".into(), reason: Some(REASON.into()) },
        Request::Audit { since: None, after: None, limit: None },
        Request::AuditVerify { after: None, head: None },
        Request::InitKeys,
        Request::RotateKey,
        Request::Reencrypt { batch_size: 10 },
        Request::QuarantineList { since: None, reason_code: None, after: None, limit: None },
        Request::QuarantineShow { message_id: "m".into(), attempt: None, reason: Some(REASON.into()) },
        Request::QuarantineImportDlq { max: None },
        Request::QuarantinePurge,
    ];
    let stranger = "arn:aws:sts::123456789012:assumed-role/other/eve";
    let mut unnamed = Vec::new();
    for (n, request) in requests.iter().enumerate() {
        let body = serde_json::to_string(request).expect("json");
        let op = serde_json::from_str::<serde_json::Value>(&body).expect("json")["op"]
            .as_str()
            .expect("op")
            .to_owned();
        let request_id = format!("op-{n}");
        assert_eq!(post(&service, stranger, &body, &request_id).await, 403, "{op}");
        let actions = db
            .texts("SELECT action FROM pii_audit_log.pii_audit_entries WHERE request_id = $1", &[&request_id])
            .await;
        assert_eq!(actions.len(), 1, "{op}: one refused entry");
        if actions[0] == "request" {
            unnamed.push(op);
        }
    }
    assert!(unnamed.is_empty(), "refused ops recorded only as `request`: {unnamed:?}");
}

/// Held: whatever a flood spent of the role's refusal rows, a request that is not refused
/// is recorded in full (request and outcome) and spends its unit: the limit hides no
/// request that was answered.
#[tokio::test]
async fn after_the_roles_refusal_rows_are_spent_an_answered_request_is_still_recorded_in_full() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    for n in 0..REFUSAL_ROWS_PER_MINUTE + 5 {
        assert_eq!(post(&service, &format!("{ROLE}/mallory"), "not json", &format!("m-{n}")).await, 400);
    }
    let alice = staff("alice");
    let found = service.find(&alice, PiiField::Ip, &sample_ip(), None).await.expect("find");
    assert!(!found.1.is_empty());
    let rows = db
        .count(&format!(
            "SELECT count(*) FROM pii_audit_log.pii_audit_entries
              WHERE caller = '{}' AND request_id = '{}' AND outcome IS DISTINCT FROM 'refused'",
            alice.caller, alice.request_id
        ))
        .await;
    assert_eq!(rows, 2, "the request and its outcome");
    let spent = db.count("SELECT count(*) FROM pii_budget.pii_budget_spent").await;
    assert!(spent >= 1, "the find spent its unit");
}

/// Held: no caller outside the staff role can spend the staff role's refusal rows: not the
/// same role name in another account, not a role whose name differs by a LIKE wildcard
/// (`pii_vault_staff`, `pii-vault-staf%`), not the anonymous knock. After their floods a
/// staff member's refusal still has its entry.
#[tokio::test]
async fn no_caller_outside_the_staff_role_can_spend_its_refusal_rows() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    for (n, flooder) in [
        "arn:aws:sts::999999999999:assumed-role/pii-vault-staff/mallory",
        "arn:aws:sts::123456789012:assumed-role/pii_vault_staff/mallory",
        "arn:aws:sts::123456789012:assumed-role/pii-vault-staf%/mallory",
        "arn:aws:sts::123456789012:assumed-role/pii-vault-staff-x/mallory",
        "arn:aws:iam::123456789012:user/pii-vault-staff/mallory",
    ]
    .into_iter()
    .enumerate()
    {
        for k in 0..REFUSAL_ROWS_PER_MINUTE + 2 {
            assert_eq!(post(&service, flooder, "not json", &format!("f-{n}-{k}")).await, 403, "{flooder}");
        }
    }
    for k in 0..REFUSAL_ROWS_PER_MINUTE + 2 {
        let mut anonymous = url_request("x", "not json");
        anonymous.request_context.authorizer = None;
        let answer = http::handle(&service, &staff_and_key_admin_roles(), anonymous, &format!("a-{k}")).await;
        assert_eq!(answer.status_code, 401);
    }
    let bob = format!("{ROLE}/bob");
    assert_eq!(post(&service, &bob, r#"{"op": "rotate-key"}"#, "bob-1").await, 403);
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM pii_audit WHERE caller = '{bob}' AND outcome = 'refused'"))
            .await,
        1,
        "the staff member's refusal has its entry"
    );
}

// ------------------------------------------------------------------------------------
// Locks: the logins that may name the moved tables
// ------------------------------------------------------------------------------------

/// BREAK. Issue 18, item 7 ("no lock others can take"); sql/V12 moved the tables into
/// schemas only the function and the service may use, so that no other login can queue a
/// lock-first statement on them. The function's writer login may use `login_data`: it
/// holds ROW EXCLUSIVE on `login_data.user_logins` (LOCK … IN ROW EXCLUSIVE MODE, which its
/// INSERT right allows, or any INSERT in an open transaction) and, from a second session,
/// queues `CREATE RULE` on it, which PostgreSQL locks ACCESS EXCLUSIVE before it checks
/// ownership. Every read of the table queues behind that request: the vault service's find
/// fails after its `lock_timeout` (3 s), for as long as the writer likes. A stolen function
/// credential stops the vault service (and forget, which rewrites the same table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_login_cannot_stall_the_vault_service() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let ip = sample_ip();
    assert!(timed_find(&service, &ip).await.0, "warm");

    let writer = db.login_in("login_etl_writer").await;
    let (holder, queued) =
        hold_and_queue_a_rule(&writer, "LOCK TABLE login_data.user_logins IN ROW EXCLUSIVE MODE").await;

    let (found, elapsed) = timed_find(&service, &ip).await;
    holder.batch_execute("ROLLBACK").await.expect("rollback");
    let _ = queued.await;
    assert!(
        found && elapsed < Duration::from_secs(2),
        "the writer login stalled a find: {found} after {elapsed:?}"
    );
}

/// BREAK. The same, from the vault service's login against ingest: it may use `login_data`
/// and read `user_logins`, so one session reading it in an open transaction and another
/// queuing `CREATE RULE` stop every batch of the function until the writer's `lock_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_service_login_cannot_stall_ingest() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service_login = db.login_in("login_etl_vault_service").await;
    let (holder, queued) =
        hold_and_queue_a_rule(&service_login, "SELECT count(*) FROM login_data.user_logins").await;

    let (written, elapsed) = timed_batch(&app, "late").await;
    holder.batch_execute("ROLLBACK").await.expect("rollback");
    let _ = queued.await;
    assert!(
        written == 5 && elapsed < Duration::from_secs(2),
        "ingest stalled: {written} of 5 after {elapsed:?}"
    );
}

/// Documented limit, asserted as documented (docs/security.md, the erasure lock: "either
/// can hold erasure back"): the writer login may `SELECT … FOR UPDATE` the erasure lock's
/// row (it holds UPDATE on it for its batches) and keep it in an open transaction, and
/// every forget then fails. Held as far as item 7 goes: it fails within the service's
/// `lock_timeout`, on the record as failed, and nothing is answered `forgotten`. (The
/// report suggests the writer take the lock only FOR SHARE, through a function, so it can
/// never hold it exclusively.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_login_holding_the_erasure_lock_makes_a_forget_fail_fast_on_the_record() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let writer = db.login_in("login_etl_writer").await;
    let holder = connect(&writer).await;
    holder
        .batch_execute("BEGIN; SELECT only_row FROM pii_locks.erasure FOR UPDATE")
        .await
        .expect("the writer may");

    let ida = staff("ida");
    let started = Instant::now();
    let result = service.forget(&ida, PiiField::Ip, &plaintext("203.0.113.9"), Some(REASON)).await;
    let elapsed = started.elapsed();
    holder.batch_execute("ROLLBACK").await.expect("rollback");
    assert!(
        result.is_err() && elapsed < Duration::from_secs(5),
        "{:?} after {elapsed:?}",
        result.map(|_| ())
    );
    let failed = db
        .count(&format!(
            "SELECT count(*) FROM pii_audit WHERE request_id = '{}' AND outcome = 'failed'",
            ida.request_id
        ))
        .await;
    assert_eq!(failed, 1, "the held-back forget is on the record as failed");
}

/// Held: no person's login (nor the purge's, nor one with no rights) can lock the moved
/// tables by their OID in a way that stalls anything. `pg_relation_size(oid)` takes ACCESS
/// SHARE on any relation without a right or a schema (held in an open transaction), and
/// `brin_summarize_new_values(index oid)` locks an index's table SHARE UPDATE EXCLUSIVE
/// before it checks anything; neither conflicts with the function's or the service's
/// statements, and every lock-first statement by name is refused for want of the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_person_login_can_stall_ingest_or_the_service_through_the_tables_oids() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let ip = sample_ip();
    let oids: Vec<String> = db
        .texts(
            "SELECT c.oid::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname IN ('login_data', 'vault', 'pii_budget', 'pii_audit_log', 'pii_locks')
                AND c.relkind IN ('r', 'p', 'i', 'S')",
            &[],
        )
        .await;
    let indexes: Vec<String> = db
        .texts(
            "SELECT c.oid::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname IN ('login_data', 'vault', 'pii_budget', 'pii_audit_log') AND c.relkind = 'i'",
            &[],
        )
        .await;
    let mut holders = Vec::new();
    let mut queued = Vec::new();
    for group in PEOPLE {
        let config = login(&db, group).await;
        let holder = connect(&config).await;
        let tx_ok = holder.batch_execute("BEGIN").await.is_ok();
        assert!(tx_ok);
        for oid in &oids {
            let _ = holder
                .batch_execute(&format!(
                    "SAVEPOINT s; SELECT pg_catalog.pg_relation_size({oid}::oid::regclass); RELEASE s"
                ))
                .await;
        }
        holders.push(holder);
        for oid in &indexes {
            queued.push(
                queue(&config, format!("SELECT pg_catalog.brin_summarize_new_values({oid}::oid::regclass)"))
                    .await,
            );
        }
        for table in MOVED {
            for sql in [
                format!("CREATE RULE stall AS ON INSERT TO {table} DO ALSO NOTHING"),
                format!("COMMENT ON TABLE {table} IS 'stall'"),
                format!("CREATE TEMP TABLE stall (x bigint REFERENCES {table})"),
                format!("ALTER TABLE {table} ADD COLUMN stall integer"),
            ] {
                queued.push(queue(&config, sql).await);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (written, batch_took) = timed_batch(&app, "oid").await;
    let (found, find_took) = timed_find(&service, &ip).await;
    for holder in &holders {
        let _ = holder.batch_execute("ROLLBACK").await;
    }
    assert!(written == 5 && batch_took < Duration::from_secs(2), "ingest: {written} after {batch_took:?}");
    assert!(found && find_took < Duration::from_secs(2), "find: {found} after {find_took:?}");
    for (sql, task) in queued {
        let result = tokio::time::timeout(Duration::from_secs(10), task).await.expect(&sql).expect("task");
        assert!(result.is_err(), "{sql}: a person may run it");
    }
}

/// Held: statements that lock what they name, on the people's views, by every person and
/// on every view, while another session of theirs reads through the views: maintenance
/// (VACUUM, ANALYZE, CLUSTER, REINDEX, REFRESH), catalog changes (COMMENT ON COLUMN, SECURITY
/// LABEL, GRANT, ALTER VIEW, CREATE INDEX, CREATE POLICY, CREATE STATISTICS, DROP VIEW),
/// row locks through the view. None reaches the tables behind: ingest and the service go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_catalog_statements_on_the_views_stall_neither_ingest_nor_the_service() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let ip = sample_ip();
    let mut readers = Vec::new();
    let mut queued = Vec::new();
    for (group, views) in [
        ("login_etl_analyst", vec!["user_logins"]),
        ("login_etl_vault_reader", vec!["user_logins"]),
        ("login_etl_auditor", vec!["pii_audit", "pii_audit_entries", "pii_audit_refusals_over_limit"]),
    ] {
        let config = db.login_in(group).await;
        let reader = connect(&config).await;
        reader.batch_execute("BEGIN").await.expect("begin");
        for view in &views {
            reader.batch_execute(&format!("SELECT count(*) FROM {view}")).await.expect("reads");
        }
        readers.push(reader);
        for view in views {
            for sql in [
                format!("VACUUM {view}"),
                format!("ANALYZE {view}"),
                format!("CLUSTER {view}"),
                format!("REINDEX TABLE {view}"),
                format!("REFRESH MATERIALIZED VIEW {view}"),
                format!("SECURITY LABEL ON VIEW {view} IS 'x'"),
                format!("GRANT SELECT ON {view} TO PUBLIC"),
                format!("ALTER VIEW {view} SET (security_barrier = false)"),
                format!("ALTER VIEW {view} RENAME TO stall"),
                format!("ALTER VIEW {view} OWNER TO CURRENT_USER"),
                format!("CREATE INDEX stall ON {view} (id)"),
                format!("CREATE POLICY stall ON {view} USING (true)"),
                format!("CREATE STATISTICS stall ON id, at FROM {view}"),
                format!("DROP VIEW {view}"),
                format!("SELECT 1 FROM {view} FOR SHARE"),
                format!("SELECT 1 FROM {view} FOR UPDATE NOWAIT"),
            ] {
                // Inside a transaction block VACUUM refuses to run at all; outside it is
                // skipped for want of ownership: both tried.
                if sql.starts_with("VACUUM") {
                    let session = connect(&config).await;
                    let s = sql.clone();
                    queued.push((sql, tokio::spawn(async move { session.batch_execute(&s).await })));
                } else {
                    queued.push(queue(&config, sql).await);
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (written, batch_took) = timed_batch(&app, "views").await;
    let (found, find_took) = timed_find(&service, &ip).await;
    let audited =
        tokio::time::timeout(Duration::from_secs(10), service.audit(&staff("tom"), None, None, None)).await;
    for reader in &readers {
        let _ = reader.batch_execute("ROLLBACK").await;
    }
    assert!(written == 5 && batch_took < Duration::from_secs(2), "ingest: {written} after {batch_took:?}");
    assert!(found && find_took < Duration::from_secs(2), "find: {found} after {find_took:?}");
    assert!(matches!(audited, Ok(Ok(_))), "the audit listing");
    for (sql, task) in queued {
        // VACUUM and ANALYZE of a relation one does not own are skipped with a warning, and
        // a GRANT without the grant option grants nothing with a warning; the rest refused.
        let result = tokio::time::timeout(Duration::from_secs(10), task).await.expect(&sql).expect("task");
        if !(sql.starts_with("VACUUM") || sql.starts_with("ANALYZE") || sql.starts_with("GRANT")) {
            assert!(result.is_err(), "{sql}: a person may run it");
        }
    }
    let granted = db
        .count(
            "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v' AND a.grantee = 0",
        )
        .await;
    assert_eq!(granted, 0, "a person granted a view to PUBLIC");
    // Nothing a person ran changed a view.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'v'
                AND relname IN ('user_logins', 'pii_audit', 'pii_audit_entries', 'pii_audit_refusals_over_limit')"
        )
        .await,
        4
    );
}

/// Held, whatever lock-first statement PostgreSQL has or will have: the function and the
/// service read no view in `public`. With ACCESS EXCLUSIVE held on every people's view (the
/// strongest lock a person could ever queue on one), a batch with a rejected message, a
/// find, a reveal by user id, a forget, a quarantine list and show, the audit listing and
/// `audit verify` all finish within 2 s each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_every_service_operation_ignore_a_lock_on_the_peoples_views() {
    use pii_vault_protocol::RevealTarget;
    use pii_vault_service::QuarantineFilter;
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let user = sample_messages()
        .into_iter()
        .find_map(|m| m["user_id"].as_str().map(str::to_owned))
        .expect("a sample user");
    let owner = db.connect().await;
    owner
        .batch_execute(
            // (LOCK TABLE on a view would lock the tables behind it too: a view option's
            // change takes ACCESS EXCLUSIVE on the view alone.)
            "BEGIN;
             ALTER VIEW public.user_logins SET (security_barrier = false);
             ALTER VIEW public.pii_audit SET (security_barrier = false);
             ALTER VIEW public.pii_audit_entries SET (security_barrier = false);
             ALTER VIEW public.pii_audit_refusals_over_limit SET (security_barrier = false)",
        )
        .await
        .expect("the views locked");
    let slow = |what: &str, started: Instant| {
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{what} waited for a view: {took:?}");
    };
    let started = Instant::now();
    let mut records = many_logins(3, "views-locked");
    records.push(("q-views".to_owned(), rejected_login_body("u-v", "192.0.2.64", "dev-views")));
    let (response, stats) = handler::handle_with_stats(&app, event(&records)).await.expect("batch");
    assert!(response.batch_item_failures.is_empty() && stats.written == 3);
    slow("a batch", started);
    let tom = staff("tom");
    let started = Instant::now();
    service.find(&tom, PiiField::Ip, &sample_ip(), None).await.expect("find");
    service.reveal(&tom, &RevealTarget::UserId(user), Some(REASON)).await.expect("reveal");
    service.forget(&tom, PiiField::DeviceId, &plaintext("dev-views"), Some(REASON)).await.expect("forget");
    service.quarantine_list(&tom, &QuarantineFilter::default()).await.expect("list");
    service.quarantine_show(&tom, "q-views", None, Some(REASON)).await.expect("show");
    service.audit(&tom, None, None, None).await.expect("audit");
    service.audit_verify(&tom, None, None).await.expect("verify");
    slow("the service's operations", started);
    // The views were held all along: a reader of one waits.
    let reader = connect(&db.login_in("login_etl_analyst").await).await;
    let error = reader
        .batch_execute("SET lock_timeout = 200; SELECT 1 FROM user_logins LIMIT 1")
        .await
        .expect_err("the view is locked");
    assert_eq!(error.code(), Some(&SqlState::LOCK_NOT_AVAILABLE));
    owner.batch_execute("ROLLBACK").await.expect("rollback");
}

// ------------------------------------------------------------------------------------
// Names and definer functions
// ------------------------------------------------------------------------------------

/// Held: no login but the migrator may create anything the function, the service or a
/// definer function could resolve by name: no table, view, function or operator in
/// `public`, no schema (a schema named after the service's login would come first on its
/// search_path as `$user`), no object in the moved schemas.
#[tokio::test]
async fn no_login_can_create_a_name_the_service_or_a_definer_function_resolves() {
    let db = TestDb::new().await;
    let groups = PEOPLE.iter().copied().chain([Some("login_etl_writer"), Some("login_etl_vault_service")]);
    for group in groups {
        let session = connect(&login(&db, group).await).await;
        for sql in [
            "CREATE TABLE public.user_logins_shadow (x int)",
            "CREATE VIEW public.pii_audit_shadow AS SELECT 1",
            "CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT pg_catalog.now()'",
            "CREATE FUNCTION public.is_erasure_token(text, text, int) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
            "CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = pg_catalog.texteq)",
            "CREATE SCHEMA stall",
            "CREATE TABLE login_data.stall (x int)",
            "CREATE TABLE vault.stall (x int)",
            "CREATE TABLE pii_audit_log.stall (x int)",
            "CREATE TABLE pii_budget.stall (x int)",
            "CREATE FUNCTION pii_locks.stall() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ] {
            let error = session.batch_execute(sql).await.expect_err(sql);
            assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{group:?}: {sql}: {error:?}");
        }
    }
}

/// Held: every SECURITY DEFINER function pins a search_path that puts nothing a login may
/// create before pg_catalog (pg_temp last); the people may execute none of the functions in
/// `public` (the purge's login only its own); and the purge's function, called with its
/// session's temporary tables named like the quarantine, erases the real table's old
/// bodies only.
#[tokio::test]
async fn definer_functions_pin_their_search_path_and_the_purge_cannot_steer_its_own() {
    let db = TestDb::new().await;
    let unpinned = db
        .texts(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prosecdef
                AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)",
            &[],
        )
        .await;
    assert!(unpinned.is_empty(), "definer functions without a pinned search_path: {unpinned:?}");
    for group in PEOPLE {
        let role = match group {
            Some(group) => group.to_owned(),
            None => "public".to_owned(),
        };
        let callable = db
            .texts(
                &format!(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p
                      WHERE p.pronamespace = 'public'::regnamespace
                        AND has_function_privilege({}, p.oid, 'EXECUTE')",
                    if role == "public" { "'public'".to_owned() } else { format!("'{role}'") }
                ),
                &[],
            )
            .await;
        let allowed: &[&str] = if role == "login_etl_quarantine_purge" {
            &["purge_expired_quarantine(integer,bigint)"]
        } else {
            &[]
        };
        assert!(callable.iter().all(|f| allowed.contains(&f.as_str())), "{role} may execute {callable:?}");
    }

    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    quarantined_aged(&db, &app, "q-shadow-old", "192.0.2.88", "dev-s", "3 days").await;
    quarantined_aged(&db, &app, "q-shadow-young", "192.0.2.88", "dev-s", "2 hours").await;
    let purge = connect(&db.login_in("login_etl_quarantine_purge").await).await;
    purge
        .batch_execute(
            "CREATE TEMP TABLE login_quarantine (message_id text, attempt int, erased_at timestamptz,
                                                 quarantined_at timestamptz, key_version int, nonce bytea,
                                                 ciphertext bytea, erased_by text);
             INSERT INTO pg_temp.login_quarantine VALUES ('decoy', 0, NULL, now() - interval '10 days');
             SET search_path = pg_temp, public",
        )
        .await
        .expect("the purge's own temporary table");
    let erased: i64 =
        purge.query_one("SELECT public.purge_expired_quarantine(1, 10)", &[]).await.expect("purge").get(0);
    assert_eq!(erased, 1, "the real old body, and nothing else");
    let decoy: i64 = purge
        .query_one("SELECT count(*) FROM pg_temp.login_quarantine WHERE erased_at IS NULL", &[])
        .await
        .expect("decoy")
        .get(0);
    assert_eq!(decoy, 1, "the temporary table was never touched");
    let young = db
        .count("SELECT count(*) FROM login_data.login_quarantine WHERE message_id = 'q-shadow-young' AND ciphertext IS NOT NULL")
        .await;
    assert_eq!(young, 1);
}

/// Held: the people's views filter nothing and no table behind them has row security, so a
/// cheap leaky function of a person's own (in pg_temp: `public` takes none) that the
/// planner pushes into a view sees no row and no column the person cannot select anyway.
#[tokio::test]
async fn a_leaky_function_pushed_into_a_view_sees_nothing_the_person_cannot_select() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let secured = db
        .texts(
            "SELECT c.oid::regclass::text FROM pg_class c
              WHERE c.relrowsecurity AND c.oid IN ('login_data.user_logins'::regclass,
                    'pii_audit_log.pii_audit_entries'::regclass, 'pii_audit_log.pii_audit_refusals_over_limit'::regclass)",
            &[],
        )
        .await;
    assert!(secured.is_empty(), "a table behind a view has row security: {secured:?}");
    for (group, view, table) in [
        ("login_etl_analyst", "user_logins", "login_data.user_logins"),
        ("login_etl_auditor", "pii_audit_entries", "pii_audit_log.pii_audit_entries"),
    ] {
        let session = connect(&db.login_in(group).await).await;
        session
            .batch_execute(
                "CREATE TEMP TABLE seen (t text);
                 CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
                 $$ BEGIN INSERT INTO pg_temp.seen VALUES ($1); RETURN true; END $$",
            )
            .await
            .expect("a person's own temporary function");
        let selected: i64 = session
            .query_one(&format!("SELECT count(*) FROM {view} v WHERE pg_temp.leak(v::text)"), &[])
            .await
            .expect("the person's query")
            .get(0);
        let seen: i64 =
            session.query_one("SELECT count(*) FROM pg_temp.seen", &[]).await.expect("seen").get(0);
        assert_eq!(seen, selected, "{group}: the leaky function saw rows the query did not return");
        assert_eq!(
            seen,
            db.count(&format!("SELECT count(*) FROM {table}")).await,
            "{group}: every row, no more"
        );
    }
}

// ------------------------------------------------------------------------------------
// Forget and the held bodies
// ------------------------------------------------------------------------------------

/// BREAK. docs (forget.rs, OLD_BODIES_NOT_HELD): a forget skips an old body another
/// session holds; "the purge, the one thing holding it, erases it when it commits, or else
/// at its next run". The purge's login erases bodies older than the retention *it passes*
/// (at least a day): it calls `purge_expired_quarantine(1, n)`, which locks every body
/// older than a day, keeps its transaction open across a forget of the value (skipped) and
/// rolls back. The body keeps its ciphertext; the scheduled purge, at the configured
/// retention (14 days), does not erase a 2-day-old body, so a value answered `forgotten`
/// stays sealed in the table (and in every backup taken meanwhile) for up to the retention,
/// until someone happens to show or replay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_purge_held_during_a_forget_does_not_outlive_the_forget() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    quarantined_aged(&db, &app, "q-kept", "192.0.2.61", "dev-kept", "2 days").await;
    let holder = purge_holding_the_old_bodies(&db).await;
    service
        .forget(&staff("ida"), PiiField::Ip, &plaintext("192.0.2.61"), Some(REASON))
        .await
        .expect("forget");
    holder.batch_execute("ROLLBACK").await.expect("rollback");
    // The scheduled purge, at the service's retention.
    let scheduled = connect(&db.login_in("login_etl_quarantine_purge").await).await;
    scheduled
        .query_one("SELECT public.purge_expired_quarantine(14, 1000)", &[])
        .await
        .expect("scheduled purge");
    let kept = db
        .count("SELECT count(*) FROM login_data.login_quarantine WHERE message_id = 'q-kept' AND ciphertext IS NOT NULL")
        .await;
    assert_eq!(kept, 0, "the forgotten value's body is still stored after the forget and the next purge");
}

/// BREAK. sql/V12 (and `the_purge_login_cannot_name_or_lock_the_quarantine`): the purge's
/// login "can hold back neither the function's batches nor the service". Its function
/// erases old bodies by UPDATE and keeps them locked to the end of the caller's
/// transaction; an `INSERT … ON CONFLICT DO NOTHING` whose key meets a row another
/// transaction is updating waits for that transaction. So while the purge's login keeps its
/// transaction open, any batch that quarantines again a message whose body is older than a
/// day (SQS redelivers a batch whose answer was lost; `quarantine import-dlq` meets a
/// dead-lettered message already quarantined) waits and fails after `lock_timeout`, the
/// whole batch with it, at every redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_login_cannot_hold_back_a_batch_that_meets_an_old_quarantined_message() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    quarantined_aged(&db, &app, "q-again", "192.0.2.63", "dev-again", "2 days").await;
    let redelivered = ("q-again".to_owned(), rejected_login_body("u-q-again", "192.0.2.63", "dev-again"));
    // Unheld, such a batch is written at once (the old body kept as it is).
    let mut control = many_logins(4, "control");
    control.push(redelivered.clone());
    let (response, stats) = handler::handle_with_stats(&app, event(&control)).await.expect("control batch");
    assert!(response.batch_item_failures.is_empty() && stats.written == 4, "the control batch");
    let holder = purge_holding_the_old_bodies(&db).await;
    let mut records = many_logins(4, "with-redelivery");
    records.push(redelivered);
    let started = Instant::now();
    let batch =
        tokio::time::timeout(Duration::from_secs(30), handler::handle_with_stats(&app, event(&records)))
            .await;
    let elapsed = started.elapsed();
    holder.batch_execute("ROLLBACK").await.expect("rollback");
    let written = match &batch {
        Ok(Ok((response, stats))) if response.batch_item_failures.is_empty() => stats.written,
        _ => 0,
    };
    assert!(
        written == 4 && elapsed < Duration::from_secs(2),
        "the purge login held back a batch: {written} of 4 written after {elapsed:?}"
    );
}

/// Held: while the purge's login holds a body whose value was forgotten, a `quarantine
/// list` does not tell it from a body erased by the forget in any way a person could turn
/// into a value (the list shows no mask), and a show of it never opens it, before or after
/// the purge rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_body_of_a_forgotten_value_is_never_opened() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    quarantined_aged(&db, &app, "q-held", "192.0.2.62", "dev-held", "2 days").await;
    let holder = purge_holding_the_old_bodies(&db).await;
    service
        .forget(&staff("ida"), PiiField::DeviceId, &plaintext("dev-held"), Some(REASON))
        .await
        .expect("forget");
    for attempt in [None, Some(0)] {
        let shown =
            service.quarantine_show(&staff("ida"), "q-held", attempt, Some(REASON)).await.expect("show");
        assert!(shown.body.is_none() && shown.outcome == Outcome::Erased, "{:?}", shown.outcome);
    }
    holder.batch_execute("ROLLBACK").await.expect("rollback");
    let shown = service.quarantine_show(&staff("ida"), "q-held", None, Some(REASON)).await.expect("show");
    assert!(shown.body.is_none() && shown.outcome == Outcome::Erased, "{:?}", shown.outcome);
    let masks = quarantine_masks(&db, "q-held").await;
    let device_mask = db.texts("SELECT token FROM vault.pii_erasures WHERE field = 'device_id'", &[]).await;
    assert!(
        masks.iter().any(|(field, mask)| field == "device_id" && device_mask.contains(mask)),
        "the held body's device mask is the erasure token: {masks:?}"
    );
}

// ------------------------------------------------------------------------------------
// TRACE logging on the service
// ------------------------------------------------------------------------------------

/// Held: the vault service as Lambda runs it, with `RUST_LOG=trace` (tokio-postgres logs
/// every statement's parameters at DEBUG; the AWS SDK logs its HTTP exchanges at TRACE):
/// a find and a forget by plaintext, a reveal by user id and a quarantine show write no ip
/// or device id into its log, and no KMS answer's plaintext data key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_trace_the_vault_service_logs_no_value_and_no_unwrapped_key() {
    use pii_vault_protocol::{Request, RevealTarget};
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let rejected =
        event(&[("q-trace".to_owned(), rejected_login_body("u-trace", "192.0.2.93", "dev-trace-93"))]);
    handler::handle_with_stats(&app, rejected).await.expect("quarantined");
    let user = sample_messages()
        .into_iter()
        .find(|m| m["user_id"].is_string() && m["ip"].is_string() && m["device_id"].is_string())
        .expect("a sample login");
    let (user_id, ip, device) = (
        user["user_id"].as_str().expect("u").to_owned(),
        user["ip"].as_str().expect("ip").to_owned(),
        user["device_id"].as_str().expect("device").to_owned(),
    );
    let log = std::env::temp_dir().join(format!("pii-vault-service-trace-{}.log", unique_suffix()));
    let service = LocalVaultService::start_with(
        &db,
        &kms,
        &workspace_binary("pii-vault-service-local"),
        "local:tracer",
        &[("RUST_LOG", "trace".to_owned()), ("AWS_LAMBDA_LOG_LEVEL", "TRACE".to_owned())],
        Some(&log),
    )
    .await;
    let requests = [
        Request::Find { field: PiiField::Ip, value: Plaintext::new(&ip), reason: None },
        Request::Reveal { target: RevealTarget::UserId(user_id.clone()), reason: Some(REASON.into()) },
        Request::QuarantineShow { message_id: "q-trace".into(), attempt: None, reason: Some(REASON.into()) },
        Request::Forget {
            field: PiiField::DeviceId,
            target: plaintext("dev-trace-93"),
            reason: Some(REASON.into()),
        },
    ];
    let mut answers = String::new();
    for request in &requests {
        let (status, body) = service.post(serde_json::to_vec(request).expect("json")).await;
        assert_eq!(status, 200, "{body}");
        answers.push_str(&body);
    }
    assert!(answers.contains(&device) && answers.contains("192.0.2.93"), "the values were answered");
    drop(service);
    let logs = std::fs::read_to_string(&log).expect("the service's log");
    let _ = std::fs::remove_file(&log);
    // The service emits nothing of its own below INFO, the SDK's payload targets are capped
    // (telemetry::PAYLOAD_TARGETS), and tokio-postgres logs through `log`, not bridged.
    assert!(logs.contains("audit chain"), "the service logged");
    for value in [ip.as_str(), device.as_str(), "192.0.2.93", "dev-trace-93"] {
        assert!(!logs.contains(value), "the log holds a value");
    }
    assert!(!logs.contains("\"Plaintext\""), "the log holds a KMS answer's plaintext key");
}

// ------------------------------------------------------------------------------------
// Release artifacts
// ------------------------------------------------------------------------------------

/// Held: the service binary cargo builds in this workspace (where the local stack's binary
/// and its features are built too, so feature unification had every chance) holds no way
/// to name a caller but IAM: neither the local identity's variable nor its banner. The
/// local binary, read the same way, does: the check can fail.
#[test]
fn the_service_binary_built_beside_the_local_one_holds_no_local_identity() {
    let holds = |path: &str, needle: &[u8]| {
        let bytes = std::fs::read(path).expect("binary");
        bytes.windows(needle.len()).any(|w| w == needle)
    };
    let deployed = env!("CARGO_BIN_EXE_pii-vault-service");
    let local = workspace_binary("pii-vault-service-local");
    for needle in [&b"PII_VAULT_LOCAL_IDENTITY"[..], &b"local stack only"[..]] {
        assert!(holds(&local, needle), "the check reads binaries: the local one holds it");
        assert!(!holds(deployed, needle), "the deployed service binary holds the local identity");
    }
}
