//! Erasure that unlinks (docs/security.md, "Erasure"), on the real database and KMS: after
//! `forget`, nothing a person can reach links the value to its rows (not `find`, not a
//! reveal, not a mask recomputed with the index key); the rows that shared it still share
//! its token; a later login with the value gets that token and is never vaulted; a forget
//! racing batches of the value never leaves the raw mask or a sealed value behind; the
//! erasures of older versions are converted by `admin reencrypt`.

// A spawned forget's future is deep.
#![recursion_limit = "256"]

use login_etl::App;
use login_etl::handler;
use login_etl_core::crypto::{BlindIndex, PiiField};
use pii_vault_protocol::{ForgetTarget, Outcome, Plaintext, RevealTarget, Revealed};
use pii_vault_service::{ServiceError, VaultService};
use testkit::*;
use tokio_postgres::error::SqlState;

/// The tables a mask could be kept in, the audit aside (its masks are keyed apart: not
/// this change). How many rows of them hold `text` anywhere in a column.
async fn holders(db: &TestDb, text: &str) -> i64 {
    let tables = [
        "login_data.user_logins",
        "vault.pii_vault",
        "login_data.login_quarantine",
        "login_data.login_quarantine_masks",
        "vault.pii_erasures",
    ];
    let mut total = 0;
    for table in tables {
        total += db.count(&format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%{text}%'")).await;
    }
    total
}

async fn batch(app: &App, records: &[(&str, String)]) {
    let records: Vec<(String, String)> =
        records.iter().map(|(id, body)| ((*id).to_owned(), body.clone())).collect();
    let response = handler::handle(app, event(&records)).await.expect("batch");
    assert!(response.batch_item_failures.is_empty());
}

async fn masked_ip(db: &TestDb, message_id: &str) -> String {
    db.connect()
        .await
        .query_one("SELECT masked_ip FROM login_data.user_logins WHERE sqs_message_id = $1", &[&message_id])
        .await
        .expect("row")
        .get(0)
}

async fn forget_ip(service: &VaultService, ip: &str) -> Outcome {
    service
        .forget(&staff("erin"), PiiField::Ip, &ForgetTarget::Plaintext(Plaintext::new(ip)), Some(REASON))
        .await
        .expect("forget")
}

/// What a reveal answered, as a person sees it: the outcome of each value, or the error.
fn seen(answer: Result<Vec<Revealed>, ServiceError>) -> String {
    match answer {
        Ok(values) => {
            format!("{:?}", values.iter().map(|v| (v.outcome, v.value.is_some())).collect::<Vec<_>>())
        }
        Err(error) => format!("error {:?}", error.code()),
    }
}

/// `quarantine show` answers the body erased, and shows nothing.
async fn shown_erased(service: &VaultService, message_id: &str) {
    let shown = service.quarantine_show(&staff("erin"), message_id, None, Some(REASON)).await;
    assert!(
        matches!(&shown, Ok(s) if s.outcome == Outcome::Erased && s.body.is_none())
            || matches!(shown, Err(ServiceError::Erased(_))),
        "{message_id}: a body with the erased value is shown"
    );
}

fn by_mask(field: PiiField, mask: &str) -> RevealTarget {
    RevealTarget::Mask { field, mask: mask.to_owned() }
}

#[tokio::test]
async fn after_forget_nothing_a_person_reaches_links_the_value_to_its_rows() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (ip, other) = ("203.0.113.41", "203.0.113.42");
    batch(
        &app,
        &[
            ("e-1", login_body("u-e1", ip, "dev-e1")),
            ("e-2", login_body("u-e2", ip, "dev-e2")),
            ("e-3", login_body("u-e3", other, "dev-e3")),
            ("e-bad", rejected_login_body("u-e4", ip, "dev-e4")),
        ],
    )
    .await;
    // The index key's holder computes the value's mask: two logins, the vault, the
    // quarantined body's mask.
    let mask = app.keyring.indexer.index(PiiField::Ip, ip);
    assert_eq!(holders(&db, mask.as_str()).await, 4);

    assert_eq!(forget_ip(&service, ip).await, Outcome::Forgotten);

    assert_eq!(holders(&db, mask.as_str()).await, 0, "the mask is kept nowhere but the audit");
    // Duplicates stay visible: the two logins share one token, which is no mask of the
    // value, and the other login keeps its own mask.
    let token = masked_ip(&db, "e-1").await;
    assert_eq!(masked_ip(&db, "e-2").await, token);
    assert_ne!(token, mask.as_str());
    assert_eq!(masked_ip(&db, "e-3").await, app.keyring.indexer.index(PiiField::Ip, other).as_str());
    assert!(quarantine_masks(&db, "e-bad").await.contains(&("ip".to_owned(), token.clone())));

    // A find with the value answers as for a value never seen: no row.
    let (_, rows) = service.find(&staff("erin"), PiiField::Ip, ip, None).await.expect("find");
    assert!(rows.is_empty(), "find links the erased value to {} row(s)", rows.len());
    let (_, never) = service.find(&staff("erin"), PiiField::Ip, "203.0.113.43", None).await.expect("find");
    assert_eq!(rows.len(), never.len());

    // A reveal of a row answers the ip erased (by its token), the device id as before.
    for target in [RevealTarget::UserId("u-e1".into()), RevealTarget::MessageId("e-2".into())] {
        let revealed = service.reveal(&staff("erin"), &target, Some(REASON)).await.expect("reveal");
        let ip_answer = revealed.iter().find(|r| r.field == PiiField::Ip).expect("ip");
        assert_eq!((ip_answer.outcome, ip_answer.value.is_none()), (Outcome::Erased, true), "{target:?}");
        assert_eq!(ip_answer.mask, token);
        let device = revealed.iter().find(|r| r.field == PiiField::DeviceId).expect("device id");
        assert_eq!(device.outcome, Outcome::Revealed, "{target:?}");
    }
    assert_eq!(
        seen(service.reveal(&staff("erin"), &by_mask(PiiField::Ip, &token), Some(REASON)).await),
        format!("{:?}", vec![(Outcome::Erased, false)])
    );
    // The recomputed mask reveals what a mask never seen reveals.
    let unseen = app.keyring.indexer.index(PiiField::Ip, "203.0.113.44");
    assert_eq!(
        seen(service.reveal(&staff("erin"), &by_mask(PiiField::Ip, mask.as_str()), Some(REASON)).await),
        seen(service.reveal(&staff("erin"), &by_mask(PiiField::Ip, unseen.as_str()), Some(REASON)).await),
    );
    // The quarantined body that held it is erased.
    shown_erased(&service, "e-bad").await;

    // Forgetting it again, by the value or by the token a reveal answered, keeps the token.
    assert_eq!(forget_ip(&service, ip).await, Outcome::Forgotten);
    let by_token = ForgetTarget::Mask(token.clone());
    let outcome =
        service.forget(&staff("erin"), PiiField::Ip, &by_token, Some(REASON)).await.expect("forget a token");
    assert_eq!(outcome, Outcome::Forgotten);
    assert_eq!(masked_ip(&db, "e-1").await, token);
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_erasures").await, 1);
    batch(&app, &[("e-5", login_body("u-e5", ip, "dev-e5"))]).await;
    assert_eq!(masked_ip(&db, "e-5").await, token, "a later login still joins its erased rows");
}

