//! Many instances, few connections: the vault service through a transaction-pooling proxy
//! (PgBouncer 1.18, `pool_mode = transaction`, 3 server connections), where consecutive
//! transactions of one client run on different server connections. Every operation it
//! offers, from many concurrent requests of several instances, answers right, keeps the
//! audit chain and the budgets exact, and leaves nothing on the server connections: no
//! named prepared statement, no session setting (docs/operations.md, "Connection poolers").

use std::sync::Arc;

use login_etl_core::crypto::PiiField;
use login_etl_core::error::report;
use pii_vault_protocol::{ForgetTarget, Outcome, Plaintext, ReplaySelection, RevealTarget};
use pii_vault_service::{QuarantineFilter, QuarantineSettings, ServiceError, VaultService};
use testkit::*;
use tokio::sync::Barrier;

const SERVER_CONNECTIONS: u32 = 3;
/// Service instances (Lambda's), each with the deployed pool of 2 connections.
const INSTANCES: usize = 4;
/// Staff members, each one request stream, spread over the instances.
const CALLERS: usize = 16;
/// What each caller spends: a find 1, a reveal by mask 1, a reveal by user id 2 (two
/// values), a quarantine show 2, a forget 1.
const UNITS_PER_CALLER: i64 = 7;

/// The sample's one message that is no login (loaded_by_writer quarantines it).
const SAMPLE_BAD_ID: &str = "36a42109-7f8e-51c9-9335-882c07aaf72f";
const SAMPLE_BAD_BODY: &str = r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#;

type Failure = String;

