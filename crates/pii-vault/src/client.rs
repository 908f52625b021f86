//! The client side of the vault service: a [`Request`] as JSON, `POST`ed to the function
//! URL (`PII_VAULT_URL`), signed with SigV4 for service `lambda` using the AWS SDK's
//! default credential chain. What `pii-vault` uses.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use pii_vault_protocol::{ErrorBody, ErrorCode, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error: its message, said as it said it.
    #[error("{message}")]
    Service { code: ErrorCode, message: String },
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
    pub fn new(url: impl Into<String>, sdk: SdkConfig) -> VaultClient {
        // The SDK already brings rustls with aws-lc-rs; use the same provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        VaultClient { http, url: url.into().trim_end_matches('/').to_owned() + "/", sdk }
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
        let answer = self.http.execute(request).await.map_err(unreachable)?;
        let status = answer.status().as_u16();
        let bytes = answer.bytes().await.map_err(unreachable)?;
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