#[tokio::test]
async fn a_later_login_with_an_erased_value_gets_its_token_and_is_never_vaulted() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (seen_ip, unseen_ip) = ("203.0.113.51", "203.0.113.52");
    batch(&app, &[("l-1", login_body("u-l1", seen_ip, "dev-l1"))]).await;
    assert_eq!(forget_ip(&service, seen_ip).await, Outcome::Forgotten);
    assert_eq!(forget_ip(&service, unseen_ip).await, Outcome::Forgotten);
    let token = masked_ip(&db, "l-1").await;

    batch(
        &app,
        &[
            ("l-2", login_body("u-l2", seen_ip, "dev-l2")),
            ("l-3", login_body("u-l3", unseen_ip, "dev-l3")),
            ("l-4", login_body("u-l4", unseen_ip, "dev-l4")),
            ("l-bad", rejected_login_body("u-l5", seen_ip, "dev-l5")),
        ],
    )
    .await;
    // The erased value's later login is a visible duplicate of its erased rows.
    assert_eq!(masked_ip(&db, "l-2").await, token);
    // A value forgotten before it was ever seen: its logins share a token of their own.
    let unseen_token = masked_ip(&db, "l-3").await;
    assert_eq!(masked_ip(&db, "l-4").await, unseen_token);
    assert_ne!(unseen_token, token);
    for ip in [seen_ip, unseen_ip] {
        let mask = app.keyring.indexer.index(PiiField::Ip, ip);
        assert_eq!(holders(&db, mask.as_str()).await, 0, "neither written nor vaulted");
        let (_, rows) = service.find(&staff("erin"), PiiField::Ip, ip, None).await.expect("find");
        assert!(rows.is_empty());
    }
    // The device ids of the same logins are vaulted as ever.
    let revealed = service
        .reveal(&staff("erin"), &RevealTarget::MessageId("l-3".into()), Some(REASON))
        .await
        .expect("reveal");
    let outcomes: Vec<(PiiField, Outcome)> = revealed.iter().map(|r| (r.field, r.outcome)).collect();
    assert!(outcomes.contains(&(PiiField::Ip, Outcome::Erased)), "{outcomes:?}");
    assert!(outcomes.contains(&(PiiField::DeviceId, Outcome::Revealed)), "{outcomes:?}");
    // The body quarantined later carries the token: show erases it and answers erased.
    assert!(quarantine_masks(&db, "l-bad").await.contains(&("ip".to_owned(), token.clone())));
    shown_erased(&service, "l-bad").await;
}

