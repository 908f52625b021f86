//! Red team, issue 19: the vault's expiry attacked as its own database login, as staff,
//! as the key administrator (batch sizes, races with forget) and with hostile settings.
//! Each test passes while the property holds.

// The racing futures nest deep.
#![recursion_limit = "256"]

use std::time::Duration;

use login_etl::{App, handler};
use login_etl_core::crypto::PiiField;
use pii_vault_protocol::{ForgetTarget, Outcome, Plaintext, RevealTarget};
use pii_vault_service::expiry::{self, MAX_BATCH_ROWS, Retention};
use pii_vault_service::{ServiceError, VaultService};
use testkit::*;
use tokio_postgres::error::SqlState;

/// One login per (id, ip, device id), all sent `days` ago.
async fn ingest(app: &App, days: i64, rows: &[(&str, &str, &str)]) {
    let sent = chrono::Utc::now().timestamp_millis() - days * 86_400_000;
    let records: Vec<(String, String)> = rows
        .iter()
        .map(|(id, ip, dev)| ((*id).to_owned(), login_body(&format!("u-{id}"), ip, dev)))
        .collect();
    let response = handler::handle(app, event_sent_at(&records, sent)).await.expect("ingest");
    assert!(response.batch_item_failures.is_empty());
}

/// Every vault row made 100 days old (the database owner's right, to stand for time).
async fn make_vault_old(db: &TestDb) {
    db.connect()
        .await
        .batch_execute("UPDATE vault.pii_vault SET created_at = now() - interval '100 days'")
        .await
        .expect("age");
}

/// Batches of the scheduled path until its pass ends: (scanned, expired).
async fn scheduled_pass(service: &VaultService) -> (u64, u64) {
    let run = expiry::run_scheduled(service, &expiry::schedule_context("rt19"), Duration::from_secs(60))
        .await
        .expect("scheduled run");
    assert!(run.done);
    (run.scanned, run.expired)
}

async fn vault_rows(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM vault.pii_vault").await
}

fn mask(app: &App, field: PiiField, value: &str) -> String {
    app.keyring.indexer.index(field, value).as_str().to_owned()
}

/// As the expiry's own login: an older version's erasure tombstone (a `pii_vault` row with
/// `erased_at`, which keeps the ingest from vaulting the value again until `admin
/// reencrypt` converts it) must not be deletable. Deleted, the next login of the forgotten
/// value vaults it again and a reveal answers it.
#[tokio::test]
async fn the_expiry_login_cannot_delete_an_erasure_tombstone() {
    expiry_login_deletes_a_tombstone(false).await;
}

/// The same, the expiry's login made NOINHERIT (an operator's choice: the group's rights
/// only after `SET ROLE login_etl_vault_expiry`): V16's trigger asks whether the session's
/// login inherits the group's rights, which it then does not.
#[tokio::test]
async fn a_noinherit_expiry_login_cannot_delete_an_erasure_tombstone_after_set_role() {
    expiry_login_deletes_a_tombstone(true).await;
}

/// A login of `group`, made NOINHERIT when `noinherit` (the group's rights only after SET
/// ROLE); the statements to prefix its attack with.
async fn login_of(db: &TestDb, group: &str, noinherit: bool) -> (tokio_postgres::Client, String) {
    let config = db.login_in(group).await;
    if !noinherit {
        return (connect(&config).await, String::new());
    }
    let user = config.get_user().expect("user").to_owned();
    db.connect().await.batch_execute(&format!("ALTER ROLE {user} NOINHERIT")).await.expect("noinherit");
    (connect(&config).await, format!("SET ROLE {group};"))
}

