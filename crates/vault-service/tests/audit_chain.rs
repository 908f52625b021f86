//! The audit shows tampering (issue 18, item 8): every entry is chained under the audit
//! key, each committed link goes to the service's log, and `audit verify` catches the
//! table's owner rewriting entries by a type change (no trigger sees it), the service's
//! login forging an entry without the key, and entries deleted from the middle or the end
//! (the end given the log's head). Also: the audit's masks are keyed digests, and its
//! listing comes in pages bounded by rows and bytes.

#![recursion_limit = "256"]

use login_etl_core::crypto::PiiField;
use pii_vault_protocol::{AUDIT_PAGE_BYTES, RevealTarget, VerifyPage};
use pii_vault_service::VaultService;
use serde_json::Value;
use testkit::*;
use tokio_postgres::error::SqlState;

/// Logs of this thread's service calls, as the service's log stream holds them.
fn capture_logs() -> (LogCapture, tracing::subscriber::DefaultGuard) {
    let capture = LogCapture::default();
    let writer = capture.clone();
    let guard =
        tracing::subscriber::set_default(login_etl_core::telemetry::json_subscriber(move || writer.clone()));
    (capture, guard)
}

/// The links (`SEQ:CHAIN`) the log recorded, in log order.
fn logged_links(capture: &LogCapture) -> Vec<(i64, String)> {
    capture
        .text()
        .lines()
        .filter_map(|line| {
            let line: Value = serde_json::from_str(line).ok()?;
            let fields = &line["fields"];
            (fields["message"] == "audit chain").then(|| {
                (fields["seq"].as_i64().expect("seq"), fields["chain"].as_str().expect("chain").to_owned())
            })
        })
        .collect()
}

fn head_of(capture: &LogCapture) -> String {
    let (seq, chain) = logged_links(capture).into_iter().max_by_key(|(seq, _)| *seq).expect("a logged link");
    format!("{seq}:{chain}")
}

/// Every page of `audit verify`, as the CLI loops over them.
async fn verify(service: &VaultService, head: Option<&str>) -> VerifyPage {
    let mut total = VerifyPage::empty();
    let mut after = None;
    loop {
        let auditor = staff("auditor");
        let page = Box::pin(service.audit_verify(&auditor, after.take(), head.map(str::to_owned)))
            .await
            .expect("verify");
        match total.add(page) {
            Some(next) => after = Some(next),
            None => return total,
        }
    }
}

/// Some history: finds, reveals with reasons, a refusal, a listing, by two callers.
async fn history(service: &VaultService) {
    let user = sample_messages()[0]["user_id"].as_str().expect("user").to_owned();
    for name in ["alice", "bob", "alice"] {
        service
            .reveal(&staff(name), &RevealTarget::UserId(user.clone()), Some(REASON))
            .await
            .expect("reveal");
        service.find(&staff(name), PiiField::Ip, "199.172.111.135", None).await.expect("find");
    }
    service.reveal(&staff("bob"), &RevealTarget::UserId(user), None).await.expect_err("no reason");
    service.audit(&staff("alice"), None, None, None).await.expect("listing");
}

/// A database loaded by the function, and the service.
async fn setup() -> (TestDb, VaultService) {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    (db, service)
}

fn owner_sql(sql: &str) -> String {
    format!("SET ROLE login_etl_audit_owner; {sql}; RESET ROLE")
}