/// A writer that bypasses the lookup (a plain INSERT of the sealed value under its raw
/// mask) does not bring the value back: a reveal never opens the row of an erased value.
#[tokio::test]
async fn a_value_put_back_in_the_vault_after_its_erasure_is_never_revealed() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let ip = "203.0.113.61";
    batch(&app, &[("p-1", login_body("u-p1", ip, "dev-p1"))]).await;
    assert_eq!(forget_ip(&service, ip).await, Outcome::Forgotten);

    let mask = app.keyring.indexer.index(PiiField::Ip, ip);
    let sealed = app.keyring.data_key.seal(PiiField::Ip, &mask, ip).expect("seal");
    connect(&db.login_in("login_etl_writer").await)
        .await
        .execute(
            "INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext) VALUES ('ip', $1, $2, $3, $4)",
            &[&mask.as_str(), &sealed.key_version, &sealed.nonce.as_slice(), &sealed.ciphertext],
        )
        .await
        .expect("the writer may insert");
    let unseen = app.keyring.indexer.index(PiiField::Ip, "203.0.113.62");
    let answer =
        seen(service.reveal(&staff("erin"), &by_mask(PiiField::Ip, mask.as_str()), Some(REASON)).await);
    assert!(!answer.contains("Revealed"), "{answer}");
    assert_eq!(
        answer,
        seen(service.reveal(&staff("erin"), &by_mask(PiiField::Ip, unseen.as_str()), Some(REASON)).await)
    );
}

/// Waits until a session has taken the erasure lock (a row lock shows in pg_locks only by
/// the table lock that comes with it; no one else contends when the tests wait for it).
async fn erasure_lock_held(db: &TestDb) {
    let sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND mode = 'RowShareLock'
                 AND relation = 'pii_locks.erasure'::regclass AND granted";
    for _ in 0..200 {
        if db.count(sql).await > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("nobody took the erasure lock");
}

fn spawn_batch(app: &'static App, ids: &[String], ip: &str) -> tokio::task::JoinHandle<()> {
    let records: Vec<(String, String)> =
        ids.iter().map(|id| (id.clone(), login_body(id, ip, &format!("dev-{id}")))).collect();
    tokio::spawn(async move {
        let response = handler::handle(app, event(&records)).await.expect("batch");
        assert!(response.batch_item_failures.is_empty());
    })
}

fn spawn_forget(service: &'static VaultService, ip: &str) -> tokio::task::JoinHandle<Outcome> {
    let ip = ip.to_owned();
    tokio::spawn(async move { forget_ip(service, &ip).await })
}

/// After a race: the mask and the seal are gone, every login of the value has its token.
async fn unlinked(db: &TestDb, mask: &BlindIndex, ids: &[String], context: &str) {
    assert_eq!(holders(db, mask.as_str()).await, 0, "{context}: the raw mask or a seal is left");
    let token = masked_ip(db, &ids[0]).await;
    for id in ids {
        assert_eq!(masked_ip(db, id).await, token, "{context}: {id}");
    }
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM vault.pii_erasures WHERE field = 'ip' AND token = '{token}'"
        ))
        .await,
        1,
        "{context}: the rows carry the value's token"
    );
}

