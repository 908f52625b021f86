//! `expire` (admin): one batch of the vault's expiry ([`crate::expiry`]): the vault rows
//! whose mask no login has carried for `VAULT_RETENTION_DAYS`, deleted. One batch a
//! request, so each is on the record with its count; `pii-vault admin expire` and the
//! scheduled `vault-expiry` function ask again until the pass is done.

use crate::audit::Action;
use crate::expiry::{self, Batch, MAX_BATCH_ROWS};
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use pii_vault_protocol::Outcome;

struct Expire {
    batch_size: i64,
}

impl Operation for Expire {
    const ACTION: Action = Action::Expire;
    /// Vault rows the batch decides.
    type Valid = i64;
    type Output = Batch;

    fn describe(&self) -> Described {
        Described::default()
    }

    fn validate(self) -> Result<i64, ServiceError> {
        if !(1..=MAX_BATCH_ROWS).contains(&self.batch_size) {
            return Err(ServiceError::BadRequest(format!("batch size must be 1 to {MAX_BATCH_ROWS}")));
        }
        Ok(self.batch_size)
    }

    async fn work(batch_size: i64, work: &mut Work<'_>) -> Result<Done<Batch>, ServiceError> {
        let retention = work.vault_retention();
        let mut client = work.client().await?;
        let batch = expiry::expire_batch(&mut client, retention, batch_size).await?;
        let kept = match retention.as_days() {
            Some(days) => format!("retention {days} days"),
            None => "retention forever".to_owned(),
        };
        // Counts only: no mask, no cursor (a mask) in the audit.
        let detail = format!(
            "{} of {} vault row(s) expired ({kept}){}",
            batch.expired,
            batch.scanned,
            if batch.done { "; pass done" } else { "" }
        );
        Ok(Done::new(batch, Outcome::Done).detail(detail))
    }
}

impl VaultService {
    /// Expires one batch of at most `batch_size` vault rows after the pass's cursor. Admin only.
    pub async fn expire(&self, context: &RequestContext, batch_size: i64) -> Result<Batch, ServiceError> {
        self.run(context, Expire { batch_size }).await
    }
}
