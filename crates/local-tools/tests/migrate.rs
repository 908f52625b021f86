//! `migrate`, the binary, against a TLS-only cluster with a CA of its own.

use testkit::*;

#[tokio::test]
async fn migrate_connects_with_verify_full_and_is_refused_in_clear() {
    let cluster = TlsCluster::start();
    let url = cluster.url(&format!("sslmode=verify-full&sslrootcert={}", cluster.ca.display()));

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_migrate"))
        .env("DATABASE_URL", &url)
        .output()
        .expect("run migrate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("applied V3__vault_service"));
    // The same binary told to connect in clear is refused by the server, saying why.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_migrate"))
        .env("DATABASE_URL", cluster.url("sslmode=disable"))
        .output()
        .expect("run migrate");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no encryption"));
}
