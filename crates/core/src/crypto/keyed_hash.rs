//! Keyed hashes under the vault service's audit key (`KeyPurpose::Audit`): the audit's
//! hash chain, and digests of what the audit must recognise without keeping (a mask, a
//! malformed request's body). Every use names a domain, so no digest of one use can pass
//! for another: `HMAC-SHA256(audit key, u64be(len domain) ‖ domain ‖ bytes)`.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{KeyMaterial, PiiField};

/// The domain of the audit's hash chain.
pub const CHAIN_DOMAIN: &str = "login-etl/audit-chain/v1";
/// The domain of the keyed digest of a mask the audit records.
pub const MASK_DOMAIN: &str = "login-etl/audit-mask/v1";
/// The domain of the keyed digest of a request body the audit records instead of the body.
pub const REQUEST_DOMAIN: &str = "login-etl/request-body/v1";

pub const DIGEST_LEN: usize = 32;

/// The audit key, keyed once; cloned per digest. The `zeroize` feature of `hmac` wipes
/// the keyed state on drop.
#[derive(Clone)]
pub struct AuditKey(Hmac<Sha256>);

impl AuditKey {
    pub fn new(key: &KeyMaterial) -> AuditKey {
        AuditKey(<Hmac<Sha256> as KeyInit>::new_from_slice(key.expose()).expect("HMAC takes any key length"))
    }

    /// `HMAC-SHA256(key, u64be(len domain) ‖ domain ‖ bytes)`.
    pub fn keyed_hash(&self, domain: &str, bytes: &[u8]) -> [u8; DIGEST_LEN] {
        let mut mac = self.0.clone();
        mac.update(&(domain.len() as u64).to_be_bytes());
        mac.update(domain.as_bytes());
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// The chain value of an entry: the keyed hash, in [`CHAIN_DOMAIN`], of the previous
    /// entry's chain value and the entry's canonical encoding ([`Canonical`]).
    pub fn chain_step(&self, prev: &ChainValue, entry: &Canonical) -> ChainValue {
        let mut bytes = Vec::with_capacity(DIGEST_LEN + entry.0.len());
        bytes.extend_from_slice(&prev.0);
        bytes.extend_from_slice(&entry.0);
        ChainValue(self.keyed_hash(CHAIN_DOMAIN, &bytes))
    }

    /// What the audit records instead of a mask: 64 hex digits that are equal for equal
    /// (field, mask) and useless without this key (no link to `user_logins`).
    pub fn mask_digest(&self, field: Option<PiiField>, mask: &str) -> String {
        let entry = Canonical::new().text(field.map(PiiField::as_str)).text(Some(mask));
        hex::encode(self.keyed_hash(MASK_DOMAIN, &entry.0))
    }

    /// What the audit records of a request body it cannot parse (a malformed `find` may
    /// still hold a plaintext ip): 64 hex digits, equal for equal bodies (a knock repeated),
    /// and no guess can be tested against it without this key.
    pub fn request_digest(&self, body: &[u8]) -> String {
        hex::encode(self.keyed_hash(REQUEST_DOMAIN, body))
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

/// A link of the chain: 32 bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChainValue([u8; DIGEST_LEN]);

impl ChainValue {
    /// What the first chained entry follows.
    pub const GENESIS: ChainValue = ChainValue([0; DIGEST_LEN]);

    pub fn from_slice(bytes: &[u8]) -> Option<ChainValue> {
        <[u8; DIGEST_LEN]>::try_from(bytes).ok().map(ChainValue)
    }

    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// Accepts what `Display` prints.
    pub fn parse(text: &str) -> Option<ChainValue> {
        let mut bytes = [0; DIGEST_LEN];
        hex::decode_to_slice(text.trim(), &mut bytes).ok().map(|()| ChainValue(bytes))
    }
}

impl fmt::Display for ChainValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChainValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainValue({self})")
    }
}

/// An unambiguous encoding of a sequence of values: an integer as 8 bytes big-endian;
/// text as a tag byte (0 absent, 1 present), then, when present, its length as 8 bytes
/// big-endian and its UTF-8 bytes. Two different sequences of the same shape never
/// encode alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Canonical(Vec<u8>);

impl Canonical {
    pub fn new() -> Canonical {
        Canonical::default()
    }

