//! Red-team attacks on the quarantine's operations, as a hostile staff member (or a
//! hostile sender whose body staff will look at) would make them. Each test is an attack
//! that holds; a regression fails it.

use std::sync::Arc;

use login_etl::handler;
use pii_vault_protocol::{ForgetTarget, Outcome, Plaintext, ReplayOutcome, ReplaySelection};
use pii_vault_service::{QuarantineFilter, RequestContext, ServiceError};
use testkit::*;

fn ids(ids: &[&str]) -> ReplaySelection {
    ReplaySelection::MessageIds(ids.iter().map(|id| id.to_string()).collect())
}

async fn depth(queues: &TestQueues, url: &str) -> u64 {
    let attributes = queues
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("attributes")
        .attributes
        .unwrap_or_default();
    attributes
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("ApproximateNumberOfMessages"))
        .map(|(_, n)| n.parse::<u64>().unwrap_or_default())
        .sum()
}

/// A rejected message (no app_version) whose ip and device id can be read.
fn bad_body(ip: &str, device: &str) -> String {
    format!(r#"{{"user_id": "u", "ip": "{ip}", "device_id": "{device}"}}"#)
}

/// Found by this red team: `forget` erased the quarantined copies it found, but the
/// function (which cannot read the vault) quarantines a later message holding the
/// forgotten value like any other, and that body could then be shown and replayed.
#[tokio::test]
async fn a_body_quarantined_after_its_value_was_forgotten_is_never_shown_or_replayed() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let queues = TestQueues::new(3, 2).await;
    let service = quarantine_service(&db, &kms, 100, &queues).await;

    service
        .forget(
            &staff("fay"),
            login_etl_core::crypto::PiiField::Ip,
            &ForgetTarget::Plaintext(Plaintext::new("203.0.113.44")),
            Some(REASON),
        )
        .await
        .expect("forget before the value ever arrives");
    let later = event(&[
        ("after-forget-1".into(), bad_body("203.0.113.44", "dev-a")),
        ("after-forget-2".into(), bad_body("203.0.113.44", "dev-b")),
    ]);
    handler::handle_with_stats(&app, later).await.expect("batch");
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.login_quarantine WHERE ciphertext IS NOT NULL").await,
        2
    );

    let shown =
        service.quarantine_show(&staff("fay"), "after-forget-1", None, Some(REASON)).await.expect("show");
    assert_eq!((shown.outcome, shown.body.is_none()), (Outcome::Erased, true));
    let (rows, _) = service
        .quarantine_replay(&staff("fay"), &ids(&["after-forget-2"]), Some(REASON))
        .await
        .expect("replay");
    assert_eq!(rows[0].outcome, ReplayOutcome::Erased);
    assert_eq!(depth(&queues, &queues.replay_queue_url).await, 0, "nothing sent");
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.login_quarantine WHERE erased_by = 'forget' AND ciphertext IS NULL")
            .await,
        2,
        "both erased on the spot"
    );
}

/// Budget bypass by parallel shows: the per-caller lock counts each show's two units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_shows_never_spend_more_than_the_budget() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = Arc::new(vault_service(&db, &kms, 5).await);
    let id = quarantined_ids(&db).await.remove(0);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (service, id) = (service.clone(), id.clone());
            tokio::spawn(async move { service.quarantine_show(&staff("gus"), &id, None, Some(REASON)).await })
        })
        .collect();
    let mut shown = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(answer) if answer.outcome == Outcome::Shown => shown += 1,
            Ok(answer) => panic!("{:?}", answer.outcome),
            Err(ServiceError::Budget { .. }) => {}
            Err(error) => panic!("{error}"),
        }
    }
    assert_eq!(shown, 2, "5 units buy two shows of 2 units");
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE action = 'quarantine-show' AND outcome = 'shown'")
            .await,
        2
    );
}

/// Two staff (or one, twice) replay the same row at the same moment: it is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replays_of_one_row_send_it_once() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let queues = TestQueues::new(3, 2).await;
    let service = Arc::new(quarantine_service(&db, &kms, 100, &queues).await);
    handler::handle_with_stats(&app, event(&[("raced".into(), bad_body("198.51.100.30", "dev-race"))]))
        .await
        .expect("batch");

    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let service = service.clone();
            tokio::spawn(async move {
                let caller = staff(if n % 2 == 0 { "hal" } else { "ivo" });
                service.quarantine_replay(&caller, &ids(&["raced"]), Some(REASON)).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        let (rows, _) = task.await.expect("task").expect("replay");
        outcomes.push(rows[0].outcome);
    }
    assert_eq!(outcomes.iter().filter(|o| **o == ReplayOutcome::Replayed).count(), 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            ReplayOutcome::Replayed | ReplayOutcome::Busy | ReplayOutcome::AlreadyReplayed
        )),
        "{outcomes:?}"
    );
    assert_eq!(depth(&queues, &queues.replay_queue_url).await, 1, "sent once");
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.login_quarantine WHERE replay_attempt = 1").await,
        1
    );
}