async fn expiry_login_deletes_a_tombstone(noinherit: bool) {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    let ip = "203.0.113.191";
    ingest(&app, 0, &[("t-1", ip, "dev-t1")]).await;
    // What version 9's forget left (crates/vault-service/tests/erasure.rs does the same).
    db.connect()
        .await
        .execute(
            "UPDATE vault.pii_vault SET key_version = NULL, nonce = NULL, ciphertext = NULL, erased_at = now()
              WHERE field = 'ip' AND blind_index = $1",
            &[&mask(&app, PiiField::Ip, ip)],
        )
        .await
        .expect("tombstone");
    let (login, set_role) = login_of(&db, "login_etl_vault_expiry", noinherit).await;
    let _ = login
        .batch_execute(&format!("{set_role} DELETE FROM vault.pii_vault WHERE erased_at IS NOT NULL"))
        .await;
    // The value seen again: still refused, still erased.
    ingest(&app, 0, &[("t-2", ip, "dev-t2")]).await;
    let service = vault_service(&db, &kms, 100).await;
    let target = RevealTarget::Mask { field: PiiField::Ip, mask: mask(&app, PiiField::Ip, ip) };
    let answer = service.reveal(&staff("erin"), &target, Some(REASON)).await.expect("reveal");
    assert_eq!(answer[0].outcome, Outcome::Erased, "a forgotten value came back");
}

/// As the expiry's own login: no ciphertext, nonce or key version reaches it through a
/// DELETE's RETURNING or WHERE, a COPY, or a row comparison; nothing is deleted trying.
#[tokio::test]
async fn the_expiry_login_learns_no_sealed_column_through_a_delete_or_a_copy() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    ingest(&app, 0, &[("c-1", "203.0.113.181", "dev-c1")]).await;
    let before = vault_rows(&db).await;
    let login = connect(&db.login_in("login_etl_vault_expiry").await).await;
    let statements = [
        "DELETE FROM vault.pii_vault RETURNING ciphertext",
        "DELETE FROM vault.pii_vault RETURNING *",
        "DELETE FROM vault.pii_vault WHERE length(ciphertext) > 0",
        "DELETE FROM vault.pii_vault WHERE nonce IS NOT NULL",
        "DELETE FROM vault.pii_vault WHERE key_version = 1",
        "DELETE FROM vault.pii_vault v WHERE v IS NOT NULL",
        "COPY vault.pii_vault TO STDOUT",
        "COPY (SELECT ciphertext FROM vault.pii_vault) TO STDOUT",
        "SELECT count(*) FROM vault.pii_vault v WHERE v.* IS NOT NULL",
        "SELECT user_id FROM login_data.user_logins WHERE user_id IS NOT NULL",
        "DELETE FROM vault.pii_vault_expiry",
        "INSERT INTO vault.pii_vault_expiry (only_row) VALUES (false)",
        "UPDATE pii_audit_log.pii_audit_entries SET outcome = 'done'",
    ];
    assert_refused_for_rights(&login, "the expiry's login", &statements).await;
    assert_eq!(vault_rows(&db).await, before);
}

/// As the expiry's own login: no SECURITY DEFINER function of the project is open to it,
/// and it can become no other role.
#[tokio::test]
async fn the_expiry_login_escalates_through_no_definer_function_or_role() {
    let db = TestDb::new().await;
    let config = db.login_in("login_etl_vault_expiry").await;
    let user = config.get_user().expect("user").to_owned();
    let open = db
        .texts(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.prosecdef AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
                AND has_function_privilege($1, p.oid, 'EXECUTE')",
            &[&user],
        )
        .await;
    assert!(open.is_empty(), "definer functions the expiry's login may call: {open:?}");
    let statements = [
        "SET ROLE login_etl_vault_service",
        "SET ROLE login_etl_writer",
        "SET ROLE login_etl_partition_owner",
        "SET ROLE login_etl_audit_owner",
        "SET ROLE login_etl_vault_reader",
    ];
    assert_refused_for_rights(&connect(&config).await, "the expiry's login", &statements).await;
}

