//! `audit verify`: recomputes one page of the audit's hash chain (at most [`PAGE_ENTRIES`]
//! entries, at most [`WORK_BUDGET`] of work) and says where it first breaks: an entry
//! rewritten (even by the table's owner, even by a type change that no trigger sees), one
//! written without the audit key (the service's own login, forging), one missing (a gap
//! in the numbering), an unchained entry after the chain began, or — given a link of the
//! service's log stream (`head`) — a chain that disagrees with the log or ends before it
//! (deleted or truncated). The cursor carries the last verified link, so the next page
//! needs nothing from the database it is checking.

use login_etl_core::store::{self, typed::typed};
use std::time::{Duration, Instant};

use crate::audit::{Action, ENTRY_COLUMNS, Entry};
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::ChainValue;
use pii_vault_protocol::{Broken, Outcome, VerifyPage};

pub const PAGE_ENTRIES: i64 = 2000;
const WORK_BUDGET: Duration = Duration::from_secs(10);

/// A link: an entry's sequence number and chain value, written `SEQ:CHAIN` (as the
/// service's log lines give them: `seq` and `chain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub seq: i64,
    pub chain: ChainValue,
}

impl Link {
    pub fn parse(text: &str) -> Result<Link, ServiceError> {
        let bad =
            || ServiceError::BadRequest("a link is SEQ:CHAIN (a sequence number, 64 hex digits)".into());
        let (seq, chain) = text.split_once(':').ok_or_else(bad)?;
        let seq = seq.trim().parse().ok().filter(|s: &i64| *s > 0).ok_or_else(bad)?;
        Ok(Link { seq, chain: ChainValue::parse(chain).ok_or_else(bad)? })
    }

    pub fn text(&self) -> String {
        format!("{}:{}", self.seq, self.chain)
    }
}

struct Verify {
    after: Option<String>,
    head: Option<String>,
}

struct Valid {
    after: Option<Link>,
    head: Option<Link>,
}

impl Operation for Verify {
    const ACTION: Action = Action::AuditVerify;
    type Valid = Valid;
    type Output = VerifyPage;

    fn describe(&self) -> Described {
        Described::default()
    }

    fn validate(self) -> Result<Valid, ServiceError> {
        Ok(Valid {
            after: self.after.as_deref().map(Link::parse).transpose()?,
            head: self.head.as_deref().map(Link::parse).transpose()?,
        })
    }