#[tokio::test]
async fn an_untouched_audit_verifies_every_link_is_logged_and_masks_are_keyed_digests() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (capture, _guard) = capture_logs();
    history(&service).await;

    let links = logged_links(&capture);
    let entries = db.count("SELECT count(*) FROM pii_audit_log.pii_audit_entries").await;
    assert_eq!(links.len() as i64, entries, "every committed entry is logged");
    let seqs: Vec<i64> = links.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=entries).collect::<Vec<_>>(), "numbered without gaps, logged in order");
    let stored: String = db
        .connect()
        .await
        .query_one(
            "SELECT encode(chain, 'hex') FROM pii_audit_log.pii_audit_entries WHERE seq = $1",
            &[&entries],
        )
        .await
        .expect("head")
        .get(0);
    assert_eq!(links.last().map(|(_, chain)| chain.as_str()), Some(stored.as_str()));

    let head = head_of(&capture);
    let report = verify(&service, Some(&head)).await;
    assert_eq!(report.broken, None);
    assert_eq!(report.unchained, 0);
    assert!(report.verified as i64 >= entries, "{report:?}");
    // Resumable: from a cursor (a logged link), only what follows is recomputed.
    let (seq, chain) = &links[4];
    let page =
        service.audit_verify(&staff("auditor"), Some(format!("{seq}:{chain}")), None).await.expect("page");
    assert_eq!(page.broken, None);
    // (through its own request's entry; its outcome's came after)
    assert_eq!(
        page.verified as i64,
        db.count("SELECT max(seq) FROM pii_audit_log.pii_audit_entries").await - 1 - seq
    );
    // A wrong cursor does not verify.
    let page = service.audit_verify(&staff("auditor"), Some(format!("{seq}:{}", "0".repeat(64))), None).await;
    assert_eq!(page.expect("page").broken.map(|b| b.seq), Some(seq + 1));

    // No mask of user_logins is in a chained entry; the digest is the mask's, per key.
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    let digest = audit_digest(&db, &kms, PiiField::Ip, &index).await;
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit_log.pii_audit_entries a JOIN login_data.user_logins u ON a.blind_index IN (u.masked_ip, u.masked_device_id)").await,
        0
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM pii_audit WHERE action = 'find' AND blind_index = '{digest}'"
        ))
        .await,
        3
    );
}

#[tokio::test]
async fn the_owner_rewriting_callers_and_blanking_reasons_with_a_type_change_is_caught() {
    let (db, service) = setup().await;
    history(&service).await;
    assert_eq!(verify(&service, None).await.broken, None);

    // What the red team did: DDL as the table's owner, which no row trigger sees (the view
    // depends on the columns, so it goes first; the owner may drop its own constraints).
    let owner = db.connect().await;
    owner
        .batch_execute(&owner_sql(
            "DROP VIEW public.pii_audit, public.pii_audit_entries, pii_audit_log.pii_audit;
             ALTER TABLE pii_audit_log.pii_audit_entries DROP CONSTRAINT pii_audit_reason_required;
             ALTER TABLE pii_audit_log.pii_audit_entries
                 ALTER COLUMN caller TYPE text USING replace(caller, '/bob', '/alice'),
                 ALTER COLUMN reason TYPE text USING NULL",
        ))
        .await
        .expect("the owner rewrites the audit");
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit_log.pii_audit_entries WHERE caller LIKE '%/bob'").await,
        0
    );

    let broken = verify(&service, None).await.broken.expect("caught");
    assert_eq!(broken.seq, 1, "{broken:?}");
    assert!(broken.problem.contains("does not match its chain"), "{broken:?}");
}

#[tokio::test]
async fn the_owner_rewriting_only_one_callers_entries_is_caught_at_the_first_of_them() {
    let (db, service) = setup().await;
    history(&service).await;
    let first_bob =
        db.count("SELECT min(seq) FROM pii_audit_log.pii_audit_entries WHERE caller LIKE '%/bob'").await;
    assert!(first_bob > 1);
    let owner = db.connect().await;
    owner
        .batch_execute(&owner_sql(
            "DROP VIEW public.pii_audit, public.pii_audit_entries, pii_audit_log.pii_audit;
             ALTER TABLE pii_audit_log.pii_audit_entries
                 ALTER COLUMN caller TYPE text USING replace(caller, '/bob', '/alice')",
        ))
        .await
        .expect("the owner rewrites bob's entries");
    let broken = verify(&service, None).await.broken.expect("caught");
    assert_eq!(broken.seq, first_bob, "{broken:?}");
}