/// As the expiry's own login (which may move the cursor): moving it to the end, or back to a
/// value already decided, delays a pass at most; it never expires a value seen recently,
/// and the next pass expires the old ones. A cursor that is not a mask is refused.
#[tokio::test]
async fn a_moved_cursor_only_delays_the_expiry_and_never_expires_a_recent_value() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    ingest(&app, 40, &[("m-1", "203.0.113.171", "dev-m1"), ("m-2", "203.0.113.172", "dev-m2")]).await;
    ingest(&app, 1, &[("m-3", "203.0.113.173", "dev-m3")]).await;
    make_vault_old(&db).await;
    let config = db.login_in("login_etl_vault_expiry").await;
    let login = connect(&config).await;
    let pool = login_etl_core::store::stateless_pool(config.clone().into(), 2).expect("pool");
    let scheduled = VaultService::for_schedule(pool, kms.clone(), Retention::days(30).expect("30"));

    for bad in [
        "UPDATE vault.pii_vault_expiry SET field = 'user_id', blind_index = repeat('0', 64)",
        "UPDATE vault.pii_vault_expiry SET field = 'ip', blind_index = 'not a mask'",
        "UPDATE vault.pii_vault_expiry SET field = 'ip', blind_index = NULL",
        "UPDATE vault.pii_vault_expiry SET field = 'ip', blind_index = repeat('0', 64), created_at = NULL",
        "UPDATE vault.pii_vault_expiry SET field = 'ip', blind_index = repeat('0', 64), created_at = 'infinity'",
        "UPDATE vault.pii_vault_expiry SET field = 'ip', blind_index = repeat('0', 64), created_at = '-infinity'",
    ] {
        let error = login.batch_execute(bad).await.expect_err(bad);
        assert_eq!(error.code(), Some(&SqlState::CHECK_VIOLATION), "{bad}: {error}");
    }
    // To the end: the pass ends at once, having decided nothing.
    login
        .batch_execute(
            "UPDATE vault.pii_vault_expiry SET created_at = '294276-12-31', field = 'ip', blind_index = repeat('f', 64)",
        )
        .await
        .expect("cursor to the end");
    assert_eq!(scheduled_pass(&scheduled).await, (0, 0));
    // The next pass starts at the beginning: exactly the 4 old values go, the 2 recent stay.
    assert_eq!(scheduled_pass(&scheduled).await, (6, 4));
    let kept = db.texts("SELECT blind_index FROM vault.pii_vault ORDER BY 1", &[]).await;
    let mut recent =
        vec![mask(&app, PiiField::Ip, "203.0.113.173"), mask(&app, PiiField::DeviceId, "dev-m3")];
    recent.sort();
    assert_eq!(kept, recent);
    // Back to the start mid-pass: the recent ones are decided again and kept again.
    login
        .batch_execute(
            "UPDATE vault.pii_vault_expiry SET created_at = '4713-01-01 BC', field = 'device_id', blind_index = repeat('0', 64)",
        )
        .await
        .expect("cursor back");
    assert_eq!(scheduled_pass(&scheduled).await, (2, 0));
    assert_eq!(vault_rows(&db).await, 2);
}

/// The cursor holds a mask: no person's login, nor the writer's or the purge's, may read
/// or move it.
#[tokio::test]
async fn the_expiry_cursor_is_out_of_every_other_logins_reach() {
    let db = TestDb::new().await;
    for group in [
        "login_etl_analyst",
        "login_etl_vault_reader",
        "login_etl_auditor",
        "login_etl_quarantine_purge",
        "login_etl_writer",
        "login_etl_partition_maintainer",
    ] {
        let client = connect(&db.login_in(group).await).await;
        let statements = [
            "SELECT blind_index FROM vault.pii_vault_expiry",
            "UPDATE vault.pii_vault_expiry SET field = NULL, blind_index = NULL",
            "SELECT 1 FROM vault.pii_vault_expiry FOR UPDATE",
        ];
        assert_refused_for_rights(&client, group, &statements).await;
    }
}

