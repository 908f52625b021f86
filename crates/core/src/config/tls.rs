//! TLS to PostgreSQL with the libpq meanings of `sslmode` and `sslrootcert`, over rustls
//! (aws-lc-rs, as the AWS SDK uses). tokio-postgres's own parser knows only
//! `disable`/`prefer`/`require` and no `sslrootcert`, so both are taken out of the URL
//! here, before it.
//!
//! | sslmode | encrypted | server certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | – |
//! | `prefer` | if the server offers it, else plain | no |
//! | `require` | always, or no connection | only if `sslrootcert` is given (then as `verify-ca`) |
//! | `verify-ca` | always | chain to `sslrootcert` |
//! | `verify-full` | always | chain to `sslrootcert` and the host name |
//!
//! Without `sslmode`, a host under `.rds.amazonaws.com` gets `verify-full` against the
//! bundled Amazon RDS CAs (`certs/`); any other host gets libpq's default, `prefer`.
//! `sslrootcert=system` means the operating system's roots.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The public CAs of Amazon RDS and RDS Proxy (see `certs/README.md`).
pub const RDS_CA_BUNDLE: &str = include_str!("../../../../certs/amazon-rds-ca-bundle.pem");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// `sslrootcert=PATH`: a PEM file.
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's roots.
    System,
    /// The bundled Amazon RDS CAs (RDS hosts without `sslrootcert`).
    AmazonRds,
}

/// How to secure one database's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_certs: Option<RootCerts>,
}

impl TlsSettings {
    pub const DISABLED: TlsSettings = TlsSettings { mode: SslMode::Disable, root_certs: None };

    /// The settings a connection string gives, with the RDS default for RDS hosts.
    pub fn resolve(mode: Option<SslMode>, root_cert: Option<&str>, hosts: &[String]) -> TlsSettings {
        let rds = !hosts.is_empty() && hosts.iter().all(|h| is_rds_host(h));
        let root_certs = match root_cert {
            Some("system") => Some(RootCerts::System),
            Some(path) => Some(RootCerts::File(PathBuf::from(path))),
            None if rds => Some(RootCerts::AmazonRds),
            None => None,
        };
        let mode = mode.unwrap_or(if rds { SslMode::VerifyFull } else { SslMode::Prefer });
        TlsSettings { mode, root_certs }
    }

    /// tokio-postgres's own mode: the verifying modes are `require` there (never plain).
    pub fn postgres_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The rustls connector these settings call for (certificates read now).
    pub fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verify_name = match (self.mode, &self.root_certs) {
            (SslMode::VerifyFull, _) => Some(true),
            (SslMode::VerifyCa, _) | (SslMode::Require, Some(_)) => Some(false),
            _ => None,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let config = match verify_name {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
            Some(check_name) => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Setup(e.to_string()))?;
                let verifier: Arc<dyn ServerCertVerifier> =
                    if check_name { webpki } else { Arc::new(ChainOnly(webpki)) };
                builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()
            }
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        let pem = |text: &[u8], source: &str| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            CertificateDer::pem_slice_iter(text)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| TlsError::RootCerts(format!("{source} holds no valid PEM certificates")))
        };
        let certs = match &self.root_certs {
            None => {
                return Err(TlsError::RootCerts(format!(
                    "sslmode={} needs sslrootcert (a PEM file, or `system`)",
                    self.mode.as_str()
                )));
            }
            Some(RootCerts::AmazonRds) => pem(RDS_CA_BUNDLE.as_bytes(), "the bundled Amazon RDS CA file")?,
            Some(RootCerts::File(path)) => {
                let text = std::fs::read(path).map_err(|e| {
                    TlsError::RootCerts(format!("sslrootcert {} cannot be read: {e}", path.display()))
                })?;
                pem(&text, &format!("sslrootcert {}", path.display()))?
            }
            Some(RootCerts::System) => rustls_native_certs::load_native_certs().certs,
        };
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsError::RootCerts("no usable CA certificate in sslrootcert".into()));
        }
        Ok(roots)
    }
}

/// Whether a host is an Amazon RDS endpoint (instances, clusters, proxies).
pub fn is_rds_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host.ends_with(".rds.amazonaws.com") || host.ends_with(".rds.amazonaws.com.cn")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    RootCerts(String),
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// `require` without a root certificate (libpq): encrypted, the certificate not checked;
/// the handshake's signatures still are.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_hosts_default_to_verify_full_against_the_bundle() {
        let rds = TlsSettings::resolve(None, None, &["db.abc123.eu-west-1.rds.amazonaws.com".into()]);
        assert_eq!(rds, TlsSettings { mode: SslMode::VerifyFull, root_certs: Some(RootCerts::AmazonRds) });
        let other = TlsSettings::resolve(None, None, &["db.internal".into()]);
        assert_eq!(other.mode, SslMode::Prefer);
        let explicit = TlsSettings::resolve(Some(SslMode::Disable), None, &["x.rds.amazonaws.com".into()]);
        assert_eq!(explicit.mode, SslMode::Disable);
        assert!(rds.connector().is_ok(), "the bundle parses");
        assert!(RDS_CA_BUNDLE.matches("BEGIN CERTIFICATE").count() >= 100);
    }

    #[test]
    fn verifying_without_a_root_certificate_is_refused_by_name() {
        let settings = TlsSettings::resolve(Some(SslMode::VerifyFull), None, &["db.internal".into()]);
        let error = settings.connector().err().expect("no roots");
        assert_eq!(error.to_string(), "sslmode=verify-full needs sslrootcert (a PEM file, or `system`)");
        let missing = TlsSettings::resolve(Some(SslMode::VerifyCa), Some("/nonexistent/ca.pem"), &[]);
        assert!(
            missing
                .connector()
                .err()
                .expect("unreadable")
                .to_string()
                .starts_with("sslrootcert /nonexistent/ca.pem cannot be read")
        );
    }
}
