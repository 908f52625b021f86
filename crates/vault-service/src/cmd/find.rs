//! `find`: the `user_logins` rows whose mask of a field is that of a plaintext (normalized
//! as the function does). Spends the budget: a find tests a guess.

use zeroize::Zeroizing;

use super::normalize;
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::{BlindIndex, PiiField};
use login_etl_core::store::table::USER_LOGINS;
use pii_vault_protocol::{LoginMatch, Outcome};

struct Find<'a> {
    field: PiiField,
    plaintext: &'a str,
    reason: Option<&'a str>,
}

impl Operation for Find<'_> {
    const ACTION: Action = Action::Find;
    type Valid = (PiiField, Zeroizing<String>);
    type Output = (BlindIndex, Vec<LoginMatch>);

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
        let rows = work
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {} FROM {} WHERE {column} = $1 ORDER BY sent_at, sqs_message_id",
                    LoginMatch::COLUMNS.join(", "),
                    USER_LOGINS.name
                ),
                &[&index.as_str()],
            )
            .await?;
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
        let detail = format!("{} row(s)", rows.len());
        Ok(Done::new((index.clone(), rows), Outcome::Found).mask(index).detail(detail))
    }
}

impl VaultService {
    /// `user_logins` rows whose mask of `field` is that of `plaintext`.
    pub async fn find(
        &self,
        context: &RequestContext,
        field: PiiField,
        plaintext: &str,
        reason: Option<&str>,
    ) -> Result<(BlindIndex, Vec<LoginMatch>), ServiceError> {
        self.run(context, Find { field, plaintext, reason }).await
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