/// As the key administrator: any batch size outside 1 to MAX_BATCH_ROWS is refused before
/// it works (nothing deleted); as staff, expire is refused whatever the size; the outcome
/// and the record name counts only, never a mask.
#[tokio::test]
async fn crafted_batch_sizes_are_refused_and_the_outcome_names_no_mask() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    ingest(&app, 40, &[("b-1", "203.0.113.161", "dev-b1")]).await;
    make_vault_old(&db).await;
    let service = vault_service(&db, &kms, 100).await.with_vault_retention(Retention::days(30).expect("30"));
    for size in [0, -1, MAX_BATCH_ROWS + 1, i64::MAX, i64::MIN] {
        let refused = service.expire(&key_admin(), size).await.expect_err("size");
        assert!(matches!(refused, ServiceError::BadRequest(_)), "{size}: {refused:?}");
        let refused = service.expire(&staff("erin"), size).await.expect_err("staff");
        assert!(
            matches!(refused, ServiceError::NotAllowed { .. } | ServiceError::BadRequest(_)),
            "{size}: {refused:?}"
        );
    }
    let refused = service.expire(&staff("erin"), 1).await.expect_err("staff");
    assert!(matches!(refused, ServiceError::NotAllowed { .. }), "{refused:?}");
    assert_eq!(vault_rows(&db).await, 2, "nothing deleted by a refused request");
    // One row a batch: each answer is a count, and the record names no mask.
    let first = service.expire(&key_admin(), 1).await.expect("batch");
    assert_eq!((first.scanned, first.expired), (1, 1));
    let masks = [mask(&app, PiiField::Ip, "203.0.113.161"), mask(&app, PiiField::DeviceId, "dev-b1")];
    let record = db
        .texts(
            "SELECT concat_ws('|', caller, outcome, detail, target, blind_index, field)
               FROM pii_audit_log.pii_audit_entries WHERE action = 'expire'",
            &[],
        )
        .await;
    assert!(!record.is_empty());
    for line in &record {
        for m in &masks {
            assert!(!line.contains(m.as_str()), "a mask in the expiry's record: {line}");
        }
    }
}

/// As the key administrator: forget racing the expiry on the same value never brings the
/// forgotten value back (the next login of it is tokenised, never vaulted), and a recent
/// value the expiry must keep is kept.
#[tokio::test]
async fn forget_racing_the_expiry_never_brings_a_forgotten_value_back() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await.with_vault_retention(Retention::days(30).expect("30"));
    for round in 0..6u8 {
        let ip = format!("198.51.100.{round}");
        let rows: Vec<(String, String, String)> = (0..20)
            .map(|i| {
                (
                    format!("f-{round}-{i}"),
                    format!("198.18.200.{}", round * 20 + i),
                    format!("dev-f-{round}-{i}"),
                )
            })
            .collect();
        let old: Vec<(&str, &str, &str)> =
            rows.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
        ingest(&app, 40, &old).await;
        ingest(&app, 40, &[(&format!("f-{round}-x"), &ip, "dev-forgotten")]).await;
        make_vault_old(&db).await;
        let target = ForgetTarget::Plaintext(Plaintext::new(&ip));
        let forget = async {
            tokio::time::sleep(Duration::from_millis(5 * u64::from(round))).await;
            service.forget(&staff("erin"), PiiField::Ip, &target, Some(REASON)).await.expect("forget")
        };
        let expire = async {
            loop {
                if service.expire(&key_admin(), 3).await.expect("expire").done {
                    break;
                }
            }
        };
        let (outcome, ()) = tokio::join!(forget, expire);
        assert_eq!(outcome, Outcome::Forgotten);
        // Seen again: never vaulted again, never revealed.
        ingest(&app, 0, &[(&format!("f-{round}-y"), &ip, "dev-again")]).await;
        let m = mask(&app, PiiField::Ip, &ip);
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM vault.pii_vault WHERE field = 'ip' AND blind_index = '{m}'"
            ))
            .await,
            0,
            "round {round}: the forgotten value was vaulted again"
        );
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM login_data.user_logins WHERE masked_ip = '{m}'")).await,
            0,
            "round {round}: a login holds the forgotten value's mask"
        );
    }
}