/// An id with invisible characters (a hand-made event's; SQS's own ids are UUIDs) never
/// becomes a key: the function leaves it to the queue, the pages go on, and asking the
/// service for it is refused on the record without writing the characters there.
#[tokio::test]
async fn an_id_with_invisible_characters_is_never_a_key_and_never_reaches_the_audit() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let odd = "evil\u{202E}fdp.exe\u{200B}";
    let (response, _) = handler::handle_with_stats(
        &app,
        event(&[
            ("a-first".into(), "not json".into()),
            (odd.into(), "not json".into()),
            ("z-last".into(), "{}".into()),
        ]),
    )
    .await
    .expect("batch");
    // An id no key can hold is not quarantined at all: it is left to the queue (item failure).
    assert_eq!(failed_ids(&response), vec![odd.to_owned()]);

    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let filter = QuarantineFilter { limit: Some(1), after: after.take(), ..QuarantineFilter::default() };
        let (page, next) = service.quarantine_list(&staff("jo"), &filter).await.expect("page");
        seen.extend(page.into_iter().map(|r| r.message_id));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["a-first", "z-last"]);
    // Asking for it is refused, recorded, and the audit holds no invisible character.
    let caller = staff("jo");
    let error = service.quarantine_show(&caller, odd, None, Some(REASON)).await.expect_err("refused");
    assert!(matches!(error, pii_vault_service::ServiceError::BadRequest(_)), "{error}");
    let (target, outcome): (Option<String>, Option<String>) = {
        let row = db
            .connect()
            .await
            .query_one("SELECT target, outcome FROM pii_audit WHERE request_id = $1", &[&caller.request_id])
            .await
            .expect("row");
        (row.get(0), row.get(1))
    };
    assert_eq!((target, outcome.as_deref()), (None, Some("refused")));
}

/// A caller in no role writes nothing large or unreadable into the append-only audit
/// through the quarantine's text arguments (they are recorded before authorization).
#[tokio::test]
async fn no_caller_writes_megabytes_or_terminal_controls_into_the_audit_through_the_quarantine() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let queues = TestQueues::new(3, 2).await;
    let service = quarantine_service(&db, &kms, 100, &queues).await;
    let huge = "A".repeat(1_000_000);
    let ansi = "m\u{1b}]0;pwned\u{7}";
    let nobody = || RequestContext {
        caller: "arn:aws:sts::123456789012:assumed-role/other/nobody".into(),
        request_id: format!("req-{}", unique_suffix()),
        staff: false,
        key_admin: false,
    };
    let many: Vec<String> = (0..10_000).map(|_| "x".repeat(128)).collect();
    for caller in [nobody(), staff("kit")] {
        let filter = QuarantineFilter {
            since: Some(huge.clone()),
            reason_code: Some(huge.clone()),
            after: Some(huge.clone()),
            limit: None,
        };
        let _ = service.quarantine_list(&caller, &filter).await.expect_err("refused");
        let _ = service.quarantine_show(&caller, &huge, None, Some(REASON)).await.expect_err("refused");
        let _ = service.quarantine_show(&caller, ansi, None, Some(REASON)).await.expect_err("refused");
        let _ = service
            .quarantine_replay(&caller, &ReplaySelection::MessageIds(many.clone()), Some(REASON))
            .await
            .expect_err("refused");
        let _ = service.quarantine_replay(&caller, &ids(&[ansi]), Some(REASON)).await.expect_err("refused");
        let code = ReplaySelection::ReasonCode { code: huge.clone(), since: Some(huge.clone()), after: None };
        let _ = service.quarantine_replay(&caller, &code, Some(REASON)).await.expect_err("refused");
        let written = db
            .connect()
            .await
            .query_one(
                "SELECT count(*), coalesce(max(octet_length(coalesce(target, '')) + octet_length(coalesce(detail, ''))), 0)::int8,
                        count(*) FILTER (WHERE target ~ '[[:cntrl:]]' OR detail ~ '[[:cntrl:]]')
                   FROM pii_audit WHERE request_id = $1",
                &[&caller.request_id],
            )
            .await
            .expect("audit");
        let (rows, largest, controls): (i64, i64, i64) = (written.get(0), written.get(1), written.get(2));
        assert!(
            rows <= 6 && largest <= 512 && controls == 0,
            "{rows} rows, largest {largest} bytes, {controls} with controls"
        );
    }
    assert_eq!(depth(&queues, &queues.replay_queue_url).await, 0);
}
