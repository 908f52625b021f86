//! The crypto layer: blind indexes (the masks analysts see) and sealing (the vault's
//! cipher), over key material handed in from outside. Pure: RustCrypto only, no I/O.
//!
//! - [`blind_index`]: `hex(HMAC-SHA256(index key of the field, normalized value))`
//! - [`seal`]: AES-256-GCM-SIV with a random nonce, AAD bound to the vault row
//! - [`request_digest`]: `hex(HMAC-SHA256(audit key, domain || body))`, what the audit
//!   records of a request body it cannot parse

pub mod blind_index;
pub mod request_digest;
pub mod seal;

use std::fmt;

use zeroize::Zeroizing;

pub use blind_index::{BlindIndex, BlindIndexer};
pub use request_digest::RequestDigester;
pub use seal::{DataKey, NONCE_LEN, SealError, SealedValue};

pub const KEY_LEN: usize = 32;

/// 256 bits of key, wiped from memory on drop.
pub struct KeyMaterial(Zeroizing<[u8; KEY_LEN]>);

impl KeyMaterial {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> KeyMaterial {
        KeyMaterial(Zeroizing::new(bytes))
    }

    /// `None` unless exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<KeyMaterial> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        (bytes.len() == KEY_LEN).then(|| {
            key.copy_from_slice(bytes);
            KeyMaterial(key)
        })
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

/// A PII field of a login: masked in `user_logins`, sealed in `pii_vault`. The one name
/// for "ip or device id" everywhere: its vault name (also in the AAD), its mask column and
/// the purpose of its index key all come from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiField {
    Ip,
    DeviceId,
}

impl PiiField {
    pub const ALL: [PiiField; 2] = [PiiField::Ip, PiiField::DeviceId];

    /// The name in the message body, in `pii_vault.field` and in the AAD.
    pub fn as_str(self) -> &'static str {
        match self {
            PiiField::Ip => "ip",
            PiiField::DeviceId => "device_id",
        }
    }

    /// The `user_logins` column that holds this field's blind index.
    pub fn mask_column(self) -> &'static str {
        match self {
            PiiField::Ip => "masked_ip",
            PiiField::DeviceId => "masked_device_id",
        }
    }

    /// The key this field's blind index is computed under.
    pub fn index_key(self) -> KeyPurpose {
        KeyPurpose::Index(self)
    }

    pub fn from_db(name: &str) -> Option<PiiField> {
        PiiField::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for PiiField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key is for: the blind index of one field, sealing vault values, chaining and
/// hashing the audit (the service's alone), or marking erased values (see docs/security.md).
/// `pii_keys.purpose` and the KMS encryption context carry [`KeyPurpose::as_str`], so the
/// KMS key policy can say which role may unwrap which purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPurpose {
    Index(PiiField),
    Data,
    Audit,
    Erasure,
}

impl KeyPurpose {
    pub const ALL: [KeyPurpose; 5] = [
        KeyPurpose::Index(PiiField::Ip),
        KeyPurpose::Index(PiiField::DeviceId),
        KeyPurpose::Data,
        KeyPurpose::Audit,
        KeyPurpose::Erasure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Index(PiiField::Ip) => "index:ip",
            KeyPurpose::Index(PiiField::DeviceId) => "index:device_id",
            KeyPurpose::Data => "data",
            KeyPurpose::Audit => "audit",
            KeyPurpose::Erasure => "erasure",
        }
    }

    pub fn from_db(name: &str) -> Option<KeyPurpose> {
        KeyPurpose::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for field in PiiField::ALL {
            assert_eq!(PiiField::from_db(field.as_str()), Some(field));
            assert_eq!(field.mask_column(), format!("masked_{field}"));
            assert_eq!(field.index_key().as_str(), format!("index:{field}"));
        }
        for purpose in KeyPurpose::ALL {
            assert_eq!(KeyPurpose::from_db(purpose.as_str()), Some(purpose));
        }
    }

    #[test]
    fn key_material_is_exactly_32_bytes_and_never_printed() {
        assert!(KeyMaterial::from_slice(&[1; 31]).is_none());
        let key = KeyMaterial::from_slice(&[0xab; 32]).expect("32 bytes");
        assert_eq!(key.expose(), &[0xab; 32]);
        assert_eq!(format!("{key:?}"), "KeyMaterial(<redacted>)");
    }
}
