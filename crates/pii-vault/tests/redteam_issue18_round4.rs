//! Red team of issue 18, round 4, on the client: the terminal's environment names a
//! hostile proxy. `pii-vault` sends plaintext http only to a loopback address (the local
//! stack); a proxy taken from `HTTP_PROXY`/`ALL_PROXY` would carry that request (the
//! plaintext ip, the signed headers, the session token) to another host. Tests that run
//! hold; `ignore = "BREAK: …"` ones work today and fail while their hole stands.

use std::process::Output;

use testkit::{Answer, HostileEndpoint};

const PLAINTEXT_IP: &str = "198.51.100.78";
const TOKEN: &str = "session-token-that-must-not-travel";

fn pii_vault_with(url: &str, ca: Option<&std::path::Path>, env: &[(&str, String)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"));
    command
        .args(["find", "--ip", PLAINTEXT_IP])
        .env("PII_VAULT_URL", url)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_SESSION_TOKEN", TOKEN)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    command.output().expect("run pii-vault")
}

/// Nothing the proxy received carries the plaintext or the session token.
fn assert_nothing_travelled(proxy: &HostileEndpoint, what: &str) {
    for request in proxy.received() {
        let text = String::from_utf8_lossy(&request);
        assert!(
            !text.contains(PLAINTEXT_IP) && !text.contains(TOKEN),
            "{what}: the proxy received the plaintext ip or the session token"
        );
    }
}

/// BREAK. Issue 18, item 2 ("https only; http:// only to loopback"). reqwest takes
/// `HTTP_PROXY` / `http_proxy` / `ALL_PROXY` from the environment and excludes no loopback
/// address unless `NO_PROXY` says so: with the local stack's `http://127.0.0.1:…` URL, the
/// plain request (the plaintext ip, `x-amz-security-token`, the signature) goes to the
/// proxy, which need not be on this machine (here a stand-in on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_http_request_never_goes_through_an_environment_proxy() {
    let local = HostileEndpoint::http(Answer::Http(500, vec![], b"not json".to_vec())).await;
    for variable in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        let proxy = HostileEndpoint::http(Answer::Http(500, vec![], b"not json".to_vec())).await;
        let output = pii_vault_with(
            &format!("http://127.0.0.1:{}/", local.port),
            None,
            &[(variable, format!("http://127.0.0.1:{}", proxy.port))],
        );
        assert_ne!(output.status.code(), Some(0));
        assert!(proxy.received().is_empty(), "{variable}: the request went through the proxy");
    }
}

/// Held: with `HTTPS_PROXY` set, an https request reaches the proxy only as a CONNECT (the
/// TLS inside it is end to end and verified, so a proxy that answers instead of tunnelling
/// gets nothing): no plaintext, no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_request_through_an_environment_proxy_carries_nothing_readable() {
    let service = HostileEndpoint::https(Answer::Http(200, vec![], b"{}".to_vec())).await;
    for variable in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"] {
        let proxy = HostileEndpoint::http(Answer::Http(200, vec![], b"{}".to_vec())).await;
        let output = pii_vault_with(
            &service.url(),
            service.ca.as_deref(),
            &[(variable, format!("http://127.0.0.1:{}", proxy.port))],
        );
        assert_ne!(output.status.code(), Some(0), "{variable}: a proxy's answer is no service's answer");
        assert_nothing_travelled(&proxy, variable);
    }
}