/// Both orders, held open: a forget waits for a batch between its lookup and its commit,
/// then rewrites the batch's rows; a batch waits for a forget, then finds its marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_and_a_batch_of_the_value_wait_for_each_other() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app: &'static App = Box::leak(Box::new(loaded_by_writer(&db, &kms).await));
    let service: &'static VaultService = Box::leak(Box::new(vault_service(&db, &kms, 100).await));

    // The batch first: its login insert is slow, the forget arrives meanwhile.
    db.fault_on_insert("login_data.user_logins", "PERFORM pg_sleep(0.6);").await;
    let (ip, ids) = ("198.18.1.1", vec!["w-1".to_owned(), "w-2".to_owned()]);
    let writing = spawn_batch(app, &ids, ip);
    erasure_lock_held(&db).await;
    let forgetting = spawn_forget(service, ip);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!forgetting.is_finished(), "the forget waits for the batch");
    writing.await.expect("batch");
    assert_eq!(forgetting.await.expect("forget"), Outcome::Forgotten, "the batch had vaulted it");
    unlinked(&db, &app.keyring.indexer.index(PiiField::Ip, ip), &ids, "batch first").await;
    db.connect()
        .await
        .batch_execute("DROP TRIGGER user_logins_fault ON login_data.user_logins")
        .await
        .expect("drop");

    // The forget first: its marker insert is slow, the batch arrives meanwhile.
    db.fault_on_insert("vault.pii_erasures", "PERFORM pg_sleep(0.6);").await;
    let (ip, ids) = ("198.18.1.2", vec!["w-3".to_owned(), "w-4".to_owned()]);
    let forgetting = spawn_forget(service, ip);
    erasure_lock_held(&db).await;
    let writing = spawn_batch(app, &ids, ip);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!writing.is_finished(), "the batch waits for the forget");
    assert_eq!(
        forgetting.await.expect("forget"),
        Outcome::Forgotten,
        "the same answer whether or not the batch had written it"
    );
    writing.await.expect("batch");
    unlinked(&db, &app.keyring.indexer.index(PiiField::Ip, ip), &ids, "forget first").await;
}

/// A forget and a batch of the same value started together, again and again, at shifting
/// offsets (the batch's login insert slowed, so that each falls inside the other's
/// window): whatever the order, no row keeps the raw mask and no seal is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_racing_batches_of_the_value_never_leaves_its_mask_or_its_seal() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app: &'static App = Box::leak(Box::new(loaded_by_writer(&db, &kms).await));
    let service: &'static VaultService = Box::leak(Box::new(vault_service(&db, &kms, 1000).await));
    db.fault_on_insert("login_data.user_logins", "PERFORM pg_sleep(0.03);").await;
    for round in 0..12u64 {
        let ip = format!("198.18.0.{round}");
        let ids: Vec<String> = (0..3).map(|i| format!("r{round}-{i}")).collect();
        // Half the rounds, the value is in the vault before the race.
        if round % 2 == 0 {
            batch(app, &[(&format!("r{round}-first"), login_body("u-first", &ip, "dev-first"))]).await;
        }
        let writing = spawn_batch(app, &ids, &ip);
        tokio::time::sleep(std::time::Duration::from_millis(round * 7 % 50)).await;
        let forgetting = spawn_forget(service, &ip);
        writing.await.expect("batch");
        forgetting.await.expect("forget");
        unlinked(&db, &app.keyring.indexer.index(PiiField::Ip, &ip), &ids, &format!("round {round}")).await;
    }
}

