//! The masks indexed by hash (sql/V17__mask_hash_indexes.sql, issue 19 item 7): every
//! partition's mask indexes are hash indexes attached to the parent's, new partitions get
//! them, the lookups by mask use them, and the preparation that builds them before V17
//! rebuilds an invalid leftover and builds nothing twice. The upgrade of a filled V16
//! database: `upgrades.rs`.

use login_etl_core::store::partitions::{self, Interval, Window};
use testkit::TestDb;

use crate::partitions::d;

/// Each partition's indexes on a mask column: (partition, index, access method), and
/// whether each is attached to an index of the parent.
pub(crate) async fn mask_indexes(db: &TestDb) -> Vec<(String, String, String, bool)> {
    let rows = db
        .connect()
        .await
        .query(
            "SELECT t.relname::text, c.relname::text, am.amname::text,
                    EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid)
               FROM pg_inherits p
               JOIN pg_class t ON t.oid = p.inhrelid
               JOIN pg_index i ON i.indrelid = t.oid
               JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_am am ON am.oid = c.relam
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
              WHERE p.inhparent = 'login_data.user_logins'::regclass
                AND a.attname IN ('masked_ip', 'masked_device_id')
              ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("mask indexes");
    rows.iter().map(|row| (row.get(0), row.get(1), row.get(2), row.get(3))).collect()
}

/// Every partition has exactly one index per mask column, a hash index attached to the
/// parent's, no other index than the parent's, and a primary key.
pub(crate) async fn assert_masks_hashed_everywhere(db: &TestDb) {
    let partitions = db.partition_names().await;
    assert!(!partitions.is_empty());
    let indexes = mask_indexes(db).await;
    for partition in &partitions {
        let own: Vec<_> = indexes.iter().filter(|(table, ..)| table == partition).collect();
        assert_eq!(own.len(), 2, "{partition}: {own:?}");
        for (_, index, method, attached) in own {
            assert_eq!((method.as_str(), *attached), ("hash", true), "{partition}: {index}");
        }
        let all = db
            .count(&format!(
                "SELECT count(*) FROM pg_index WHERE indrelid = 'login_data.{partition}'::regclass"
            ))
            .await;
        assert_eq!(all, 4, "{partition}: the key, two masks, the BRIN");
        // Zero-ETL replicates each partition as a table of its own, and only one with a
        // primary key (docs/operations.md, "Zero-ETL to Redshift").
        let keys = db
            .count(&format!(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'login_data.{partition}'::regclass AND contype = 'p'"
            ))
            .await;
        assert_eq!(keys, 1, "{partition}: its primary key");
    }
    let parent: Vec<String> = db
        .texts(
            "SELECT am.amname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_am am ON am.oid = c.relam
              WHERE i.indrelid = 'login_data.user_logins'::regclass ORDER BY c.relname",
            &[],
        )
        .await;
    assert_eq!(parent, ["hash", "hash", "btree", "brin"], "parent: masks, key, BRIN");
}

/// A lookup by mask (as `pii-vault find`, `forget` and the expiry make) goes through a
/// hash index, not a scan of the partitions.
pub(crate) async fn assert_lookup_uses_hash(db: &TestDb) {
    let client = db.connect().await;
    // On a few hundred rows the planner would rather scan: ask whether it can use the index.
    let plan = client
        .simple_query(
            "BEGIN; SET LOCAL enable_seqscan = off;
             EXPLAIN SELECT count(*) FROM login_data.user_logins WHERE masked_device_id = repeat('0', 64);
             COMMIT",
        )
        .await
        .expect("plan");
    let text: Vec<String> = plan
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    let hashes: Vec<String> = mask_indexes(db)
        .await
        .into_iter()
        .filter(|(_, _, method, _)| method == "hash")
        .map(|(_, index, ..)| index)
        .collect();
    let used: Vec<&str> = text
        .iter()
        .filter_map(|line| {
            let (_, rest) =
                line.split_once(" Index Scan using ").or_else(|| line.split_once(" Index Scan on "))?;
            rest.split_whitespace().next()
        })
        .collect();
    assert!(!used.is_empty(), "{text:#?}");
    assert!(used.iter().all(|index| hashes.iter().any(|h| h == index)), "{used:?} not all hash: {hashes:?}");
    assert!(!text.iter().any(|line| line.contains("Seq Scan")), "{text:#?}");
}

/// A new database: every partition the maintenance makes, a month or a day, gets the hash
/// indexes (ATTACH builds the parent's), and lookups by mask use them.
#[tokio::test]
async fn every_partition_the_maintenance_makes_has_hash_mask_indexes() {
    let db = TestDb::new().await;
    let mut client = db.connect().await;
    partitions::ensure(&mut client, Window { from: d("2041-01-01"), to: d("2041-03-01") }, Interval::Month)
        .await
        .expect("maintenance");
    let days =
        partitions::ensure(&mut client, Window { from: d("2041-03-01"), to: d("2041-04-01") }, Interval::Day)
            .await
            .expect("maintenance by days");
    assert_eq!(days.created.len(), 31);
    assert_masks_hashed_everywhere(&db).await;
    assert_lookup_uses_hash(&db).await;
}

/// A preparation a broken run left half done (an invalid index) is built again, and
/// running it twice builds nothing twice.
#[tokio::test]
async fn the_preparation_rebuilds_an_invalid_leftover_and_is_idempotent() {
    let db = TestDb::at_version(16).await;
    let client = db.connect().await;
    let partition = db.partition_names().await.remove(0);
    // What an interrupted CREATE INDEX CONCURRENTLY leaves: the index, marked invalid.
    let leftover = format!("{partition}_masked_ip_hash");
    client
        .batch_execute(&format!(
            "CREATE INDEX {leftover} ON login_data.{partition} USING hash (masked_ip);
             UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'login_data.{leftover}'::regclass"
        ))
        .await
        .expect("an invalid leftover");

    login_etl_migrations::prepare_mask_hash_indexes(&client).await.expect("prepared");
    login_etl_migrations::prepare_mask_hash_indexes(&client).await.expect("prepared again");

    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM pg_index WHERE indexrelid = 'login_data.{leftover}'::regclass AND indisvalid"
        ))
        .await,
        1,
        "rebuilt valid"
    );
    let hashes = mask_indexes(&db).await.into_iter().filter(|(_, _, method, _)| method == "hash").count();
    let partitions = db
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'login_data.user_logins'::regclass")
        .await;
    assert_eq!(hashes as i64, 2 * partitions, "one per mask column and partition, none twice");
    db.migrate().await;
    assert_masks_hashed_everywhere(&db).await;
}