#[tokio::test]
async fn an_entry_forged_by_the_services_login_without_the_key_is_caught() {
    let (db, service) = setup().await;
    history(&service).await;
    let login = connect(&db.login_in("login_etl_vault_service").await).await;

    // It cannot write an unchained entry, nor change or remove one.
    let error = login
        .batch_execute(
            "INSERT INTO pii_audit_log.pii_audit_entries (caller, action, outcome) VALUES ('x', 'audit', 'listed')",
        )
        .await
        .expect_err("unchained");
    assert_eq!(error.code(), Some(&SqlState::CHECK_VIOLATION), "{error}");
    // (By privilege, not only by the trigger, which raises the same error code.)
    let rights = login
        .query_one(
            "SELECT has_any_column_privilege('pii_audit_log.pii_audit_entries', 'UPDATE'),
                    has_table_privilege('pii_audit_log.pii_audit_entries', 'DELETE'),
                    has_table_privilege('pii_audit_log.pii_audit_entries', 'TRUNCATE'),
                    has_table_privilege('pii_audit_log.pii_audit_entries', 'INSERT')",
            &[],
        )
        .await
        .expect("privileges");
    let rights: (bool, bool, bool, bool) = (rights.get(0), rights.get(1), rights.get(2), rights.get(3));
    assert_eq!(rights, (false, false, false, true), "update, delete, truncate, insert");
    for sql in [
        "UPDATE pii_audit_log.pii_audit_entries SET caller = 'y'",
        "DELETE FROM pii_audit_log.pii_audit_entries",
    ] {
        let error = login.batch_execute(sql).await.expect_err(sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
    }

    // It can append an entry naming any caller, at the head, with a chain it made up.
    let forged = db.count("SELECT seq + 1 FROM pii_audit_log.pii_audit_chain_head").await;
    login
        .batch_execute(&format!(
            "BEGIN;
             SELECT seq FROM pii_audit_log.pii_audit_chain_head FOR UPDATE;
             INSERT INTO pii_audit_log.pii_audit_entries (seq, chain, caller, action, outcome, reason)
                 VALUES ({forged}, sha256('guess'), 'arn:aws:sts::123456789012:assumed-role/pii-vault-staff/carol',
                         'audit', 'listed', 'carol listed it');
             UPDATE pii_audit_log.pii_audit_chain_head SET seq = {forged}, chain = sha256('guess');
             COMMIT"
        ))
        .await
        .expect("the login appends");
    let broken = verify(&service, None).await.broken.expect("caught");
    assert_eq!(broken.seq, forged, "{broken:?}");
    assert!(broken.problem.contains("without the audit key"), "{broken:?}");
}

#[tokio::test]
async fn entries_the_owner_slips_in_unchained_or_twice_are_caught() {
    let (db, service) = setup().await;
    history(&service).await;
    let owner = db.connect().await;
    // An entry without a chain, after the chain began (the CHECK that refuses it dropped).
    let id = db.count("SELECT max(id) + 1000 FROM pii_audit_log.pii_audit_entries").await;
    owner
        .batch_execute(&owner_sql(&format!(
            "ALTER TABLE pii_audit_log.pii_audit_entries DROP CONSTRAINT pii_audit_entries_chained;
             INSERT INTO pii_audit_log.pii_audit_entries (id, caller, action, outcome) VALUES ({id}, 'someone', 'audit', 'listed')"
        )))
        .await
        .expect("the owner inserts");
    let broken = verify(&service, None).await.broken.expect("caught");
    assert_eq!(broken.seq, id, "{broken:?}");
    assert!(broken.problem.contains("no chain"), "{broken:?}");

    // A valid entry copied under the same number (the unique index dropped).
    owner
        .batch_execute(&owner_sql(&format!(
            "ALTER TABLE pii_audit_log.pii_audit_entries DISABLE TRIGGER pii_audit_append_only;
             DELETE FROM pii_audit_log.pii_audit_entries WHERE id = {id};
             DROP INDEX pii_audit_log.pii_audit_entries_seq_idx;
             INSERT INTO pii_audit_log.pii_audit_entries (seq, chain, caller, action, outcome, at, db_user, request_id)
                 SELECT seq, chain, caller, action, outcome, at, db_user, request_id FROM pii_audit_log.pii_audit_entries WHERE seq = 3"
        )))
        .await
        .expect("the owner copies an entry");
    let broken = verify(&service, None).await.broken.expect("caught");
    assert_eq!(broken.seq, 3, "{broken:?}");
}

#[tokio::test]
async fn a_deleted_entry_is_caught_and_a_truncated_tail_is_caught_with_the_logs_head() {
    let (db, service) = setup().await;
    let (capture, _guard) = capture_logs();
    history(&service).await;
    let log_head = head_of(&capture);
    let end = db.count("SELECT max(seq) FROM pii_audit_log.pii_audit_entries").await;

    // The owner removes the last three entries and moves the head back, so that the
    // service goes on from there.
    db.cut_audit_tail(end - 3).await;
    // Without the log the chain holds (a truncation leaves a valid prefix) ...
    let report = verify(&service, None).await;
    assert_eq!(report.broken, None, "{report:?}");
    // ... with its head, the entry at the head's place is not the logged one.
    let broken = verify(&service, Some(&log_head)).await.broken.expect("caught");
    assert_eq!(broken.seq, end, "{broken:?}");
    assert!(broken.problem.contains("not the one the log recorded"), "{broken:?}");

    // An entry removed from the middle (an outcome: nothing refers to it).
    let middle =
        db.count("SELECT min(seq) FROM pii_audit_log.pii_audit_entries WHERE outcome_of IS NOT NULL").await;
    db.connect()
        .await
        .batch_execute(&owner_sql(&format!(
            "ALTER TABLE pii_audit_log.pii_audit_entries DISABLE TRIGGER pii_audit_append_only;
             DELETE FROM pii_audit_log.pii_audit_entries WHERE seq = {middle}"
        )))
        .await
        .expect("the owner deletes");
    let broken = verify(&service, None).await.broken.expect("caught");
    assert_eq!(broken.seq, middle, "{broken:?}");
    assert!(broken.problem.contains("missing"), "{broken:?}");
}

#[tokio::test]
async fn a_truncated_tail_is_caught_as_ending_before_the_logs_head() {
    let (db, service) = setup().await;
    let (capture, _guard) = capture_logs();
    history(&service).await;
    let end = db.count("SELECT max(seq) FROM pii_audit_log.pii_audit_entries").await;
    let log_head = head_of(&capture);
    db.cut_audit_tail(end - 2).await;
    // Verify with the log's head, before anything else was appended: the audit ends short
    // of the log (verify's own entries came after; the logged ones are gone).
    let broken = verify(&service, Some(&log_head)).await.broken.expect("caught");
    assert_eq!(broken.seq, end, "{broken:?}");
    assert!(broken.problem.contains("deleted or truncated"), "{broken:?}");
}

#[tokio::test]
async fn the_audit_listing_comes_in_pages_bounded_by_rows_and_bytes() {
    let (db, service) = setup().await;
    let caller = staff("pager");
    for _ in 0..12 {
        service.audit(&caller, None, None, Some(1)).await.expect("listing");
    }
    // Pages of 5, following the cursor, give every request once, in order.
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = service.audit(&caller, None, after, Some(5)).await.expect("page");
        assert!(page.len() <= 5);
        ids.extend(page.iter().map(|row| row.id));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(ids, sorted);
    assert!(ids.len() >= 12, "{ids:?}");
    assert_eq!(
        service.audit(&caller, None, None, Some(0)).await.expect_err("no empty page").to_string(),
        "a page is 1 to 5000 rows"
    );

    // Rows of a kilobyte each (bounded, as the service's are): a page stops at the bytes.
    db.connect()
        .await
        .batch_execute(&owner_sql(
            "ALTER TABLE pii_audit_log.pii_audit_entries DROP CONSTRAINT pii_audit_entries_chained;
             INSERT INTO pii_audit_log.pii_audit_entries (caller, action, outcome, detail)
                 SELECT 'bulk', 'audit', 'listed', repeat('x', 1000) FROM generate_series(1, 3000)",
        ))
        .await
        .expect("bulk rows");
    let (page, next) = service.audit(&caller, None, None, Some(5000)).await.expect("page");
    let bytes = serde_json::to_vec(&page).expect("json").len();
    assert!(bytes <= AUDIT_PAGE_BYTES, "{bytes}");
    assert!(page.len() < 3000 && next.is_some(), "{} rows", page.len());
}
