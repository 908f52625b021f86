//! The scheduled partition maintenance as it runs in AWS: its own login (in
//! `login_etl_partition_maintainer`), its pool (nothing set on the session), here through
//! PgBouncer in transaction mode (consecutive transactions on other server connections):
//! every month of its window made once, as the owner, and nothing the second time.

use chrono::{Months, Utc};
use login_etl_core::store;
use login_etl_core::store::partitions::partition_name;
use login_etl_housekeeping::partitions::{self, Settings};
use testkit::*;

#[tokio::test]
async fn the_maintenance_as_its_own_login_through_a_transaction_pooler_makes_its_window_once() {
    let db = TestDb::empty().await;
    login_etl_migrations::migrate(&mut db.connect().await).await.expect("migrate");
    let login = db.login_in("login_etl_partition_maintainer").await;
    let bouncer = PgBouncer::in_front_of(&login, 1).await;
    let pool = store::stateless_pool(bouncer.config.clone().into(), 1).expect("pool");
    let settings = Settings { days_back: 45, months_ahead: 3 };
    let today = Utc::now().date_naive();

    let first = partitions::run(&mut pool.get().await.expect("connection"), settings, today)
        .await
        .unwrap_or_else(|error| panic!("{error:?}\n{}", bouncer.log()));
    let again =
        partitions::run(&mut pool.get().await.expect("connection"), settings, today).await.expect("again");

    let window = settings.window(today);
    let mut expected = Vec::new();
    let mut month = window.from;
    while month < window.to {
        expected.push(partition_name(month));
        month = month.checked_add_months(Months::new(1)).expect("month");
    }
    assert_eq!(first.created, expected);
    assert!(again.created.is_empty());
    let owners = db
        .texts(
            "SELECT DISTINCT pg_get_userbyid(c.relowner)::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'login_data.user_logins'::regclass",
            &[],
        )
        .await;
    assert_eq!(owners, ["login_etl_partition_owner"]);
}
