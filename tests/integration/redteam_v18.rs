//! Red team of V18 (the vault's key by hash, `migrate`'s copy beside ingest and the swap):
//! each test fails if its attack succeeds. docs/security.md, "The vault's key by hash (V18)".

use std::time::Duration;

use login_etl::handler;
use testkit::{TestDb, assert_refused_for_rights, connect, event};

use crate::vault_key::{assert_every_mask_vaulted, fresh_logins, vault_definition, vault_rows, vaulted_at};

/// Every group a login of the project is made in, but the migrating role.
const GROUPS: [&str; 8] = [
    "login_etl_writer",
    "login_etl_vault_service",
    "login_etl_vault_expiry",
    "login_etl_partition_maintainer",
    "login_etl_quarantine_purge",
    "login_etl_analyst",
    "login_etl_vault_reader",
    "login_etl_auditor",
];

const TOMBSTONE: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";

async fn prepared_without_copy(db: &TestDb) -> tokio_postgres::Client {
    let client = db.connect().await;
    login_etl_migrations::create_table(&client).await.expect("table");
    login_etl_migrations::mirror_changes(&client).await.expect("mirror");
    client
}

async fn count_of(db: &TestDb, table: &str, field: &str, mask: &str) -> i64 {
    db.count(&format!("SELECT count(*) FROM {table} WHERE field = '{field}' AND blind_index = '{mask}'"))
        .await
}

/// In the preparation's window no login reaches the copy, calls the definer mirror, or
/// turns the mirror off; the writer's row under the other field's mask (the old key took
/// it) does not displace the real row in the copy; the expiry cannot delete a tombstone
/// (V16's guard is on the old table, the mirror only follows deletes that happened).
#[tokio::test]
async fn in_the_preparation_window_no_login_reaches_the_copy_or_the_mirror() {
    let (db, _app, _) = vaulted_at(17, 20).await;
    let client = prepared_without_copy(&db).await;
    client
        .execute(
            "INSERT INTO vault.pii_vault (field, blind_index, erased_at) VALUES ('ip', $1, now())",
            &[&TOMBSTONE],
        )
        .await
        .expect("a pre-V10 tombstone");
    login_etl_migrations::copy_rows(&client).await.expect("copy");
    for group in GROUPS {
        let login = connect(&db.login_in(group).await).await;
        assert_refused_for_rights(
            &login,
            group,
            &[
                "SELECT count(*) FROM vault.pii_vault_hashed",
                "INSERT INTO vault.pii_vault_hashed (field, blind_index, erased_at) VALUES ('ip', repeat('b', 64), now())",
                "DELETE FROM vault.pii_vault_hashed",
                "UPDATE vault.pii_vault_hashed SET erased_at = NULL",
                "SELECT vault.pii_vault_mirror()",
                "ALTER TABLE vault.pii_vault DISABLE TRIGGER pii_vault_mirror",
                "DROP TRIGGER pii_vault_mirror ON vault.pii_vault",
                "CREATE TEMP TABLE t (x int);
                 CREATE TRIGGER t AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION vault.pii_vault_mirror()",
            ],
        )
        .await;
    }
    let expiry = connect(&db.login_in("login_etl_vault_expiry").await).await;
    let error = expiry
        .execute("DELETE FROM vault.pii_vault WHERE field = 'ip' AND blind_index = $1", &[&TOMBSTONE])
        .await
        .expect_err("the tombstone stays");
    assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{error}");

    let mask = &db.texts("SELECT blind_index FROM vault.pii_vault WHERE field = 'ip' LIMIT 1", &[]).await[0];
    let real = db
        .texts(
            &format!("SELECT encode(ciphertext, 'hex') FROM vault.pii_vault WHERE field = 'ip' AND blind_index = '{mask}'"),
            &[],
        )
        .await;
    let writer = connect(&db.login_in("login_etl_writer").await).await;
    writer
        .execute(
            "INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext)
             VALUES ('device_id', $1, 1, '\\x000000000000000000000000', '\\x00') ON CONFLICT DO NOTHING",
            &[mask],
        )
        .await
        .expect("the old key takes it");

    db.migrate().await;

    assert_eq!(count_of(&db, "vault.pii_vault", "ip", TOMBSTONE).await, 1, "the tombstone went");
    let error = expiry
        .execute("DELETE FROM vault.pii_vault WHERE field = 'ip' AND blind_index = $1", &[&TOMBSTONE])
        .await
        .expect_err("the tombstone stays after the swap");
    assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{error}");
    let kept = db
        .texts(
            &format!("SELECT encode(ciphertext, 'hex') FROM vault.pii_vault WHERE blind_index = '{mask}'"),
            &[],
        )
        .await;
    assert_eq!(kept, real, "the real row is the one under its mask");
}