/// Hostile `VAULT_RETENTION_DAYS`: non-ASCII digits, signs, exponents, separators, units,
/// zero and out-of-range values are refused; what is accepted means exactly its ASCII days.
#[test]
fn a_hostile_vault_retention_is_refused_or_means_exactly_its_days() {
    for bad in [
        "٣٠",
        "３０",
        "३०",
        "-0",
        "-30",
        "0",
        "00",
        "3651",
        "4294967296",
        "1e2",
        "0x1e",
        "30.0",
        "30 days",
        "3_0",
        "30,",
        "∞",
        "forever",
        "NaN",
        "30\u{0}",
        "3\u{200b}0",
    ] {
        assert!(Retention::parse(Some(bad)).is_err(), "accepted {bad:?}");
    }
    for (good, days) in
        [("30", 30), (" 30 ", 30), ("\t7\n", 7), ("+30", 30), ("\u{a0}30", 30), ("030", 30), ("3650", 3650)]
    {
        assert_eq!(Retention::parse(Some(good)).expect(good).as_days(), Some(days), "{good:?}");
    }
    assert_eq!(Retention::parse(Some("\u{3000}")).expect("blank"), Retention::FOREVER);
}

/// As the writer (which may take the erasure lock shared): holding it open keeps the
/// expiry from working, but the expiry then fails within its bounds, on the record, having
/// deleted nothing; it never answers "done". Released, the next run expires as it should.
#[tokio::test]
async fn a_writer_holding_the_erasure_lock_makes_the_expiry_fail_on_the_record_never_succeed_wrongly() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    ingest(&app, 40, &[("w-1", "203.0.113.151", "dev-w1")]).await;
    make_vault_old(&db).await;
    let service = vault_service(&db, &kms, 100).await.with_vault_retention(Retention::days(30).expect("30"));
    let writer = connect(&db.login_in("login_etl_writer").await).await;
    writer.batch_execute("BEGIN; SELECT only_row FROM pii_locks.erasure FOR SHARE").await.expect("held");
    let started = std::time::Instant::now();
    let failed = service.expire(&key_admin(), 1000).await.expect_err("blocked");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "the expiry waited {took:?}");
    assert!(!matches!(failed, ServiceError::BadRequest(_) | ServiceError::NotAllowed { .. }), "{failed:?}");
    assert_eq!(vault_rows(&db).await, 2, "nothing deleted");
    let outcomes = db
        .texts("SELECT coalesce(outcome, 'request') FROM pii_audit_log.pii_audit_entries WHERE action = 'expire' ORDER BY seq", &[])
        .await;
    assert_eq!(outcomes, ["request", "failed"]);
    writer.batch_execute("COMMIT").await.expect("released");
    let done = service.expire(&key_admin(), 1000).await.expect("expire");
    assert_eq!((done.scanned, done.expired, done.done), (2, 2, true));
}

/// As the expiry's own login holding the erasure lock exclusive (docs/security.md,
/// "Expiry", Limits): an ingest batch is held back only to its own lock timeout, then
/// fails whole (nothing half-written, nothing lost: it rides out on the queue) and is
/// written by its redelivery once the lock is released.
#[tokio::test]
async fn the_expiry_login_holding_the_erasure_lock_stalls_ingest_only_to_its_lock_timeout() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    let login = connect(&db.login_in("login_etl_vault_expiry").await).await;
    login.batch_execute("BEGIN; SELECT only_row FROM pii_locks.erasure FOR UPDATE").await.expect("held");
    let records = vec![("h-1".to_owned(), login_body("u-h1", "203.0.113.141", "dev-h1"))];
    let sent = chrono::Utc::now().timestamp_millis();
    let started = std::time::Instant::now();
    let answer = handler::handle(&app, event_sent_at(&records, sent)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "ingest waited {took:?}");
    assert!(
        answer.map_or(true, |r| !r.batch_item_failures.is_empty()),
        "the batch must fail, not be dropped"
    );
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 0);
    assert_eq!(vault_rows(&db).await, 0);
    login.batch_execute("COMMIT").await.expect("released");
    let again = handler::handle(&app, event_sent_at(&records, sent)).await.expect("redelivery");
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 1);
    assert_eq!(vault_rows(&db).await, 2);
}

