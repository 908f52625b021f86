//! `find`: the `user_logins` rows whose mask of a field is that of a plaintext (normalized
//! as the function does), the oldest [`FIND_MAX_ROWS`] of them and how many match. Spends
//! the budget: a find tests a guess.

use login_etl_core::store::{self, typed::typed};
use zeroize::Zeroizing;

use super::normalize;
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::{BlindIndex, PiiField};
use login_etl_core::store::table::USER_LOGINS;
use pii_vault_protocol::{FIND_MAX_ROWS, LoginMatch, Outcome};

/// A find's answer: the mask of the plaintext, the oldest matching rows (at most
/// [`FIND_MAX_ROWS`]) and how many match.
#[derive(Debug, Clone)]
pub struct Found {
    pub mask: BlindIndex,
    pub rows: Vec<LoginMatch>,
    pub total: u64,
}

struct Find<'a> {
    field: PiiField,
    plaintext: &'a str,
    reason: Option<&'a str>,
}

impl Operation for Find<'_> {
    const ACTION: Action = Action::Find;
    type Valid = (PiiField, Zeroizing<String>);
    type Output = Found;

    fn describe(&self) -> Described {
        Described { field: Some(self.field), ..Described::default() }
    }

    fn reason(&self) -> Option<&str> {
        self.reason
    }

    fn validate(self) -> Result<Self::Valid, ServiceError> {
        Ok((self.field, Zeroizing::new(normalize(self.field, self.plaintext)?)))
    }

    async fn work(
        (field, normalized): Self::Valid,
        work: &mut Work<'_>,
    ) -> Result<Done<Self::Output>, ServiceError> {
        let index = work.indexer().await?.index(field, &normalized);
        let column = field.mask_column();
        let mut client = work.client().await?;
        let tx = store::begin(&mut client).await?;
        let rows = tx
            .query_typed(
                &format!(
                    "SELECT {}, count(*) OVER () FROM {} WHERE {column} = $1
                      ORDER BY sent_at, sqs_message_id LIMIT $2",
                    LoginMatch::COLUMNS.join(", "),
                    USER_LOGINS.name
                ),
                &[typed(&index.as_str()), typed(&(FIND_MAX_ROWS as i64))],
            )
            .await?;
        tx.commit().await?;
        let total = rows.first().map_or(0, |r| r.get::<_, i64>(LoginMatch::COLUMNS.len()));
        let total = u64::try_from(total).unwrap_or_default();
        let rows: Vec<LoginMatch> = rows
            .iter()
            .map(|r| LoginMatch {
                sqs_message_id: r.get(0),
                user_id: r.get(1),
                device_type: r.get(2),
                locale: r.get(3),
                app_version_raw: r.get(4),
                create_date: r.get(5),
                masked_ip: r.get(6),
                masked_device_id: r.get(7),
            })
            .collect();
        let detail = format!("{total} row(s)");
        Ok(Done::new(Found { mask: index.clone(), rows, total }, Outcome::Found).mask(index).detail(detail))
    }
}

impl VaultService {
    /// `user_logins` rows whose mask of `field` is that of `plaintext`: the oldest
    /// [`FIND_MAX_ROWS`], and how many match.
    pub async fn find_rows(
        &self,
        context: &RequestContext,
        field: PiiField,
        plaintext: &str,
        reason: Option<&str>,
    ) -> Result<Found, ServiceError> {
        self.run(context, Find { field, plaintext, reason }).await
    }

    /// [`VaultService::find_rows`] as the mask and the rows.
    pub async fn find(
        &self,
        context: &RequestContext,
        field: PiiField,
        plaintext: &str,
        reason: Option<&str>,
    ) -> Result<(BlindIndex, Vec<LoginMatch>), ServiceError> {
        self.find_rows(context, field, plaintext, reason).await.map(|found| (found.mask, found.rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_shows_described_columns_and_looks_rows_up_by_described_mask_columns() {
        let described: Vec<&str> = USER_LOGINS.column_names().collect();
        for column in LoginMatch::COLUMNS.into_iter().chain(PiiField::ALL.map(PiiField::mask_column)) {
            assert!(described.contains(&column), "{column} is not a column of {}", USER_LOGINS.name);
        }
    }
}
