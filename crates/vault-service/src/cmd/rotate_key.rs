//! `rotate-key` (admin): a new data-key version; function instances seal with it from
//! their next cold start.

use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::keys;
use login_etl_core::store;
use pii_vault_protocol::Outcome;

struct RotateKey;

impl Operation for RotateKey {
    const ACTION: Action = Action::RotateKey;
    type Valid = ();
    type Output = i32;

    fn describe(&self) -> Described {
        Described::default()
    }

    fn validate(self) -> Result<(), ServiceError> {
        Ok(())
    }

    async fn work((): (), work: &mut Work<'_>) -> Result<Done<i32>, ServiceError> {
        // In one bounded transaction, the KMS call too (an admin's rare request).
        let mut client = work.client().await?;
        let tx = store::begin(&mut client).await?;
        let version = keys::rotate_data_key(&*tx, work.kms()).await?;
        let newest = keys::newest_data_key_version(&*tx).await?.unwrap_or_default();
        tx.commit().await?;
        let version = version.ok_or(ServiceError::RotationRace(newest))?;
        Ok(Done::new(version, Outcome::Done).detail(format!("data key version {version}")))
    }
}

impl VaultService {
    /// Creates the next data-key version. Admin only.
    pub async fn rotate_key(&self, context: &RequestContext) -> Result<i32, ServiceError> {
        self.run(context, RotateKey).await
    }
}
