//! `quarantine purge`: erases the bodies quarantined longer than `QUARANTINE_RETENTION_DAYS`
//! (as the scheduled `quarantine-purge` does, on demand and on the record), in statements
//! of [`ROWS_PER_STATEMENT`] rows, until none is left or the request's time is spent. The
//! rows stay, without their bodies (`erased_by = 'purge'`). Staff may run it: it reveals
//! nothing, and erases only what the retention already condemns.

use std::time::Instant;

use super::WORK_BUDGET;
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::store::quarantine::purge_expired;
use pii_vault_protocol::Outcome;

/// Rows erased per statement: each statement's locks stay short.
pub const ROWS_PER_STATEMENT: u32 = 1000;

struct Purge;

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub purged: u64,
    pub retention_days: u32,
    /// Stopped for time with expired bodies possibly left.
    pub more: bool,
}

impl Operation for Purge {
    const ACTION: Action = Action::QuarantinePurge;
    type Valid = ();
    type Output = Purged;

    fn describe(&self) -> Described {
        Described::default()
    }

    fn validate(self) -> Result<(), ServiceError> {
        Ok(())
    }

    async fn work((): (), work: &mut Work<'_>) -> Result<Done<Purged>, ServiceError> {
        let started = Instant::now();
        let retention_days = work.retention_days();
        let mut client = work.client().await?;
        let mut done = Purged { retention_days, ..Purged::default() };
        loop {
            let erased = purge_expired(&mut client, retention_days, ROWS_PER_STATEMENT).await?;
            done.purged += erased;
            if erased < u64::from(ROWS_PER_STATEMENT) {
                break;
            }
            if started.elapsed() >= WORK_BUDGET {
                done.more = true;
                break;
            }
        }
        let detail = format!(
            "{} bod(ies) older than {retention_days} day(s) erased{}",
            done.purged,
            if done.more { ", more left" } else { "" }
        );
        Ok(Done::new(done, Outcome::Purged).detail(detail))
    }
}

impl VaultService {
    /// Erases the bodies past the retention.
    pub async fn quarantine_purge(&self, context: &RequestContext) -> Result<Purged, ServiceError> {
        self.run(context, Purge).await
    }
}
