//! The keyed digest of a request body the audit records instead of the body: a malformed
//! request may carry a plaintext (a `find` with a typo still holds its ip), so the audit
//! keeps only `hex(HMAC-SHA256(audit key, DOMAIN || body))`. Two equal bodies match (the
//! same knock repeated), and without the audit key no guess can be tested against it.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::KeyMaterial;

/// Separates this use of the audit key from any other.
pub const DOMAIN: &[u8] = b"login-etl/request-body/v1\0";

/// The audit key, keyed once; cloned per body.
#[derive(Clone)]
pub struct RequestDigester(Hmac<Sha256>);

impl RequestDigester {
    pub fn new(audit_key: &KeyMaterial) -> RequestDigester {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(audit_key.expose())
            .expect("HMAC accepts any key length");
        mac.update(DOMAIN);
        RequestDigester(mac)
    }

    /// 64 lowercase hex characters.
    pub fn digest(&self, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for RequestDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestDigester(<key redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_hmac_sha256_over_the_domain_then_the_body() {
        // Computed independently: Python's
        // hmac.new(bytes([7]*32), b"login-etl/request-body/v1\0" + b"not json", sha256).
        let digester = RequestDigester::new(&KeyMaterial::from_bytes([7; 32]));
        assert_eq!(
            digester.digest(b"not json"),
            "50d6f5edb6ee8bc8202008c113a8906d70275b181d3b7a9d1efff6037581deae"
        );
    }

    #[test]
    fn keys_and_bodies_separate_digests_and_none_shows_the_body() {
        let (a, b) = (
            RequestDigester::new(&KeyMaterial::from_bytes([1; 32])),
            RequestDigester::new(&KeyMaterial::from_bytes([2; 32])),
        );
        let body = br#"{"op":"find","field":"ip","value":"10.0.0.1"}"#;
        assert_eq!(a.digest(body), a.digest(body));
        assert_ne!(a.digest(body), b.digest(body));
        assert_ne!(a.digest(body), a.digest(b"{}"));
        assert!(!a.digest(body).contains("10.0.0.1"));
        assert_eq!(a.digest(&vec![b'A'; 2_000_000]).len(), 64);
    }
}
