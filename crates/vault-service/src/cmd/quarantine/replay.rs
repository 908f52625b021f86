//! `quarantine replay`: sends quarantined bodies back for ingestion, through the replay
//! queue (only the service's role may send there, so the function honours the attributes
//! of what arrives from it), with the original message id, its `SentTimestamp` and a new
//! attempt number ([`ReplayOrigin`]): the login keeps its idempotency key and its
//! `create_date`.
//!
//! Each row in a transaction of its own, in order: lock the row (`FOR UPDATE NOWAIT`: a
//! concurrent replay of the same row makes this one answer `busy`, so a row is sent once),
//! check it (not erased, not replayed, with a `SentTimestamp`), open the body, send it,
//! and only then mark it replayed and commit. Should the commit fail after the send, the
//! next replay sends the same attempt again, which the function takes as the same login
//! (`ON CONFLICT DO NOTHING` on both the login and the quarantine key): at least once,
//! never twice in effect.
//!
//! Bounded: at most [`MAX_IDS`] ids, or one page of [`PAGE_ROWS`] rows of a reason code,
//! per request, and no new row is started once [`super::WORK_BUDGET`] is spent.

use login_etl_core::store::{self, typed::typed};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;

use super::{
    Cursor, ERASE_FORGOTTEN, HOLDS_FORGOTTEN_VALUE, WORK_BUDGET, audit_id, describe_filter, message_id,
    reason_code, since,
};
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::queues::Sent;
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::SealedValue;
use login_etl_core::event::MessageId;
use login_etl_core::replay::{MAX_ATTEMPT, ReplayOrigin};
use login_etl_core::store::quarantine::LOGIN_QUARANTINE;
use pii_vault_protocol::{Outcome, ReplayOutcome, ReplaySelection, ReplayedRow};

/// Ids per request (the CLI sends more in several requests).
pub const MAX_IDS: usize = 100;
/// Rows per page of a selection by reason code.
pub const PAGE_ROWS: i64 = 100;

struct Replay<'a> {
    selection: &'a ReplaySelection,
    reason: Option<&'a str>,
}

enum Valid {
    /// Distinct, in the order given.
    Ids(Vec<String>),
    Filter {
        code: &'static str,
        since: Option<DateTime<Utc>>,
        after: Option<Cursor>,
    },
}

impl Operation for Replay<'_> {
    const ACTION: Action = Action::QuarantineReplay;
    type Valid = Valid;
    type Output = (Vec<ReplayedRow>, Option<String>);

    fn describe(&self) -> Described {
        let target = match self.selection {
            // The first id and how many: bounded, whatever was sent.
            ReplaySelection::MessageIds(ids) => {
                ids.first().and_then(|id| audit_id(id)).map(|first| match ids.len() {
                    1 => format!("message_id:{first}"),
                    n => format!("message_ids:{n} first:{first}"),
                })
            }
            ReplaySelection::ReasonCode { code, since, .. } => describe_filter(since.as_deref(), Some(code)),
        };
        Described { target, ..Described::default() }
    }

    fn reason(&self) -> Option<&str> {
        self.reason
    }

    fn validate(self) -> Result<Valid, ServiceError> {
        match self.selection {
            ReplaySelection::MessageIds(ids) => {
                if ids.is_empty() || ids.len() > MAX_IDS {
                    return Err(ServiceError::BadRequest(format!(
                        "replay 1 to {MAX_IDS} message ids a request"
                    )));
                }
                let mut distinct: Vec<String> = Vec::with_capacity(ids.len());
                for id in ids {
                    let id = message_id(id)?;
                    if !distinct.iter().any(|seen| seen == id) {
                        distinct.push(id.to_owned());
                    }
                }
                Ok(Valid::Ids(distinct))
            }
            ReplaySelection::ReasonCode { code, since: since_text, after } => Ok(Valid::Filter {
                code: reason_code(code)?,
                since: since_text.as_deref().map(since).transpose()?,
                after: after.as_deref().map(Cursor::decode).transpose()?,
            }),
        }
    }

    async fn work(valid: Valid, work: &mut Work<'_>) -> Result<Done<Self::Output>, ServiceError> {
        // Refused at once, before any row is touched, when the service has no replay queue.
        work.queues().replay_queue_url()?;
        let started = Instant::now();
        let (keys, next) = match valid {
            Valid::Ids(ids) => (ids.into_iter().map(|id| (id, None)).collect(), None),
            Valid::Filter { code, since, after } => page(work, code, since, after).await?,
        };
        let mut rows = Vec::with_capacity(keys.len());
        let mut out_of_time = false;
        for (id, attempt) in keys {
            if started.elapsed() >= WORK_BUDGET {
                out_of_time = true;
                rows.push(ReplayedRow {
                    message_id: id,
                    attempt,
                    outcome: ReplayOutcome::NotAttempted,
                    replay_attempt: None,
                });
                continue;
            }
            match replay_row(work, &id, attempt).await {
                Ok(row) => rows.push(row),
                Err(error) => {
                    // What was sent so far is marked; a second run sends none of it again.
                    let sent = rows.iter().filter(|r| r.outcome == ReplayOutcome::Replayed).count();
                    tracing::warn!(
                        replayed = sent,
                        code = error.code().as_str(),
                        "replay stopped by a failure"
                    );
                    return Err(error);
                }
            }
        }
        let detail = summary(&rows, out_of_time);
        Ok(Done::new((rows, next), Outcome::Replayed).detail(detail))
    }
}

