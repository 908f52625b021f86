//! Version 12 on an existing deployment: a database of version 11, filled with what the
//! function and the service write, keeps every row when its tables move out of the people's
//! reach (sql/V12__tables_out_of_reach.sql), and each person reads them by the name used
//! before; the function and the service go on.

use login_etl::handler;
use login_etl_core::crypto::PiiField;
use testkit::*;

/// (the table as version 11 named it, as version 12 names it)
const MOVED: [(&str, &str); 11] = [
    ("public.user_logins", "login_data.user_logins"),
    ("public.login_quarantine", "login_data.login_quarantine"),
    ("public.login_quarantine_masks", "login_data.login_quarantine_masks"),
    ("public.pii_audit_entries", "pii_audit_log.pii_audit_entries"),
    ("public.pii_audit_chain_head", "pii_audit_log.pii_audit_chain_head"),
    ("public.pii_audit_refusals_over_limit", "pii_audit_log.pii_audit_refusals_over_limit"),
    ("public.pii_budget_keys", "pii_budget.pii_budget_keys"),
    ("public.pii_budget_spent", "pii_budget.pii_budget_spent"),
    ("public.pii_keys", "vault.pii_keys"),
    ("public.pii_vault", "vault.pii_vault"),
    ("public.pii_erasures", "vault.pii_erasures"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_12_keeps_every_row_and_every_persons_names() {
    let kms = new_kms().await;
    // What the function and the service write, made by the current code in a database of
    // its own: logins, a quarantined body and its masks, a forget, audit entries, budgets.
    let source = TestDb::new().await;
    let app = loaded_by_writer(&source, &kms).await;
    let rejected = event(&[("q-old-1".to_owned(), rejected_login_body("u-q", "192.0.2.71", "dev-q"))]);
    handler::handle_with_stats(&app, rejected).await.expect("quarantined");
    let service = vault_service(&source, &kms, 100).await;
    service.find(&staff("eve"), PiiField::Ip, "192.0.2.71", None).await.expect("find");
    service
        .forget(
            &staff("eve"),
            PiiField::DeviceId,
            &pii_vault_protocol::ForgetTarget::Plaintext(pii_vault_protocol::Plaintext::new("dev-q")),
            Some(REASON),
        )
        .await
        .expect("forget");
    let source_client = source.connect().await;
    // Refusals over the limit, as a flood leaves them counted.
    source_client
        .batch_execute(&format!(
            "INSERT INTO pii_audit_log.pii_audit_refusals_over_limit (caller, minute, refused)
             VALUES ('{}', date_trunc('minute', now()), 7)",
            staff("mallory").caller
        ))
        .await
        .expect("refusals");

    // The deployment as version 11 left it, holding those rows.
    let old = TestDb::at_version(11).await;
    let old_client = old.connect().await;
    // Its chain head is the service's (version 8 made an empty one).
    old_client.batch_execute("DELETE FROM public.pii_audit_chain_head").await.expect("head");
    for (to, from) in MOVED {
        let rows: String = source_client
            .query_one(&format!("SELECT coalesce(jsonb_agg(t), '[]')::text FROM {from} t"), &[])
            .await
            .expect(from)
            .get(0);
        old_client
            .execute(
                &format!(
                    "INSERT INTO {to} SELECT * FROM jsonb_populate_recordset(NULL::{to}, $1::text::jsonb)"
                ),
                &[&rows],
            )
            .await
            .expect(to);
    }
    old_client
        .batch_execute(
            "SELECT setval(pg_get_serial_sequence('public.pii_audit_entries', 'id'), max(id))
               FROM public.pii_audit_entries",
        )
        .await
        .expect("the audit's sequence as the service left it");
    let before: Vec<i64> = {
        let mut counts = Vec::new();
        for (name, _) in MOVED {
            counts.push(old.count(&format!("SELECT count(*) FROM {name}")).await);
        }
        counts
    };
    assert!(before.iter().all(|n| *n > 0), "every moved table holds rows: {before:?}");
    let old_audit = old.count("SELECT count(*) FROM pii_audit").await;

    // V13 follows (user_logins partitioned, its rows kept in place), and later versions:
    // the rows must survive them all.
    let applied = old.migrate().await;
    assert_eq!(applied[..2], ["V12__tables_out_of_reach", "V13__user_logins_partitioned"], "{applied:?}");

    // Every row where the tables now are, and nothing left behind in public but the views.
    for ((_, after), count) in MOVED.iter().zip(&before) {
        assert_eq!(old.count(&format!("SELECT count(*) FROM {after}")).await, *count, "{after}");
    }
    let tables_left = old
        .count(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                AND c.relname IN ('user_logins', 'login_quarantine', 'login_quarantine_masks', 'pii_audit_entries',
                                  'pii_audit_chain_head', 'pii_audit_refusals_over_limit', 'pii_budget_keys',
                                  'pii_budget_spent', 'pii_keys', 'pii_vault', 'pii_erasures')",
        )
        .await;
    assert_eq!(tables_left, 0);

    // People read by their old names, and see every row.
    let analyst = connect(&old.login_in("login_etl_analyst").await).await;
    let reader = connect(&old.login_in("login_etl_vault_reader").await).await;
    for person in [&analyst, &reader] {
        let logins: i64 =
            person.query_one("SELECT count(*) FROM user_logins", &[]).await.expect("reads").get(0);
        assert_eq!(logins, before[0]);
    }
    let auditor = connect(&old.login_in("login_etl_auditor").await).await;
    for (view, count) in [
        ("pii_audit", old_audit),
        ("pii_audit_entries", before[3]),
        ("pii_audit_refusals_over_limit", before[5]),
    ] {
        let seen: i64 =
            auditor.query_one(&format!("SELECT count(*) FROM {view}"), &[]).await.expect(view).get(0);
        assert_eq!(seen, count, "{view}");
    }

    // The function and the service go on over the moved tables: the chain continues and
    // verifies, and a new batch lands beside the old rows.
    let mut config = old.app_config();
    config.database = old.login_in("login_etl_writer").await.into();
    let app = login_etl::App::init(&config, &kms).await.expect("the writer starts on the moved tables");
    let (_, stats) =
        handler::handle_with_stats(&app, event(&many_logins(4, "after-v12"))).await.expect("batch");
    assert_eq!(stats.written, 4);
    let service = vault_service(&old, &kms, 100).await;
    service.find(&staff("eve"), PiiField::Ip, "192.0.2.71", None).await.expect("find after the move");
    let verified = service.audit_verify(&staff("eve"), None, None).await.expect("verify");
    assert_eq!(verified.broken, None, "{verified:?}");
    assert_eq!(old.count("SELECT count(*) FROM login_data.user_logins").await, before[0] + 4);
}
