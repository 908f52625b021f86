//! The vault's cipher: AES-256-GCM-SIV with a random 96-bit nonce per value. The AAD
//! binds the ciphertext to its purpose and row (a vault value: field and blind index; a
//! quarantined message body: message id and attempt) and to the data-key version, so a
//! ciphertext copied to another row, passed off as the other purpose, or relabelled with
//! another version fails to open. GCM-SIV keeps a repeated nonce from being catastrophic
//! (it only reveals equality).

use std::fmt;

use aes_gcm_siv::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use zeroize::Zeroizing;

use super::{BlindIndex, KeyMaterial, PiiField};

pub const NONCE_LEN: usize = 12;

/// Version tag of the vault AAD layout, so a future layout cannot be confused with this one.
const AAD_DOMAIN: &[u8] = b"login-etl/pii_vault/v1";
/// The quarantine's: another purpose, so neither kind of ciphertext opens as the other.
const BODY_AAD_DOMAIN: &[u8] = b"login-etl/login_quarantine/v1";

/// One `pii_vault` row's secret part.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub key_version: i32,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl SealedValue {
    /// A vault row's parts as stored; a nonce of the wrong length is not authentic.
    pub fn from_stored(
        key_version: i32,
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<SealedValue, SealError> {
        let nonce = nonce.try_into().map_err(|_| SealError::Unauthentic)?;
        Ok(SealedValue { key_version, nonce, ciphertext })
    }
}

impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedValue")
            .field("key_version", &self.key_version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("vault row is sealed under data key version {found}, but this key is version {expected}")]
    WrongKeyVersion { expected: i32, found: i32 },
    #[error("vault ciphertext failed authentication (tampered, moved to another row, or wrong key)")]
    Unauthentic,
    #[error("encryption failed")]
    Encrypt,
}

/// A data key with its version; the cipher's key schedule is wiped on drop.
pub struct DataKey {
    version: i32,
    cipher: Aes256GcmSiv,
}

impl DataKey {
    pub fn new(version: i32, key: &KeyMaterial) -> DataKey {
        DataKey { version, cipher: Aes256GcmSiv::new(key.expose().into()) }
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    /// Seals a vault value, bound to its row.
    pub fn seal(
        &self,
        field: PiiField,
        index: &BlindIndex,
        plaintext: &str,
    ) -> Result<SealedValue, SealError> {
        self.seal_with(&aad(field, index, self.version), plaintext)
    }

    pub fn open(
        &self,
        field: PiiField,
        index: &BlindIndex,
        sealed: &SealedValue,
    ) -> Result<Zeroizing<String>, SealError> {
        self.open_with(&aad(field, index, sealed.key_version), sealed)
    }

    /// Seals a quarantined message body, bound to its message id and attempt.
    pub fn seal_body(&self, message_id: &str, attempt: i32, body: &str) -> Result<SealedValue, SealError> {
        self.seal_with(&body_aad(message_id, attempt, self.version), body)
    }

    pub fn open_body(
        &self,
        message_id: &str,
        attempt: i32,
        sealed: &SealedValue,
    ) -> Result<Zeroizing<String>, SealError> {
        self.open_with(&body_aad(message_id, attempt, sealed.key_version), sealed)
    }

    fn seal_with(&self, aad: &[u8], plaintext: &str) -> Result<SealedValue, SealError> {
        // A nonce per seal from the thread's CSPRNG (ChaCha12, reseeded from the OS every
        // 64 KiB): no system call per value. GCM-SIV tolerates a repeated nonce anyway.
        let nonce = Nonce::generate_from_rng(&mut rand::rng());
        let ciphertext = self
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad })
            .map_err(|_| SealError::Encrypt)?;
        Ok(SealedValue { key_version: self.version, nonce: nonce.into(), ciphertext })
    }

    fn open_with(&self, aad: &[u8], sealed: &SealedValue) -> Result<Zeroizing<String>, SealError> {
        if sealed.key_version != self.version {
            return Err(SealError::WrongKeyVersion { expected: self.version, found: sealed.key_version });
        }
        let plaintext = Zeroizing::new(
            self.cipher
                .decrypt(&Nonce::from(sealed.nonce), Payload { msg: &sealed.ciphertext, aad })
                .map_err(|_| SealError::Unauthentic)?,
        );
        // Only UTF-8 text is ever sealed; anything else is not authentic.
        String::from_utf8(plaintext.to_vec()).map(Zeroizing::new).map_err(|_| SealError::Unauthentic)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(version {}, <redacted>)", self.version)
    }
}