    async fn work(valid: Valid, work: &mut Work<'_>) -> Result<Done<VerifyPage>, ServiceError> {
        let started = Instant::now();
        let key = work.audit_key().await?;
        // Both reads in one bounded transaction (read only: an early return rolls it back).
        let mut client = work.client().await?;
        let tx = store::begin(&mut client).await?;
        // Unchained entries: those of earlier schema versions, and any written since the
        // chain began (only someone bypassing the service, or its checks, writes one).
        let counts = tx
            .query_typed_one(
                "SELECT count(*) FILTER (WHERE seq IS NULL),
                        min(id) FILTER (WHERE seq IS NULL AND id > (SELECT min(id) FROM pii_audit_log.pii_audit_entries WHERE seq IS NOT NULL))
                   FROM pii_audit_log.pii_audit_entries",
                &[],
            )
            .await?;
        let unchained = u64::try_from(counts.get::<_, i64>(0)).unwrap_or_default();
        let mut page = VerifyPage { unchained, verified: 0, last: None, next: None, broken: None };
        if let Some(id) = counts.get::<_, Option<i64>>(1) {
            page.broken = Some(Broken {
                seq: id,
                problem: format!("entry id {id} has no chain but was written after the chain began"),
            });
            return Ok(finished(page));
        }

        let mut prev = valid.after.map_or(ChainValue::GENESIS, |link| link.chain);
        let mut expected = valid.after.map_or(1, |link| link.seq + 1);
        // A page resumes at the number it ended with, not after it: a page (cut by its
        // LIMIT or by the time limit) may end between two entries under one number, and
        // the second must be read. The first under it is the one verified (`seq, id` is
        // the reading order); any other is a copy.
        let resume = valid.after.map_or(1, |link| link.seq);
        let rows = tx
            .query_typed(
                &format!(
                    "SELECT {ENTRY_COLUMNS}, chain FROM pii_audit_log.pii_audit_entries WHERE seq >= $1
                      ORDER BY seq, id LIMIT $2"
                ),
                &[typed(&resume), typed(&(PAGE_ENTRIES + i64::from(valid.after.is_some())))],
            )
            .await?;
        tx.commit().await?;
        let again = rows
            .iter()
            .take_while(|row| {
                let seq = row.try_get::<_, Option<i64>>(0).ok().flatten();
                valid.after.is_some_and(|link| seq == Some(link.seq))
            })
            .count();
        if again > 1 {
            let seq = expected - 1;
            page.broken = Some(Broken { seq, problem: format!("entry {seq} appears more than once") });
            return Ok(finished(page));
        }
        let rows = &rows[again..];
        let full = rows.len() as i64 == PAGE_ENTRIES;
        let mut last = valid.after;
        let mut timed_out = false;
        for row in rows {
            let seq: i64 = row.try_get::<_, Option<i64>>(0).ok().flatten().unwrap_or(expected);
            if seq != expected {
                page.broken = Some(if seq < expected {
                    Broken { seq, problem: format!("entry {seq} appears more than once") }
                } else {
                    Broken {
                        seq: expected,
                        problem: format!("entries {expected} to {} are missing (deleted)", seq - 1),
                    }
                });
                break;
            }
            let entry = match Entry::from_row(row) {
                Ok(Some(entry)) => entry,
                _ => {
                    page.broken = Some(Broken {
                        seq,
                        problem: format!(
                            "entry {seq} cannot be read as the service wrote it (a column was altered)"
                        ),
                    });
                    break;
                }
            };
            let stored = row.try_get::<_, Option<Vec<u8>>>(15).ok().flatten();
            let chain = key.chain_step(&prev, &entry.canonical());
            if stored.as_deref() != Some(chain.as_bytes().as_slice()) {
                page.broken = Some(Broken {
                    seq,
                    problem: format!(
                        "entry {seq} does not match its chain (rewritten, or written without the audit key)"
                    ),
                });
                break;
            }
            if let Some(head) = valid.head.filter(|head| head.seq == seq)
                && head.chain != chain
            {
                page.broken =
                    Some(Broken { seq, problem: format!("entry {seq} is not the one the log recorded") });
                break;
            }
            page.verified += 1;
            prev = chain;
            expected = seq + 1;
            last = Some(Link { seq, chain });
            if started.elapsed() > WORK_BUDGET {
                timed_out = true;
                break;
            }
        }
        page.last = last.map(|link| link.text());
        if page.broken.is_none() && (full || timed_out) {
            page.next = page.last.clone();
        }
        // At the end of the chain, it must have reached what the log recorded.
        if page.broken.is_none()
            && page.next.is_none()
            && let Some(head) = valid.head
            && last.is_none_or(|last| last.seq < head.seq)
        {
            let end = last.map_or(0, |last| last.seq);
            page.broken = Some(Broken {
                seq: end + 1,
                problem: format!(
                    "the log recorded entry {}, the audit ends at {end} (deleted or truncated)",
                    head.seq
                ),
            });
        }
        Ok(finished(page))
    }
}

fn finished(page: VerifyPage) -> Done<VerifyPage> {
    let detail = match &page.broken {
        Some(broken) => format!("broken at {}: {}", broken.seq, broken.problem),
        None => format!("{} entries verified", page.verified),
    };
    Done::new(page, Outcome::Done).detail(detail)
}

impl VaultService {
    /// One page of `audit verify`.
    pub async fn audit_verify(
        &self,
        context: &RequestContext,
        after: Option<String>,
        head: Option<String>,
    ) -> Result<VerifyPage, ServiceError> {
        self.run(context, Verify { after, head }).await
    }
}
