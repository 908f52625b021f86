//! `init-keys` (admin): creates the keys that do not exist yet; idempotent.

use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::KeyPurpose;
use login_etl_core::keys;
use login_etl_core::store;
use pii_vault_protocol::Outcome;

struct InitKeys;

impl Operation for InitKeys {
    const ACTION: Action = Action::InitKeys;
    type Valid = ();
    type Output = Vec<KeyPurpose>;

    fn describe(&self) -> Described {
        Described::default()
    }

    fn validate(self) -> Result<(), ServiceError> {
        Ok(())
    }

    async fn work((): (), work: &mut Work<'_>) -> Result<Done<Self::Output>, ServiceError> {
        // In one bounded transaction, the KMS calls too (an admin's rare request).
        let mut client = work.client().await?;
        let tx = store::begin(&mut client).await?;
        let created = keys::create_missing_keys(&*tx, work.kms()).await?;
        tx.commit().await?;
        let names: Vec<&str> = created.iter().map(|p| p.as_str()).collect();
        let detail = if names.is_empty() { "all keys existed".to_owned() } else { names.join(", ") };
        Ok(Done::new(created, Outcome::Done).detail(detail))
    }
}

impl VaultService {
    /// Creates the keys that do not exist yet. Admin only.
    pub async fn init_keys(&self, context: &RequestContext) -> Result<Vec<KeyPurpose>, ServiceError> {
        self.run(context, InitKeys).await
    }
}
