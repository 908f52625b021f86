//! The client side of the vault service: a [`Request`] as JSON, `POST`ed to the function
//! URL (`PII_VAULT_URL`), signed with SigV4 for service `lambda` using the AWS SDK's
//! default credential chain. What `pii-vault` uses.
//!
//! The request carries plaintext (a `find` by ip) and signed headers, and the answer comes
//! from whatever answers at that URL, so the client trusts neither the network nor the
//! endpoint: https only (`http://` only to a loopback address, the local stack), never a
//! redirect (a 3xx is an error: following it would re-send body and signature to another
//! origin, or in clear), bounded waits, and an answer bounded in size (a function URL
//! answers at most 6 MB). What it prints of the answer goes through [`crate::escape`].

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use pii_vault_protocol::{ErrorBody, ErrorCode, Request, Response};

/// More than any function URL may answer (6 MB), with room for headers' worth of slack.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole request, unless `PII_VAULT_TIMEOUT_SECONDS` says otherwise (1 to 300).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error: its message, escaped for the terminal.
    #[error("{}", crate::escape::text(message))]
    Service { code: ErrorCode, message: String },
    #[error("PII_VAULT_URL {0}")]
    Url(&'static str),
    #[error(
        "the vault service answered with a redirect (HTTP {status}); redirects are never followed: \
         set PII_VAULT_URL to the function URL itself"
    )]
    Redirected { status: u16 },
    #[error("the vault service's answer exceeds {} MB; refused", MAX_ANSWER_BYTES / 1024 / 1024)]
    TooLarge,
    #[error("no AWS credentials to sign the request with: {0}")]
    Credentials(String),
    #[error("the request could not be signed: {0}")]
    Signing(String),
    #[error("cannot reach the vault service at {url}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the vault service answered HTTP {status} without a usable body")]
    BadAnswer { status: u16 },
}

pub struct VaultClient {
    http: reqwest::Client,
    url: String,
    sdk: SdkConfig,
}

impl VaultClient {
    /// A client of the service at `url` (checked: see the module's doc), each request
    /// bounded by `timeout`.
    pub fn new(url: &str, sdk: SdkConfig, timeout: Duration) -> Result<VaultClient, ClientError> {
        let loopback_http = checked_url(url)?;
        // The SDK already brings rustls with aws-lc-rs; use the same provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!loopback_http)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout);
        if loopback_http {
            // Plain http to loopback is only safe if it stays on loopback: an environment
            // proxy (HTTP_PROXY, ALL_PROXY) would receive the body and the signed headers
            // in clear. (Through a proxy, https is a CONNECT tunnel: the proxy sees nothing.)
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|_| ClientError::Url("cannot be used: the HTTP client could not be built"))?;
        Ok(VaultClient { http, url: url.trim_end_matches('/').to_owned() + "/", sdk })
    }

    pub async fn send(&self, request: &Request) -> Result<Response, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Signing(e.to_string()))?;
        let mut http_request = http::Request::builder()
            .method("POST")
            .uri(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .map_err(|e| ClientError::Signing(e.to_string()))?;
        self.sign(&mut http_request).await?;
        let request =
            reqwest::Request::try_from(http_request).map_err(|e| ClientError::Signing(e.to_string()))?;
        let unreachable = |source| ClientError::Unreachable { url: self.url.clone(), source };
        let mut answer = self.http.execute(request).await.map_err(unreachable)?;
        let status = answer.status().as_u16();
        if answer.status().is_redirection() {
            return Err(ClientError::Redirected { status });
        }
        if answer.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
            return Err(ClientError::TooLarge);
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = answer.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ClientError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        if status == 200 {
            return serde_json::from_slice(&bytes).map_err(|_| ClientError::BadAnswer { status });
        }
        let body: ErrorBody =
            serde_json::from_slice(&bytes).map_err(|_| ClientError::BadAnswer { status })?;
        Err(ClientError::Service { code: body.error.code, message: body.error.message })
    }

    async fn sign(&self, request: &mut http::Request<Vec<u8>>) -> Result<(), ClientError> {
        let provider =
            self.sdk.credentials_provider().ok_or_else(|| ClientError::Credentials("no provider".into()))?;
        let credentials =
            provider.provide_credentials().await.map_err(|e| ClientError::Credentials(e.to_string()))?;
        let region = self.sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name("lambda")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ClientError::Signing(e.to_string()))?
            .into();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(name, value)| value.to_str().ok().map(|value| (name.as_str(), value)))
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.uri().to_string(),
            headers.into_iter(),
            SignableBody::Bytes(request.body()),
        )
        .map_err(|e| ClientError::Signing(e.to_string()))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|e| ClientError::Signing(e.to_string()))?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// Whether `url` may be used, and if so whether it is plain http to a loopback address.
fn checked_url(url: &str) -> Result<bool, ClientError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| ClientError::Url("is not a URL"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ClientError::Url("must not carry credentials"));
    }
    match parsed.scheme() {
        "https" => Ok(false),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(true)
            } else {
                Err(ClientError::Url(
                    "must be https:// (http:// only to a loopback address, the local stack)",
                ))
            }
        }
        _ => Err(ClientError::Url("must be https:// (http:// only to a loopback address, the local stack)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_urls_are_used() {
        for good in [
            "https://abc.lambda-url.eu-west-1.on.aws/",
            "http://127.0.0.1:9100/lambda-url/_/",
            "http://localhost:9100",
            "http://[::1]:9100/",
        ] {
            assert!(checked_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://abc.lambda-url.eu-west-1.on.aws/",
            "http://203.0.113.1/",
            "http://localhost.example.com/",
            "http://127.0.0.1.nip.io/",
            "ftp://127.0.0.1/",
            "https://user:secret@abc.lambda-url.eu-west-1.on.aws/",
            "not a url",
        ] {
            let error = checked_url(bad).expect_err(bad);
            assert!(error.to_string().starts_with("PII_VAULT_URL"), "{bad}: {error}");
            assert!(!error.to_string().contains("secret"));
        }
    }
}