/// As the expiry's own login (which may move the audit's chain head, to append as the
/// service does), and as the service's: the head cannot be rewound (V16), so the vault
/// service's audited operations (a person's `forget` above all) go on and the chain holds.
#[tokio::test]
async fn the_expiry_login_cannot_stop_the_services_audited_operations_by_rewinding_the_chain_head() {
    let db = TestDb::new().await;
    let ip = "203.0.113.131";
    let service = audited_once(&db, ip).await;
    for group in ["login_etl_vault_expiry", "login_etl_vault_service"] {
        let login = connect(&db.login_in(group).await).await;
        for rewind in [
            "UPDATE pii_audit_log.pii_audit_chain_head SET seq = 0",
            "UPDATE pii_audit_log.pii_audit_chain_head SET seq = seq - 1",
            "UPDATE pii_audit_log.pii_audit_chain_head SET chain = NULL",
            "UPDATE pii_audit_log.pii_audit_chain_head SET seq = seq + 5",
        ] {
            let refused = login.batch_execute(rewind).await.expect_err(rewind);
            assert_eq!(refused.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{group}: {rewind}");
        }
    }
    assert_audit_goes_on(&service, ip).await;
}

/// A login of the ingest's value `ip` and the service after one audited reveal of it.
async fn audited_once(db: &TestDb, ip: &str) -> VaultService {
    let kms = new_kms().await;
    let app = writer_app(db, &kms).await;
    ingest(&app, 0, &[("a-1", ip, "dev-a1")]).await;
    let service = vault_service(db, &kms, 100).await;
    let target = RevealTarget::Mask { field: PiiField::Ip, mask: mask(&app, PiiField::Ip, ip) };
    service.reveal(&staff("erin"), &target, Some(REASON)).await.expect("a first audited operation");
    service
}

/// A person's `forget` of `ip` is audited and done, and the chain verifies.
async fn assert_audit_goes_on(service: &VaultService, ip: &str) {
    let forgotten = service
        .forget(&staff("erin"), PiiField::Ip, &ForgetTarget::Plaintext(Plaintext::new(ip)), Some(REASON))
        .await;
    assert!(matches!(forgotten, Ok(Outcome::Forgotten)), "forget after the attempts: {forgotten:?}");
    let page = service.audit_verify(&staff("auditor"), None, None).await.expect("verify");
    assert!(page.broken.is_none(), "the chain broke: {page:?}");
}

/// As the expiry's own login and the service's (each may INSERT audit entries, to append):
/// an entry planted ahead of the chain head, at a seq the next appends will reach, must
/// not stop the service's audited operations. V16's head trigger then refuses every
/// append (an entry newer than the head exists) and the entries are append-only, so only
/// the audit's owner could remove it. A BEFORE INSERT trigger requiring `NEW.seq` to be
/// the head's seq + 1 would refuse the plant.
#[tokio::test]
async fn an_entry_planted_ahead_of_the_chain_head_stops_no_audited_operation() {
    let db = TestDb::new().await;
    let ip = "203.0.113.132";
    let service = audited_once(&db, ip).await;
    for (i, group) in ["login_etl_vault_expiry", "login_etl_vault_service"].into_iter().enumerate() {
        let login = connect(&db.login_in(group).await).await;
        let _ = login
            .batch_execute(&format!(
                "INSERT INTO pii_audit_log.pii_audit_entries (seq, caller, action, chain)
                 SELECT seq + 3 + {i}, 'planted', 'expire', decode(repeat('00', 32), 'hex')
                   FROM pii_audit_log.pii_audit_chain_head"
            ))
            .await;
    }
    assert_audit_goes_on(&service, ip).await;
}

/// As the partition maintenance's login (a member of `user_logins`'s owner role, which it
/// needs for DDL): a trigger of its own on `user_logins` would run with the rights of
/// whoever writes the table, so the vault service's `forget` (which rewrites masks there)
/// would delete every vault value on its behalf. Its reach must stay `user_logins`.
#[tokio::test]
async fn the_maintainer_login_cannot_borrow_the_services_rights_through_a_trigger() {
    maintainer_borrows_through_a_trigger(false).await;
}

/// The same, the maintenance's login made NOINHERIT (an operator's choice; the maintenance
/// sets the owner's role itself, so it still works): V16's event trigger asks whether the
/// session's login inherits a login_etl group's rights, which it then does not.
#[tokio::test]
async fn a_noinherit_maintainer_login_cannot_borrow_the_services_rights_through_a_trigger() {
    maintainer_borrows_through_a_trigger(true).await;
}

async fn maintainer_borrows_through_a_trigger(noinherit: bool) {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    ingest(&app, 0, &[("g-1", "203.0.113.121", "dev-g1"), ("g-2", "203.0.113.122", "dev-g2")]).await;
    let before = vault_rows(&db).await;
    let (maintainer, _) = login_of(&db, "login_etl_partition_maintainer", noinherit).await;
    let planted = maintainer
        .batch_execute(
            "SET ROLE login_etl_partition_owner;
             CREATE FUNCTION login_data.borrowed() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN DELETE FROM vault.pii_vault; RETURN NULL; END $$;
             CREATE TRIGGER borrowed AFTER UPDATE ON login_data.user_logins
                 FOR EACH STATEMENT EXECUTE FUNCTION login_data.borrowed();",
        )
        .await;
    let service = vault_service(&db, &kms, 100).await;
    let _ = service
        .forget(
            &staff("erin"),
            PiiField::Ip,
            &ForgetTarget::Plaintext(Plaintext::new("203.0.113.121")),
            Some(REASON),
        )
        .await;
    // The forgotten value's row goes (forget's own delete); every other stays.
    assert_eq!(
        vault_rows(&db).await,
        before - 1,
        "the maintainer's trigger acted as the service (planted: {planted:?})"
    );
}

/// The same logins, an entry at the head's next number (which the BEFORE INSERT trigger
/// allows, as a real append needs) committed without moving the head to it, and a second
/// entry after it in the same transaction, the head still unmoved: refused for rights, at
/// the commit or at the second INSERT (V19); the service's audited operations go on and
/// the chain holds.
#[tokio::test]
async fn an_entry_at_the_heads_next_number_left_behind_the_head_is_refused() {
    let db = TestDb::new().await;
    let ip = "203.0.113.133";
    let service = audited_once(&db, ip).await;
    for group in ["login_etl_vault_expiry", "login_etl_vault_service"] {
        let login = connect(&db.login_in(group).await).await;
        for plant in [
            "INSERT INTO pii_audit_log.pii_audit_entries (seq, caller, action, chain)
             SELECT seq + 1, 'planted', 'expire', decode(repeat('00', 32), 'hex')
               FROM pii_audit_log.pii_audit_chain_head",
            "BEGIN;
             INSERT INTO pii_audit_log.pii_audit_entries (seq, caller, action, chain)
             SELECT seq + 1, 'planted', 'expire', decode(repeat('00', 32), 'hex')
               FROM pii_audit_log.pii_audit_chain_head;
             INSERT INTO pii_audit_log.pii_audit_entries (seq, caller, action, chain)
             SELECT seq + 2, 'planted', 'expire', decode(repeat('00', 32), 'hex')
               FROM pii_audit_log.pii_audit_chain_head;
             COMMIT",
        ] {
            let refused = login.batch_execute(plant).await.expect_err(plant);
            assert_eq!(refused.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{group}: {plant}");
            let _ = login.batch_execute("ROLLBACK").await;
        }
    }
    assert_audit_goes_on(&service, ip).await;
}