/// One page of the keys of a reason code's rows, and the cursor of the next page.
async fn page(
    work: &Work<'_>,
    code: &str,
    since: Option<DateTime<Utc>>,
    after: Option<Cursor>,
) -> Result<(Vec<(String, Option<i32>)>, Option<String>), ServiceError> {
    let (after_at, after_id, after_attempt) = match &after {
        Some(c) => (Some(c.quarantined_at), Some(c.message_id.as_str()), Some(c.attempt)),
        None => (None, None, None),
    };
    let mut client = work.client().await?;
    let tx = store::begin(&mut client).await?;
    let rows = tx
        .query_typed(
            &format!(
                "SELECT message_id, attempt, quarantined_at FROM {}
                  WHERE reason_code = $1
                    AND ($2::timestamptz IS NULL OR quarantined_at >= $2)
                    AND ($3::timestamptz IS NULL OR (quarantined_at, message_id, attempt) > ($3, $4, $5))
                  ORDER BY quarantined_at, message_id, attempt
                  LIMIT $6",
                LOGIN_QUARANTINE.name
            ),
            &[
                typed(&code),
                typed(&since),
                typed(&after_at),
                typed(&after_id),
                typed(&after_attempt),
                typed(&(PAGE_ROWS + 1)),
            ],
        )
        .await?;
    tx.commit().await?;
    let more = rows.len() as i64 > PAGE_ROWS;
    let rows = &rows[..rows.len().min(PAGE_ROWS as usize)];
    let next = rows.last().filter(|_| more).map(|last| {
        Cursor { quarantined_at: last.get(2), message_id: last.get(0), attempt: last.get(1) }.encode()
    });
    Ok((rows.iter().map(|r| (r.get(0), Some(r.get(1)))).collect(), next))
}