/// A tombstone kept by a version before 10 (the raw mask, no ciphertext): still refused by
/// the ingest; converted by `admin reencrypt` (or by forgetting the value again), after
/// which it unlinks as a new erasure does.
#[tokio::test]
async fn older_erasures_are_converted_by_reencrypt() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let (ip, again) = ("203.0.113.71", "203.0.113.72");
    batch(
        &app,
        &[
            ("o-1", login_body("u-o1", ip, "dev-o1")),
            ("o-2", login_body("u-o2", again, "dev-o2")),
            ("o-bad", rejected_login_body("u-o3", ip, "dev-o3")),
        ],
    )
    .await;
    // What version 9's forget left: the tombstone with the mask, the rows untouched.
    let old_forget =
        "UPDATE vault.pii_vault SET key_version = NULL, nonce = NULL, ciphertext = NULL, erased_at = now()
                       WHERE field = 'ip' AND blind_index = $1";
    let owner = db.connect().await;
    let (mask, again_mask) =
        (app.keyring.indexer.index(PiiField::Ip, ip), app.keyring.indexer.index(PiiField::Ip, again));
    for m in [&mask, &again_mask] {
        owner.execute(old_forget, &[&m.as_str()]).await.expect("old tombstone");
    }
    // Until converted, the ingest keeps refusing to vault it.
    batch(&app, &[("o-4", login_body("u-o4", ip, "dev-o4"))]).await;
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM vault.pii_vault WHERE blind_index = '{mask}' AND ciphertext IS NULL"
        ))
        .await,
        1
    );

    // Forgetting a value again converts its tombstone.
    assert_eq!(forget_ip(&service, again).await, Outcome::Forgotten);
    assert_eq!(holders(&db, again_mask.as_str()).await, 0);
    // The key administrator's reencrypt converts the rest.
    let done = service.reencrypt(&key_admin(), 100).await.expect("reencrypt");
    assert_eq!(done.tombstones, 1);
    assert_eq!(holders(&db, mask.as_str()).await, 0);
    let token = masked_ip(&db, "o-1").await;
    assert_eq!(masked_ip(&db, "o-4").await, token);
    assert!(quarantine_masks(&db, "o-bad").await.contains(&("ip".to_owned(), token.clone())));
    batch(&app, &[("o-5", login_body("u-o5", ip, "dev-o5"))]).await;
    assert_eq!(masked_ip(&db, "o-5").await, token);
    assert_eq!(service.reencrypt(&key_admin(), 100).await.expect("again").tombstones, 0);
}

/// The service's new rights are exactly the erasure's: a mask may only become a token of
/// its field; markers are read by the service and the function only; nothing a person uses
/// reads them.
#[tokio::test]
async fn only_an_erasure_rewrites_a_mask_and_no_person_reads_the_markers() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    batch(
        &app,
        &[
            ("g-1", login_body("u-g1", "203.0.113.81", "dev-g1")),
            ("g-bad", rejected_login_body("u-g2", "203.0.113.82", "dev-g2")),
        ],
    )
    .await;
    assert_eq!(forget_ip(&service, "203.0.113.83").await, Outcome::Forgotten);
    let token: String =
        db.connect().await.query_one("SELECT token FROM vault.pii_erasures", &[]).await.expect("one").get(0);

    let login = connect(&db.login_in("login_etl_vault_service").await).await;
    let other_mask = BlindIndex::parse(&"ab".repeat(32)).expect("mask");
    for sql in [
        format!("UPDATE login_data.user_logins SET masked_ip = '{other_mask}' WHERE sqs_message_id = 'g-1'"),
        format!(
            "UPDATE login_data.user_logins SET masked_device_id = '{token}' WHERE sqs_message_id = 'g-1'"
        ),
        format!(
            "UPDATE login_data.login_quarantine_masks SET blind_index = '{other_mask}' WHERE message_id = 'g-bad'"
        ),
        format!(
            "UPDATE login_data.login_quarantine_masks SET blind_index = '{token}' WHERE field = 'device_id'"
        ),
    ] {
        let error = login.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
    }
    for sql in [
        "UPDATE login_data.user_logins SET user_id = 'x'",
        "DELETE FROM login_data.user_logins",
        "UPDATE vault.pii_vault SET erased_at = NULL",
        "INSERT INTO vault.pii_vault (field, blind_index, erased_at) VALUES ('ip', repeat('a', 64), now())",
        "UPDATE login_data.login_quarantine_masks SET field = 'device_id'",
        "UPDATE vault.pii_erasures SET token = marker",
        "DELETE FROM vault.pii_erasures",
    ] {
        let error = login.batch_execute(sql).await.expect_err(sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
    }
    // An erasure's own rewrite passes the guard.
    login
        .batch_execute(&format!(
            "UPDATE login_data.user_logins SET masked_ip = '{token}' WHERE sqs_message_id = 'g-1'"
        ))
        .await
        .expect("a mask becomes a token of its field");

    for role in
        ["login_etl_analyst", "login_etl_vault_reader", "login_etl_auditor", "login_etl_quarantine_purge"]
    {
        let person = connect(&db.login_in(role).await).await;
        let error = person.batch_execute("SELECT * FROM vault.pii_erasures").await.expect_err(role);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{role}: {error}");
    }
    let writer = connect(&db.login_in("login_etl_writer").await).await;
    writer
        .batch_execute("SELECT field, marker, token FROM vault.pii_erasures")
        .await
        .expect("the ingest looks up");
    for sql in [
        format!(
            "INSERT INTO vault.pii_erasures (field, marker, token) VALUES ('ip', '{other_mask}', '{other_mask}')"
        ),
        "DELETE FROM vault.pii_erasures".to_owned(),
        format!("UPDATE login_data.user_logins SET masked_ip = '{token}'"),
    ] {
        let error = writer.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
    }
}

