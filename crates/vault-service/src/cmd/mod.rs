//! The operations, one a file. Each implements [`crate::operation::Operation`] (what its
//! request row records, its checks, its work) and a typed entry point on
//! [`crate::VaultService`] that runs it through the combinator, the only way it runs.

mod audit;
mod audit_verify;
mod expire;
mod find;
mod forget;
mod init_keys;
mod quarantine;
mod reencrypt;
mod reveal;
mod rotate_key;

pub use audit_verify::Link;
pub use find::Found;
pub use forget::UserErased;
pub use quarantine::{Imported, Purged, QuarantineFilter, Shown};
pub use reencrypt::Reencrypted;

use crate::ServiceError;
use login_etl_core::crypto::{BlindIndex, PiiField};
use login_etl_core::event::text::is_invisible;
use login_etl_core::event::{ClientIp, DeviceId};
use login_etl_core::keys::{self, KeyError};
use login_etl_core::store;

/// The width of `user_logins.user_id`, `user_logins.sqs_message_id` and
/// `login_quarantine.message_id`.
const MAX_ID_CHARS: usize = 128;

/// `id`, if a row could hold it and a person can read it (so the audit may record it).
fn row_id(id: &str) -> Option<&str> {
    let fits = !id.is_empty() && id.chars().count() <= MAX_ID_CHARS;
    (fits && !id.chars().any(|c| c.is_control() || is_invisible(c))).then_some(id)
}

/// Normalizes a plaintext as the function does, so any spelling finds the same mask.
fn normalize(field: PiiField, plaintext: &str) -> Result<String, ServiceError> {
    match field {
        PiiField::Ip => ClientIp::parse(plaintext)
            .map(|ip| ip.canonical())
            .map_err(|_| ServiceError::BadRequest("not an IPv4 or IPv6 address".into())),
        PiiField::DeviceId => DeviceId::parse(plaintext)
            .map(|id| id.canonical().to_owned())
            .map_err(|_| ServiceError::BadRequest("empty or invalid device id".into())),
    }
}

/// A mask as `user_logins` holds it.
fn parse_mask(mask: &str) -> Result<BlindIndex, ServiceError> {
    BlindIndex::parse(mask)
        .ok_or_else(|| ServiceError::BadRequest("a mask is 64 hex characters, as in user_logins".into()))
}

/// The newest data-key version, in a bounded transaction of its own.
async fn newest_data_key_version(client: &mut deadpool_postgres::Object) -> Result<i32, ServiceError> {
    let tx = store::begin(client).await?;
    let newest = keys::newest_data_key_version(&*tx).await?.ok_or(KeyError::NotInitialized("data"))?;
    tx.commit().await?;
    Ok(newest)
}
