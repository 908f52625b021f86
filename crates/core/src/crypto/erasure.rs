//! Erasure that unlinks (docs/security.md, "Erasure"). An erased value's masks are
//! replaced, wherever a person can reach them, by a random token, one per erased value:
//! rows that shared the value still share the token (duplicates stay visible), and nothing
//! derived from the value leads to them. What still recognises the value is its marker,
//! `hex(HMAC-SHA256(erasure key, domain ‖ field ‖ 0 ‖ mask))`, kept beside the token in
//! `pii_erasures`, which only the ingest and the vault service read: without the erasure
//! key (no index key computes it) a guess cannot be turned into a marker.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{BlindIndex, KeyMaterial, PiiField};

/// Separates markers from every other HMAC under any key.
const DOMAIN: &[u8] = b"login-etl erasure marker v1\0";

/// The marker of one (field, mask): 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErasureMarker(String);

impl ErasureMarker {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The erasure key, keyed once (`KeyPurpose::Erasure`); the `zeroize` feature of `hmac`
/// wipes it on drop.
#[derive(Clone)]
pub struct ErasureKey(Hmac<Sha256>);

impl ErasureKey {
    pub fn new(key: &KeyMaterial) -> ErasureKey {
        ErasureKey(
            <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose()).expect("HMAC accepts any key length"),
        )
    }

    pub fn marker(&self, field: PiiField, mask: &BlindIndex) -> ErasureMarker {
        let mut mac = self.0.clone();
        mac.update(DOMAIN);
        mac.update(field.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(mask.as_str().as_bytes());
        ErasureMarker(hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for ErasureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErasureKey(<redacted>)")
    }
}

/// A fresh erasure token: 256 random bits, in a mask's shape (64 lowercase hex), so every
/// column and CHECK that holds a mask holds it. It stands where the erased value's masks
/// stood; being random, it says nothing of the value.
pub fn new_token() -> BlindIndex {
    let bytes: [u8; 32] = rand::random();
    BlindIndex::parse(&hex::encode(bytes)).expect("64 hex digits are a mask's shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::BlindIndexer;

    #[test]
    fn a_marker_needs_the_erasure_key_and_separates_fields() {
        let indexer = BlindIndexer::new(&KeyMaterial::from_bytes([1; 32]), &KeyMaterial::from_bytes([2; 32]));
        let mask = indexer.index(PiiField::Ip, "10.0.0.1");
        let key = ErasureKey::new(&KeyMaterial::from_bytes([9; 32]));
        let marker = key.marker(PiiField::Ip, &mask);
        assert_eq!(marker, key.marker(PiiField::Ip, &mask));
        assert_eq!(marker.as_str().len(), 64);
        assert_ne!(marker.as_str(), mask.as_str());
        assert_ne!(marker, key.marker(PiiField::DeviceId, &mask));
        assert_ne!(marker, ErasureKey::new(&KeyMaterial::from_bytes([8; 32])).marker(PiiField::Ip, &mask));
        // The index key of the field does not compute it.
        let under_index_key = ErasureKey::new(&KeyMaterial::from_bytes([1; 32])).marker(PiiField::Ip, &mask);
        assert_ne!(marker, under_index_key);
    }

    #[test]
    fn tokens_are_random_and_shaped_like_masks() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(BlindIndex::parse(a.as_str()), Some(a));
    }
}
