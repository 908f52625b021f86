//! TLS to PostgreSQL against a TLS-only cluster with a CA of its own: each `sslmode` means
//! what it means to libpq, and every refusal says why.

use login_etl_core::config::database::{self, parse_database_url};
use login_etl_core::error::report;
use testkit::*;

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let database = parse_database_url(url).map_err(|e| report(&e))?;
    database::connect(&database).await.map_err(|e| report(&e))
}

async fn encrypted(client: &tokio_postgres::Client) -> bool {
    client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn each_sslmode_connects_or_refuses_as_libpq_does_and_says_why() {
    let cluster = TlsCluster::start();
    let ca = cluster.ca.display().to_string();
    let other_ca = cluster.other_ca.display().to_string();

    // verify-full with the right CA: connected, encrypted.
    let client =
        connect(&cluster.url(&format!("sslmode=verify-full&sslrootcert={ca}"))).await.expect("verify-full");
    assert!(encrypted(&client).await);

    // Another CA: refused, because of the issuer.
    let error = connect(&cluster.url(&format!("sslmode=verify-full&sslrootcert={other_ca}")))
        .await
        .expect_err("other CA");
    assert!(error.contains("invalid peer certificate: UnknownIssuer"), "{error}");

    // A host name the certificate does not name (same server, reached by address).
    let wrong_name = format!(
        "host=wrong-name.example hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={ca}",
        cluster.port
    );
    let error = connect(&wrong_name).await.expect_err("wrong host name");
    assert!(error.contains("invalid peer certificate: certificate not valid for name"), "{error}");
    // verify-ca checks the chain only: the same connection is accepted.
    let client = connect(&wrong_name.replace("verify-full", "verify-ca")).await.expect("verify-ca");
    assert!(encrypted(&client).await);

    // require: encrypted, certificate unchecked (libpq without sslrootcert).
    let client = connect(&cluster.url("sslmode=require")).await.expect("require");
    assert!(encrypted(&client).await);
    // prefer takes TLS when offered.
    let client = connect(&cluster.url("sslmode=prefer")).await.expect("prefer");
    assert!(encrypted(&client).await);

    // disable: the server takes no plain connection, and says so.
    let error = connect(&cluster.url("sslmode=disable")).await.expect_err("plain refused");
    assert!(error.contains("no encryption"), "{error}");
    // verify-full without a CA file is refused before connecting, by name.
    let error = connect(&cluster.url("sslmode=verify-full")).await.expect_err("no root");
    assert_eq!(error, "sslmode=verify-full needs sslrootcert (a PEM file, or `system`)");
}

#[tokio::test]
async fn the_function_connects_with_verify_full() {
    let cluster = TlsCluster::start();
    let url = cluster.url(&format!("sslmode=verify-full&sslrootcert={}", cluster.ca.display()));

    // The function: keys created, cold start and one batch over verify-full.
    let kms = new_kms().await;
    let database = parse_database_url(&url).expect("url");
    let mut owner = database::connect(&database).await.expect("connect");
    login_etl_migrations::migrate(&mut owner).await.expect("migrations over verify-full");
    login_etl_core::store::partitions::ensure(
        &mut owner,
        testkit::test_window(),
        login_etl_core::store::partitions::Interval::Month,
    )
    .await
    .expect("partitions");
    login_etl_core::keys::create_missing_keys(&owner, &kms).await.expect("keys");
    let config = login_etl_core::config::Config {
        database,
        kms_key_id: kms.key_id().to_owned(),
        pool_size: 2,
        retry_budget: login_etl_core::config::DEFAULT_RETRY_BUDGET,
        outage: Default::default(),
        replay_queue_arn: None,
    };
    let app = login_etl::App::init(&config, &kms).await.expect("cold start over TLS");
    let (_, stats) = login_etl::handler::handle_with_stats(&app, load_event("events/duplicates.json"))
        .await
        .expect("batch");
    assert_eq!(stats.written, 6);
}