/// The other writer of masks, `quarantine import-dlq`, looks the markers up as the
/// function does: a dead letter holding an erased value is kept with its token, and shown
/// as erased.
#[tokio::test]
async fn a_dead_letter_with_an_erased_value_is_imported_with_its_token() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let queues = TestQueues::new(3, 2).await;
    let service = quarantine_service(&db, &kms, 100, &queues).await;
    let ip = "203.0.113.95";
    assert_eq!(forget_ip(&service, ip).await, Outcome::Forgotten);
    let token: String =
        db.connect().await.query_one("SELECT token FROM vault.pii_erasures", &[]).await.expect("one").get(0);

    let sent = queues
        .sqs
        .send_message()
        .queue_url(&queues.dlq_url)
        .message_body(login_body("u-dlq", ip, "dev-dlq"))
        .send()
        .await
        .expect("send");
    let id = sent.message_id().expect("id").to_owned();
    let imported = service.quarantine_import_dlq(&staff("erin"), None).await.expect("import");
    assert_eq!(imported.imported, 1, "{imported:?}");
    assert_eq!(
        quarantine_masks(&db, &id).await,
        vec![
            ("device_id".to_owned(), app.keyring.indexer.index(PiiField::DeviceId, "dev-dlq").to_string()),
            ("ip".to_owned(), token)
        ]
    );
    assert_eq!(holders(&db, app.keyring.indexer.index(PiiField::Ip, ip).as_str()).await, 0);
    shown_erased(&service, &id).await;
}

/// After `forget`, a reveal or a forget by the value's old mask (kept by someone who saw
/// it before) is recorded with the digest of the value's marker, as a find of the value
/// is: never the digest the audit recorded for the mask before the erasure, so the audit
/// links none of them to the entries that named the value's rows.
#[tokio::test]
async fn after_forget_requests_by_the_old_mask_are_recorded_under_the_markers_digest() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let ip = "203.0.113.61";
    batch(&app, &[("m-1", login_body("u-m1", ip, "dev-m1"))]).await;
    let mask = app.keyring.indexer.index(PiiField::Ip, ip);
    let reader = staff("rui");
    let digest_of_last = |action: &'static str| {
        let service = &service;
        let reader = &reader;
        async move {
            let entries = service.audit(reader, None, None, None).await.expect("audit").0;
            entries
                .iter()
                .rev()
                .find(|e| e.action == action && e.caller.ends_with("/rui") && e.blind_index.is_some())
                .and_then(|e| e.blind_index.clone())
                .expect("a digest is listed")
        }
    };

    service.reveal(&reader, &by_mask(PiiField::Ip, mask.as_str()), Some(REASON)).await.expect("reveal");
    let before = digest_of_last("reveal").await;
    assert_eq!(forget_ip(&service, ip).await, Outcome::Forgotten);

    service.find(&reader, PiiField::Ip, ip, None).await.expect("find");
    let found = digest_of_last("find").await;
    let revealed = service.reveal(&reader, &by_mask(PiiField::Ip, mask.as_str()), Some(REASON)).await;
    assert!(revealed.is_ok_and(|values| values.iter().all(|v| v.value.is_none())), "the value came back");
    let revealed = digest_of_last("reveal").await;
    let forget = ForgetTarget::Mask(mask.as_str().to_owned());
    service.forget(&reader, PiiField::Ip, &forget, Some(REASON)).await.expect("forget by mask");
    let forgotten = digest_of_last("forget").await;

    assert_ne!(found, before, "a find after the erasure is linked to the reveal before it");
    assert_eq!(revealed, found, "a reveal by the old mask is recorded apart from a find of the value");
    assert_eq!(forgotten, found, "a forget by the old mask is recorded apart from a find of the value");
}