/// One caller's requests, each checked; the first wrong answer or error is the failure.
async fn session(service: &VaultService, caller: usize, login: &serde_json::Value) -> Result<(), Failure> {
    let who = staff(&format!("pooled-{caller:02}"));
    let fail = |what: &str, error: &ServiceError| format!("caller {caller} {what}: {}", report(error));
    let text = |name: &str| login[name].as_str().map(str::to_owned).ok_or(format!("sample has no {name}"));
    let (user_id, ip, device) = (text("user_id")?, text("ip")?, text("device_id")?);

    let (ip_mask, rows) =
        Box::pin(service.find(&who, PiiField::Ip, &ip, None)).await.map_err(|e| fail("find", &e))?;
    if rows.len() != 1 || rows[0].user_id.as_deref() != Some(user_id.as_str()) {
        return Err(format!("caller {caller} find answered {} row(s)", rows.len()));
    }
    let by_mask = RevealTarget::Mask { field: PiiField::Ip, mask: ip_mask.as_str().to_owned() };
    let revealed =
        Box::pin(service.reveal(&who, &by_mask, Some(REASON))).await.map_err(|e| fail("reveal", &e))?;
    if revealed.len() != 1 || revealed[0].value.as_ref().map(Plaintext::expose) != Some(ip.as_str()) {
        return Err(format!("caller {caller} reveal by mask answered another value"));
    }
    let by_user = Box::pin(service.reveal(&who, &RevealTarget::UserId(user_id.clone()), Some(REASON)))
        .await
        .map_err(|e| fail("reveal by user id", &e))?;
    let mut values: Vec<&str> =
        by_user.iter().filter_map(|r| r.value.as_ref().map(Plaintext::expose)).collect();
    values.sort_unstable();
    let mut expected = vec![ip.as_str(), device.as_str()];
    expected.sort_unstable();
    if values != expected {
        return Err(format!("caller {caller} reveal by user id answered other values"));
    }
    Box::pin(service.audit(&who, None, None, Some(50))).await.map_err(|e| fail("audit", &e))?;
    let (listed, _) = Box::pin(service.quarantine_list(&who, &QuarantineFilter::default()))
        .await
        .map_err(|e| fail("quarantine list", &e))?;
    if !listed.iter().any(|row| row.message_id == SAMPLE_BAD_ID) {
        return Err(format!("caller {caller} quarantine list misses the quarantined message"));
    }
    let shown = Box::pin(service.quarantine_show(&who, SAMPLE_BAD_ID, None, Some(REASON)))
        .await
        .map_err(|e| fail("quarantine show", &e))?;
    if shown.body.as_deref().map(String::as_str) != Some(SAMPLE_BAD_BODY) {
        return Err(format!("caller {caller} quarantine show answered another body"));
    }
    // Every caller replays the same row: exactly one of them sends it (checked below).
    Box::pin(service.quarantine_replay(
        &who,
        &ReplaySelection::MessageIds(vec![SAMPLE_BAD_ID.to_owned()]),
        Some(REASON),
    ))
    .await
    .map_err(|e| fail("quarantine replay", &e))?;
    Box::pin(service.quarantine_purge(&who)).await.map_err(|e| fail("quarantine purge", &e))?;
    // Each caller forgets its own device id: forgets serialize on the erasure lock.
    let forgotten = Box::pin(service.forget(
        &who,
        PiiField::DeviceId,
        &ForgetTarget::Plaintext(Plaintext::new(&device)),
        Some(REASON),
    ))
    .await
    .map_err(|e| fail("forget", &e))?;
    if forgotten != Outcome::Forgotten {
        return Err(format!("caller {caller} forget answered {forgotten:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_vault_operation_from_concurrent_callers_through_three_pooled_server_connections() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let queues = TestQueues::new(3, 30).await;
    loaded_by_writer(&db, &kms).await;
    let bouncer =
        PgBouncer::in_front_of(&db.login_in("login_etl_vault_service").await, SERVER_CONNECTIONS).await;
    let services: Vec<Arc<VaultService>> =
        (0..INSTANCES)
            .map(|_| {
                let service = vault_service_on(bouncer.config.clone(), 2, &kms, 100).with_quarantine(
                    QuarantineSettings { queues: queues.for_vault_service(), ..Default::default() },
                );
                Arc::new(service)
            })
            .collect();
    let logins: Vec<serde_json::Value> =
        sample_messages().into_iter().filter(|m| m.get("user_id").is_some()).take(CALLERS).collect();
    assert_eq!(logins.len(), CALLERS);

    let barrier = Arc::new(Barrier::new(CALLERS));
    let mut runs = Vec::new();
    for (caller, login) in logins.into_iter().enumerate() {
        let (service, barrier) = (services[caller % INSTANCES].clone(), barrier.clone());
        runs.push(tokio::spawn(async move {
            barrier.wait().await;
            Box::pin(session(&service, caller, &login)).await
        }));
    }
    let mut failures = Vec::new();
    for run in runs {
        if let Err(failure) = run.await.expect("task") {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CALLERS} callers failed through the pooler: {failures:#?}",
        failures.len()
    );

    // Budgets exact: each caller spent what its requests cost, the role their sum.
    let spent = db
        .connect()
        .await
        .query_typed("SELECT person, sum(units)::int8 FROM pii_budget.pii_budget_spent GROUP BY person", &[])
        .await
        .expect("spent");
    assert_eq!(spent.len(), CALLERS, "one budget per caller");
    for row in &spent {
        assert_eq!(row.get::<_, i64>(1), UNITS_PER_CALLER, "{}", row.get::<_, String>(0));
    }
    // One replay was sent, the others found it replayed or held.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM login_data.login_quarantine WHERE message_id = '{SAMPLE_BAD_ID}' AND replay_attempt IS NOT NULL"
        ))
        .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM vault.pii_erasures WHERE field = 'device_id'").await,
        CALLERS as i64
    );

    // The audit chain holds over every entry the callers wrote, verified through the pooler.
    let chained =
        db.count("SELECT count(*) FROM pii_audit_log.pii_audit_entries WHERE seq IS NOT NULL").await;
    let auditor = staff("pooled-verifier");
    let (mut after, mut verified) = (None, 0);
    loop {
        let page = Box::pin(services[0].audit_verify(&auditor, after, None)).await.expect("audit verify");
        assert!(page.broken.is_none(), "{:?}", page.broken);
        verified += page.verified;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(verified as i64 >= chained, "verified {verified} of the callers' {chained} entries");
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE action = 'reveal' AND outcome = 'revealed'").await,
        3 * CALLERS as i64,
        "each revealed value on the record with its outcome"
    );

    bouncer.assert_server_connections_clean().await;
    drop(services);
    drop(bouncer);
}

/// The check above can fail: a session `SET`, or a named statement kept by its client, is
/// seen on the server connection by the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_or_a_named_statement_left_on_a_server_connection_is_seen() {
    let db = TestDb::new().await;
    for leave in ["a session SET", "a named statement"] {
        let bouncer = PgBouncer::in_front_of(&db.config, 1).await;
        let client = connect(&bouncer.config).await;
        let _kept = if leave == "a session SET" {
            client.batch_execute("SET lock_timeout = 3000").await.expect("set");
            None
        } else {
            Some(client.prepare("SELECT 1").await.expect("prepare"))
        };
        let seen = tokio::spawn(async move { bouncer.assert_server_connections_clean().await }).await;
        assert!(seen.is_err_and(|e| e.is_panic()), "{leave} left on the server connection is seen");
    }
}
