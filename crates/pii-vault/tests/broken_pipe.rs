//! `pii-vault … | head`: the reader goes away after a line, the tool ends quietly (as
//! `cat` does), never with a panic about printing to stdout.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pii_vault_protocol::{LoginMatch, Response};
use testkit::{Answer, HostileEndpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_early_ends_the_tool_without_a_panic() {
    let row = LoginMatch {
        sqs_message_id: Some("m".into()),
        user_id: Some("u".into()),
        device_type: Some("ios".into()),
        locale: Some("en".into()),
        app_version_raw: Some("1.0".into()),
        create_date: None,
        masked_ip: Some("0".repeat(64)),
        masked_device_id: Some("1".repeat(64)),
    };
    // Far more than a pipe buffer, so the tool is still writing when the reader leaves.
    let rows = vec![row; 20_000];
    let total = rows.len() as u64;
    let answer =
        Response::Find { field: login_etl_core::crypto::PiiField::Ip, mask: "0".repeat(64), rows, total };
    let endpoint =
        HostileEndpoint::https(Answer::Http(200, vec![], serde_json::to_vec(&answer).expect("json"))).await;
    let ca = endpoint.ca.clone().expect("https endpoint has a CA");
    let url = endpoint.url();
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pii-vault"))
            .args(["find", "--ip", "192.0.2.1"])
            .env("PII_VAULT_URL", url)
            .env("SSL_CERT_FILE", ca)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run pii-vault");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("a line");
        assert!(!first.is_empty(), "the tool printed something before the reader left");
        // The reader is dropped here: the rest of the output meets a closed pipe.
        let output = child.wait_with_output().expect("wait");
        (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
    })
    .await
    .expect("task");
    assert!(!stderr.contains("panicked"), "the tool panicked on a closed pipe: {stderr}");
    assert_ne!(status.code(), Some(101), "exit 101 is a Rust panic: {stderr}");
}