/// One row: locked, checked, sent, marked, in one transaction.
async fn replay_row(work: &Work<'_>, id: &str, wanted: Option<i32>) -> Result<ReplayedRow, ServiceError> {
    let mut client = work.client().await?;
    let tx = store::begin(&mut client).await?;
    let answer = |attempt, outcome, replay_attempt| ReplayedRow {
        message_id: id.to_owned(),
        attempt,
        outcome,
        replay_attempt,
    };
    let locked = tx
        .query_typed_opt(
            &format!(
                "SELECT q.attempt, q.erased_at IS NOT NULL, q.replay_attempt, q.sent_at, q.key_version, q.nonce,
                        q.ciphertext,
                        (SELECT greatest(max(attempt), max(replay_attempt)) FROM {quarantine} WHERE message_id = $1),
                        {holds}
                   FROM {quarantine} q
                  WHERE q.message_id = $1
                    AND q.attempt = coalesce($2::int4, (SELECT max(attempt) FROM {quarantine} WHERE message_id = $1))
                    FOR UPDATE OF q NOWAIT",
                quarantine = LOGIN_QUARANTINE.name,
                holds = HOLDS_FORGOTTEN_VALUE.as_str()
            ),
            &[typed(&id), typed(&wanted)],
        )
        .await;
    let row = match locked {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(answer(wanted, ReplayOutcome::Unknown, None)),
        Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            return Ok(answer(wanted, ReplayOutcome::Busy, None));
        }
        Err(error) => return Err(error.into()),
    };
    let attempt: i32 = row.get(0);
    let replayed: Option<i32> = row.get(2);
    let sent_at: Option<DateTime<Utc>> = row.get(3);
    let highest: i32 = row.get(7);
    if row.get::<_, bool>(1) {
        return Ok(answer(Some(attempt), ReplayOutcome::Erased, None));
    }
    if row.get::<_, bool>(8) {
        // It holds a value forgotten after it was quarantined: erased now, never sent.
        tx.execute_typed(ERASE_FORGOTTEN.as_str(), &[typed(&id), typed(&attempt)]).await?;
        tx.commit().await?;
        return Ok(answer(Some(attempt), ReplayOutcome::Erased, None));
    }
    if let Some(replay_attempt) = replayed {
        return Ok(answer(Some(attempt), ReplayOutcome::AlreadyReplayed, Some(replay_attempt)));
    }
    let Some(sent_at) = sent_at else { return Ok(answer(Some(attempt), ReplayOutcome::NoSentAt, None)) };
    let next = highest.saturating_add(1);
    if next > MAX_ATTEMPT {
        return Ok(answer(Some(attempt), ReplayOutcome::AttemptsExhausted, None));
    }
    // The stored id passed the column's CHECK, so it parses; anything else is not authentic.
    let original =
        MessageId::parse(id.to_owned()).map_err(|_| login_etl_core::crypto::SealError::Unauthentic)?;
    let sealed = SealedValue::from_stored(row.get(4), row.get::<_, &[u8]>(5), row.get(6))?;
    let body = {
        let mut keys = work.data_keys().await;
        keys.get(&*tx, work.kms(), sealed.key_version).await?.open_body(id, attempt, &sealed)?
    };
    if body.is_empty() {
        return Ok(answer(Some(attempt), ReplayOutcome::EmptyBody, None));
    }
    let origin = ReplayOrigin { message_id: original, sent_at, attempt: next };
    if work.queues().send_replay(&body, &origin.to_attributes()).await? == Sent::Refused {
        return Ok(answer(Some(attempt), ReplayOutcome::Unsendable, None));
    }
    tx.execute_typed(
        &format!(
            "UPDATE {} SET replayed_at = clock_timestamp(), replay_attempt = $3
              WHERE message_id = $1 AND attempt = $2",
            LOGIN_QUARANTINE.name
        ),
        &[typed(&id), typed(&attempt), typed(&next)],
    )
    .await?;
    tx.commit().await?;
    Ok(answer(Some(attempt), ReplayOutcome::Replayed, Some(next)))
}

/// The audit's detail: counts by outcome, and the keys sent (bounded by the request's).
fn summary(rows: &[ReplayedRow], out_of_time: bool) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for row in rows {
        *counts.entry(row.outcome.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(outcome, n)| format!("{n} {outcome}")).collect();
    let sent: Vec<String> = rows
        .iter()
        .filter(|r| r.outcome == ReplayOutcome::Replayed)
        .map(|r| format!("{}#{}", r.message_id, r.replay_attempt.unwrap_or_default()))
        .collect();
    let mut detail = if counts.is_empty() { "no rows".to_owned() } else { counts.join(", ") };
    if !sent.is_empty() {
        detail += &format!("; sent {}", sent.join(" "));
    }
    if out_of_time {
        detail += "; stopped for time";
    }
    detail
}

impl VaultService {
    /// Replays quarantined rows; each row's outcome, and for a reason code the next page.
    pub async fn quarantine_replay(
        &self,
        context: &RequestContext,
        selection: &ReplaySelection,
        reason: Option<&str>,
    ) -> Result<(Vec<ReplayedRow>, Option<String>), ServiceError> {
        self.run(context, Replay { selection, reason }).await
    }
}
