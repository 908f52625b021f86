//! Blind indexes: the masked values analysts see. `hex(HMAC-SHA256(index_key[field],
//! normalized value))`, untruncated, so equal values collide on purpose (duplicate
//! detection) and nothing else does. Without the key, the 2^32 IPv4 space and
//! SSN-shaped device ids cannot be brute-forced.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{KeyMaterial, PiiField};

/// 64 lowercase hex characters: the value of `masked_ip` / `masked_device_id` and the
/// vault's lookup key. Not PII (it is what analysts see).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlindIndex(String);

impl BlindIndex {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts what `as_str` produces (for masks typed in by staff).
    pub fn parse(text: &str) -> Option<BlindIndex> {
        let text = text.trim().to_ascii_lowercase();
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())).then_some(BlindIndex(text))
    }
}

impl fmt::Display for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One keyed HMAC per field, keyed once at init; cloned per value. The `zeroize`
/// feature of `hmac` wipes the keyed state on drop.
#[derive(Clone)]
pub struct BlindIndexer {
    ip: Hmac<Sha256>,
    device_id: Hmac<Sha256>,
}

impl BlindIndexer {
    pub fn new(ip_key: &KeyMaterial, device_id_key: &KeyMaterial) -> BlindIndexer {
        BlindIndexer { ip: keyed(ip_key), device_id: keyed(device_id_key) }
    }

    /// `normalized` must already be the field's canonical form (see `crate::event`).
    pub fn index(&self, field: PiiField, normalized: &str) -> BlindIndex {
        let mut mac = match field {
            PiiField::Ip => self.ip.clone(),
            PiiField::DeviceId => self.device_id.clone(),
        };
        mac.update(normalized.as_bytes());
        let mut text = [0u8; 64];
        // 32 bytes always fit 64 hex digits, which are ASCII.
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut text).expect("64 hex digits");
        BlindIndex(String::from_utf8_lossy(&text).into_owned())
    }
}

impl fmt::Debug for BlindIndexer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndexer(<keys redacted>)")
    }
}

fn keyed(key: &KeyMaterial) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose()).expect("HMAC accepts any key length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexer(ip_seed: u8, device_seed: u8) -> BlindIndexer {
        BlindIndexer::new(
            &KeyMaterial::from_bytes([ip_seed; 32]),
            &KeyMaterial::from_bytes([device_seed; 32]),
        )
    }

    #[test]
    fn is_plain_hmac_sha256_hex_over_the_normalized_text() {
        // Computed independently: Python's hmac.new(bytes([1]*32), b"10.0.0.1", sha256).
        assert_eq!(
            indexer(1, 2).index(PiiField::Ip, "10.0.0.1").as_str(),
            "df5893fd5ae42c36379e5259781e7970b8a46ef8e81f583fa3d99758c5a00e77"
        );
    }

    #[test]
    fn same_value_same_index_different_value_different_index() {
        let indexer = indexer(1, 2);
        let a = indexer.index(PiiField::Ip, "10.0.0.1");
        assert_eq!(a, indexer.index(PiiField::Ip, "10.0.0.1"));
        assert_ne!(a, indexer.index(PiiField::Ip, "10.0.0.2"));
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn fields_and_keys_separate_the_index_spaces() {
        let indexer = indexer(1, 2);
        assert_ne!(indexer.index(PiiField::Ip, "x"), indexer.index(PiiField::DeviceId, "x"));
        let other_keys = self::indexer(3, 2);
        assert_ne!(indexer.index(PiiField::Ip, "x"), other_keys.index(PiiField::Ip, "x"));
    }

    #[test]
    fn blind_index_parse_accepts_only_full_hex() {
        let index = indexer(1, 2).index(PiiField::Ip, "x");
        assert_eq!(BlindIndex::parse(&index.as_str().to_uppercase()), Some(index.clone()));
        assert_eq!(BlindIndex::parse(&index.as_str()[..63]), None);
        assert_eq!(BlindIndex::parse(&"g".repeat(64)), None);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn masking_is_deterministic_and_different_values_get_different_masks(
                a in "\\PC{1,40}",
                b in "\\PC{1,40}",
            ) {
                let (first, again) = (indexer(1, 2), indexer(1, 2));
                for field in PiiField::ALL {
                    prop_assert_eq!(first.index(field, &a), again.index(field, &a));
                    prop_assert_eq!(a == b, first.index(field, &a) == first.index(field, &b));
                }
            }
        }
    }
}