/// The service's re-encryption in the window (its own login, its column rights) is kept
/// through the mirror's delete and insert; its forget racing the copy, either way round
/// (the forget's delete first, the copy waiting; the copy's FOR SHARE first, the forget
/// waiting), does not come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_changes_racing_the_copy_are_kept_and_forgotten_values_stay_gone() {
    let (db, _app, _) = vaulted_at(17, 1500).await;
    let client = prepared_without_copy(&db).await;
    let masks = db
        .texts("SELECT blind_index FROM vault.pii_vault WHERE field = 'device_id' ORDER BY 1 LIMIT 3", &[])
        .await;
    let (reencrypted, forgotten_first, copied_first) = (masks[0].clone(), masks[1].clone(), masks[2].clone());
    let delete = "DELETE FROM vault.pii_vault WHERE field = 'device_id' AND blind_index = $1";

    // The copy's FOR SHARE of one row first; the service's forget of it waits, then deletes
    // it from both.
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .execute(
            "INSERT INTO vault.pii_vault_hashed
             SELECT * FROM vault.pii_vault WHERE field = 'device_id' AND blind_index = $1 FOR SHARE",
            &[&copied_first],
        )
        .await
        .expect("copied");
    let service = connect(&db.login_in("login_etl_vault_service").await).await;
    let forget = {
        let mask = copied_first.clone();
        tokio::spawn(async move {
            service.execute(delete, &[&mask]).await.expect("forget waits, then deletes");
            service
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.batch_execute("COMMIT").await.expect("commit");
    let service = forget.await.expect("forget");

    // The forget's delete first, uncommitted; the copy waits for it, then skips the row.
    service.batch_execute("BEGIN").await.expect("begin");
    service.execute(delete, &[&forgotten_first]).await.expect("forget");
    service
        .execute(
            "UPDATE vault.pii_vault SET ciphertext = '\\x00ff', key_version = key_version
              WHERE field = 'device_id' AND blind_index = $1",
            &[&reencrypted],
        )
        .await
        .expect("re-encrypted by the service");
    let copy = tokio::spawn(async move {
        login_etl_migrations::copy_rows(&client).await.expect("copy");
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    service.batch_execute("COMMIT").await.expect("commit");
    copy.await.expect("copy");
    for gone in [&forgotten_first, &copied_first] {
        assert_eq!(count_of(&db, "vault.pii_vault_hashed", "device_id", gone).await, 0, "back in the copy");
    }
    let expected = vault_rows(&db).await;

    db.migrate().await;

    assert_eq!(vault_rows(&db).await, expected);
    for gone in [&forgotten_first, &copied_first] {
        assert_eq!(
            count_of(&db, "vault.pii_vault", "device_id", gone).await,
            0,
            "a forgotten value came back"
        );
    }
    let kept = db
        .count(&format!("SELECT count(*) FROM vault.pii_vault WHERE blind_index = '{reencrypted}' AND ciphertext = '\\x00ff'"))
        .await;
    assert_eq!(kept, 1, "the re-encryption kept");
}

/// `migrate` broken off in the middle of the copy (a part copied), then V18 applied
/// without the preparation (another tool's migrations, which V18 provides for): every row
/// must survive the swap, not only the part copied. (It broke: V18 swapped in the partial
/// copy. The copy now marks the table when done; V18 copies the rest of an unmarked one
/// under its lock.) Broken off before the mirror: the same.
#[tokio::test]
async fn v18_alone_after_a_broken_off_copy_keeps_every_row() {
    for with_mirror in [true, false] {
        let (db, _app, _) = vaulted_at(17, 1500).await;
        let before = vault_rows(&db).await;
        let mut client = db.connect().await;
        login_etl_migrations::create_table(&client).await.expect("table");
        if with_mirror {
            login_etl_migrations::mirror_changes(&client).await.expect("mirror");
            client
                .batch_execute(
                    "INSERT INTO vault.pii_vault_hashed
                     SELECT * FROM vault.pii_vault ORDER BY field, blind_index LIMIT 100",
                )
                .await
                .expect("a first statement of the copy");
        }

        login_etl_migrations::migrate_to_unprepared(&mut client, 18).await.expect("V18 alone");

        let after = vault_rows(&db).await;
        assert_eq!(after.len(), before.len(), "mirror {with_mirror}: rows lost in the swap");
        assert!(after == before, "mirror {with_mirror}: rows changed in the swap");
        assert_every_mask_vaulted(&db).await;
        assert_eq!(vault_definition(&db).await, vault_definition(&TestDb::new().await).await);
    }
}

/// `migrate` broken off in the middle of the copy, then run again (twice): every row once,
/// nothing of the preparation left, the vault as a new database's.
#[tokio::test]
async fn migrate_again_after_a_broken_off_copy_completes_it_once() {
    let (db, app, old) = vaulted_at(17, 1500).await;
    let before = vault_rows(&db).await;
    let client = prepared_without_copy(&db).await;
    client
        .batch_execute(
            "INSERT INTO vault.pii_vault_hashed SELECT * FROM vault.pii_vault ORDER BY field, blind_index LIMIT 100",
        )
        .await
        .expect("a first statement of the copy");

    db.migrate().await;
    assert!(db.migrate().await.is_empty(), "nothing left to apply");

    assert_eq!(vault_rows(&db).await, before);
    assert_eq!(vault_definition(&db).await, vault_definition(&TestDb::new().await).await);
    let (_, again) = handler::handle_with_stats(&app, event(&old)).await.expect("again");
    assert_eq!((again.written, again.already_present), (0, 1500));
}

/// After V18 only the writer inserts vault rows (the one who could squat a mask under the
/// other field; it could squat one under its own field before, with the same rights), and
/// the logins keep exactly their column rights (the swap against a new database's table is
/// vault_key.rs's; here, what each may do).
#[tokio::test]
async fn after_the_swap_only_the_writer_inserts_and_the_expiry_reads_no_secret() {
    let (db, _app, _) = vaulted_at(17, 20).await;
    db.migrate().await;
    let squat = "INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext)
                 VALUES ('device_id', repeat('c', 64), 1, '\\x000000000000000000000000', '\\x00')";
    for group in GROUPS.iter().filter(|g| **g != "login_etl_writer") {
        let login = connect(&db.login_in(group).await).await;
        assert_refused_for_rights(&login, group, &[squat, "TRUNCATE vault.pii_vault"]).await;
    }
    let expiry = connect(&db.login_in("login_etl_vault_expiry").await).await;
    assert_refused_for_rights(
        &expiry,
        "expiry",
        &[
            "SELECT ciphertext FROM vault.pii_vault",
            "SELECT nonce FROM vault.pii_vault",
            "SELECT key_version FROM vault.pii_vault",
            "UPDATE vault.pii_vault SET erased_at = now()",
            "UPDATE vault.pii_vault_expiry SET only_row = true",
        ],
    )
    .await;
    let service = connect(&db.login_in("login_etl_vault_service").await).await;
    assert_refused_for_rights(
        &service,
        "service",
        &["UPDATE vault.pii_vault SET erased_at = now()", "UPDATE vault.pii_vault SET created_at = now()"],
    )
    .await;
}

/// Two batches racing on the same 50 new values, in opposite orders, against the
/// exclusion constraint: both commit (no deadlock, no exclusion_violation), one row a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_racing_on_the_same_new_values_both_commit_with_one_row_each() {
    let (db, app, _) = vaulted_at(18, 10).await;
    let first = fresh_logins(50, "race");
    let second: Vec<(String, String)> =
        first.iter().rev().map(|(id, body)| (format!("{id}-again"), body.clone())).collect();
    let rows_before = db.count("SELECT count(*) FROM vault.pii_vault").await;
    let (a, b) = tokio::join!(
        handler::handle_with_stats(&app, event(&first)),
        handler::handle_with_stats(&app, event(&second))
    );
    let (a, b) = (a.expect("first batch").1, b.expect("second batch").1);
    assert_eq!(a.written + a.already_present + b.written + b.already_present, 100, "{a:?} {b:?}");
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault").await, rows_before + 100);
    assert_every_mask_vaulted(&db).await;
}
