//! A hostile endpoint for the `pii-vault` client's tests: HTTPS (a certificate of a test CA
//! the client is told to trust) or plain HTTP, answering every request with one canned
//! answer (a redirect, escape sequences, an oversized body, nothing at all), and keeping
//! what it was sent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::tls::make_certificates;
use crate::unique_suffix;

/// What the endpoint answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Status, extra headers, body.
    Http(u16, Vec<(String, String)>, Vec<u8>),
    /// Reads the request and never answers.
    Silence,
}

pub struct HostileEndpoint {
    pub port: u16,
    /// The CA to trust (PEM), when the endpoint speaks TLS.
    pub ca: Option<PathBuf>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    dir: Option<PathBuf>,
}

impl HostileEndpoint {
    /// HTTPS on 127.0.0.1 with a certificate for `localhost` and `127.0.0.1`.
    pub async fn https(answer: Answer) -> HostileEndpoint {
        let dir = std::env::temp_dir().join(format!("login-etl-https-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).expect("endpoint dir");
        make_certificates(&dir);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.crt"))
            .expect("certificate")
            .collect::<Result<_, _>>()
            .expect("certificate parses");
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut endpoint = HostileEndpoint::serve(answer, Some(acceptor)).await;
        endpoint.ca = Some(dir.join("ca.pem"));
        endpoint.dir = Some(dir);
        endpoint
    }

    /// Plain HTTP on 127.0.0.1 (where a downgrading redirect points).
    pub async fn http(answer: Answer) -> HostileEndpoint {
        HostileEndpoint::serve(answer, None).await
    }

    async fn serve(answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> HostileEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, sink, tls) = (answer.clone(), sink.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                respond(stream, &answer, &sink).await;
                            }
                        }
                        None => respond(stream, &answer, &sink).await,
                    }
                });
            }
        });
        HostileEndpoint { port, ca: None, received, dir: None }
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://localhost:{}/", self.port)
    }

    /// Every request received, head and body, as bytes.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().expect("received").clone()
    }
}

impl Drop for HostileEndpoint {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: &Answer,
    sink: &Mutex<Vec<Vec<u8>>>,
) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 8192];
    // The head, then as much body as Content-Length says.
    loop {
        let Ok(n) = stream.read(&mut buffer).await else { return };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..n]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    if let Ok(mut received) = sink.lock() {
        received.push(request);
    }
    match answer {
        Answer::Silence => {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(600), stream.read(&mut buffer)).await;
        }
        Answer::Http(status, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body).await;
            let _ = stream.shutdown().await;
        }
    }
}