/// NUL-separated: neither the field names nor hex indexes can contain NUL.
fn aad(field: PiiField, index: &BlindIndex, key_version: i32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 96);
    for part in [AAD_DOMAIN, field.as_str().as_bytes(), index.as_str().as_bytes()] {
        aad.extend_from_slice(part);
        aad.push(0);
    }
    aad.extend_from_slice(key_version.to_string().as_bytes());
    aad
}

/// Length-prefixed: a message id is text from outside, so no separator is safe.
fn body_aad(message_id: &str, attempt: i32, key_version: i32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(BODY_AAD_DOMAIN.len() + message_id.len() + 16);
    aad.extend_from_slice(BODY_AAD_DOMAIN);
    aad.push(0);
    aad.extend_from_slice(&(message_id.len() as u64).to_be_bytes());
    aad.extend_from_slice(message_id.as_bytes());
    aad.extend_from_slice(&attempt.to_be_bytes());
    aad.extend_from_slice(&key_version.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::BlindIndexer;

    fn index_of(value: &str) -> BlindIndex {
        let key = KeyMaterial::from_bytes([7; 32]);
        BlindIndexer::new(&key, &key).index(PiiField::Ip, value)
    }

    #[test]
    fn round_trips() {
        let key = DataKey::new(1, &KeyMaterial::from_bytes([9; 32]));
        let index = index_of("10.0.0.1");
        let sealed = key.seal(PiiField::Ip, &index, "10.0.0.1").expect("seal");
        assert_eq!(sealed.key_version, 1);
        assert_ne!(sealed.ciphertext, b"10.0.0.1");
        let opened = key.open(PiiField::Ip, &index, &sealed).expect("open");
        assert_eq!(opened.as_str(), "10.0.0.1");
    }

    #[test]
    fn nonces_are_random() {
        let key = DataKey::new(1, &KeyMaterial::from_bytes([9; 32]));
        let index = index_of("10.0.0.1");
        let a = key.seal(PiiField::Ip, &index, "10.0.0.1").expect("seal");
        let b = key.seal(PiiField::Ip, &index, "10.0.0.1").expect("seal");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn a_ciphertext_is_bound_to_its_row_and_version() {
        let key = DataKey::new(1, &KeyMaterial::from_bytes([9; 32]));
        let index = index_of("10.0.0.1");
        let sealed = key.seal(PiiField::Ip, &index, "10.0.0.1").expect("seal");

        let other_row = index_of("10.0.0.2");
        assert_eq!(key.open(PiiField::Ip, &other_row, &sealed), Err(SealError::Unauthentic));
        assert_eq!(key.open(PiiField::DeviceId, &index, &sealed), Err(SealError::Unauthentic));

        let mut tampered_nonce = sealed.clone();
        tampered_nonce.nonce[0] ^= 1;
        assert_eq!(key.open(PiiField::Ip, &index, &tampered_nonce), Err(SealError::Unauthentic));

        let mut tampered_ciphertext = sealed.clone();
        tampered_ciphertext.ciphertext[0] ^= 1;
        assert_eq!(key.open(PiiField::Ip, &index, &tampered_ciphertext), Err(SealError::Unauthentic));

        // Same key bytes relabelled as version 2: the AAD still says version 1.
        let relabelled_key = DataKey::new(2, &KeyMaterial::from_bytes([9; 32]));
        let relabelled = SealedValue { key_version: 2, ..sealed.clone() };
        assert_eq!(relabelled_key.open(PiiField::Ip, &index, &relabelled), Err(SealError::Unauthentic));

        let wrong_key = DataKey::new(1, &KeyMaterial::from_bytes([8; 32]));
        assert_eq!(wrong_key.open(PiiField::Ip, &index, &sealed), Err(SealError::Unauthentic));
    }

    #[test]
    fn a_sealed_body_is_bound_to_its_message_and_attempt_and_is_no_vault_value() {
        let key = DataKey::new(1, &KeyMaterial::from_bytes([9; 32]));
        let body = r#"{"ip": "10.0.0.1"}"#;
        let sealed = key.seal_body("m-1", 0, body).expect("seal");
        assert_eq!(key.open_body("m-1", 0, &sealed).expect("open").as_str(), body);
        assert_eq!(key.open_body("m-2", 0, &sealed), Err(SealError::Unauthentic));
        assert_eq!(key.open_body("m-1", 1, &sealed), Err(SealError::Unauthentic));
        // Neither purpose opens as the other, whatever the row says.
        let index = index_of("10.0.0.1");
        for field in PiiField::ALL {
            assert_eq!(key.open(field, &index, &sealed), Err(SealError::Unauthentic));
            let value = key.seal(field, &index, "10.0.0.1").expect("seal");
            assert_eq!(key.open_body(index.as_str(), 0, &value), Err(SealError::Unauthentic));
            assert_eq!(key.open_body(field.as_str(), 0, &value), Err(SealError::Unauthentic));
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn setup() -> (DataKey, BlindIndex) {
            (DataKey::new(3, &KeyMaterial::from_bytes([9; 32])), index_of("10.0.0.1"))
        }

        proptest! {
            #[test]
            fn seal_then_open_gives_the_value_back(value in "\\PC{0,300}", device in any::<bool>()) {
                let (key, index) = setup();
                let field = if device { PiiField::DeviceId } else { PiiField::Ip };
                let sealed = key.seal(field, &index, &value).expect("seal");
                let opened = key.open(field, &index, &sealed).expect("open");
                prop_assert_eq!(opened.as_str(), value.as_str());
            }

            #[test]
            fn any_changed_byte_of_nonce_or_ciphertext_is_refused(
                value in "\\PC{1,64}",
                position in any::<prop::sample::Index>(),
                flip in 1..=255u8,
            ) {
                let (key, index) = setup();
                let sealed = key.seal(PiiField::Ip, &index, &value).expect("seal");
                let mut bytes: Vec<u8> = sealed.nonce.iter().chain(&sealed.ciphertext).copied().collect();
                let at = position.index(bytes.len());
                bytes[at] ^= flip;
                let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
                let tampered = SealedValue::from_stored(sealed.key_version, nonce, ciphertext.to_vec()).expect("12 bytes");
                prop_assert_eq!(key.open(PiiField::Ip, &index, &tampered), Err(SealError::Unauthentic));
            }

            #[test]
            fn any_changed_associated_data_is_refused(
                value in "\\PC{1,64}",
                position in 0..64usize,
                other_digit in 0..16u32,
            ) {
                let (key, index) = setup();
                let sealed = key.seal(PiiField::Ip, &index, &value).expect("seal");
                // Another row: one hex digit of the blind index changed.
                let mut other = index.as_str().as_bytes().to_vec();
                let digit = char::from_digit(other_digit, 16).expect("hex digit") as u8;
                prop_assume!(other[position] != digit);
                other[position] = digit;
                let other = BlindIndex::parse(std::str::from_utf8(&other).expect("ascii")).expect("hex");
                prop_assert_eq!(key.open(PiiField::Ip, &other, &sealed), Err(SealError::Unauthentic));
                // Another field.
                prop_assert_eq!(key.open(PiiField::DeviceId, &index, &sealed), Err(SealError::Unauthentic));
                // Another key version, same key bytes.
                let relabelled = DataKey::new(4, &KeyMaterial::from_bytes([9; 32]));
                let moved = SealedValue { key_version: 4, ..sealed.clone() };
                prop_assert_eq!(relabelled.open(PiiField::Ip, &index, &moved), Err(SealError::Unauthentic));
            }
        }
    }
}