    pub fn int(mut self, value: i64) -> Canonical {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn opt_int(mut self, value: Option<i64>) -> Canonical {
        match value {
            None => self.0.push(0),
            Some(value) => {
                self.0.push(1);
                self.0.extend_from_slice(&value.to_be_bytes());
            }
        }
        self
    }

    pub fn text(mut self, value: Option<&str>) -> Canonical {
        match value {
            None => self.0.push(0),
            Some(text) => {
                self.0.push(1);
                self.0.extend_from_slice(&(text.len() as u64).to_be_bytes());
                self.0.extend_from_slice(text.as_bytes());
            }
        }
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> AuditKey {
        AuditKey::new(&KeyMaterial::from_bytes([byte; 32]))
    }

    #[test]
    fn keyed_hash_is_hmac_sha256_over_the_length_prefixed_domain_and_the_bytes() {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).expect("key");
        mac.update(&[0, 0, 0, 0, 0, 0, 0, 3]);
        mac.update(b"dom");
        mac.update(b"bytes");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(key(7).keyed_hash("dom", b"bytes"), expected);
    }

    #[test]
    fn domains_keys_and_bytes_each_change_the_hash() {
        let base = key(1).keyed_hash("a", b"bc");
        assert_ne!(key(2).keyed_hash("a", b"bc"), base, "another key");
        assert_ne!(key(1).keyed_hash("ab", b"c"), base, "the domain is length-prefixed");
        assert_ne!(key(1).keyed_hash("a", b"bd"), base, "other bytes");
        assert_eq!(key(1).keyed_hash("a", b"bc"), base, "deterministic");
    }

    #[test]
    fn canonical_encoding_separates_absent_empty_and_shifted_values() {
        let enc = |a: Option<&str>, b: Option<&str>| Canonical::new().text(a).text(b);
        assert_ne!(enc(None, Some("x")), enc(Some(""), Some("x")));
        assert_ne!(enc(Some("ab"), Some("c")), enc(Some("a"), Some("bc")));
        assert_ne!(Canonical::new().opt_int(None), Canonical::new().opt_int(Some(0)));
        assert_eq!(Canonical::new().int(1).as_bytes(), &[0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn a_chain_step_depends_on_the_previous_value_and_on_every_byte_of_the_entry() {
        let key = key(3);
        let entry = Canonical::new().int(1).text(Some("arn:…/alice"));
        let first = key.chain_step(&ChainValue::GENESIS, &entry);
        assert_eq!(first, key.chain_step(&ChainValue::GENESIS, &entry));
        assert_ne!(key.chain_step(&first, &entry), first, "the previous value counts");
        let forged = Canonical::new().int(1).text(Some("arn:…/mallory"));
        assert_ne!(key.chain_step(&ChainValue::GENESIS, &forged), first);
        assert_eq!(ChainValue::parse(&first.to_string()), Some(first));
        assert_eq!(ChainValue::parse("zz"), None);
    }

    #[test]
    fn mask_digests_are_per_key_per_field_and_never_the_mask() {
        let mask = "ab".repeat(32);
        let digest = key(4).mask_digest(Some(PiiField::Ip), &mask);
        assert_eq!(digest.len(), 64);
        assert_ne!(digest, mask);
        assert_eq!(digest, key(4).mask_digest(Some(PiiField::Ip), &mask), "equal masks stay comparable");
        assert_ne!(digest, key(4).mask_digest(Some(PiiField::DeviceId), &mask));
        assert_ne!(digest, key(5).mask_digest(Some(PiiField::Ip), &mask));
        assert_eq!(format!("{:?}", key(4)), "AuditKey(<redacted>)");
    }

    #[test]
    fn request_digests_are_keyed_separate_from_masks_and_never_show_the_body() {
        let body = br#"{"op":"find","field":"ip","value":"10.0.0.1"}"#;
        let digest = key(6).request_digest(body);
        assert_eq!(digest, hex::encode(key(6).keyed_hash(REQUEST_DOMAIN, body)));
        assert_eq!(digest, key(6).request_digest(body), "a knock repeated has one digest");
        assert_ne!(digest, key(7).request_digest(body));
        assert_ne!(digest, hex::encode(key(6).keyed_hash(MASK_DOMAIN, body)));
        assert!(!digest.contains("10.0.0.1"));
        assert_eq!(key(6).request_digest(&vec![b'A'; 2_000_000]).len(), 64);
    }
}
