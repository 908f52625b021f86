//! `pii-vault quarantine …`: the quarantine's commands. `list` and `replay --reason-code`
//! follow the service's pages (each page a request of its own, on the record); `replay
//! ID…` sends at most 100 ids a request. Everything the service answers is printed through
//! [`crate::escape`]: bodies, ids and codes are text from outside.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use pii_vault_protocol::{
    Outcome, Plaintext, QuarantinedMessage, ReplayOutcome, ReplaySelection, ReplayedRow, Request, Response,
};

use crate::client::{ClientError, VaultClient};
use crate::{CliError, escape, print_table};

/// Rows the service answers per page at most (`quarantine list`).
const MAX_PAGE_ROWS: u32 = 1000;
/// Ids per replay request at most.
const MAX_REPLAY_IDS: usize = 100;

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined messages, oldest first: ids, reasons, dates, what became of each; no body, no PII.
    List {
        /// Only rows quarantined at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only rows with this reason code (e.g. invalid_app_version, dead_lettered).
        #[arg(long)]
        reason_code: Option<String>,
        /// Stop after this many rows (default: every page).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Print one quarantined body (audited; spends 2 units of the daily budget; needs --reason).
    Show(ShowArgs),
    /// Send quarantined bodies back for ingestion, keeping their message id and date (audited; needs --reason).
    Replay(ReplayArgs),
    /// Move what reached the dead-letter queue into the quarantine, sealed, and delete it from the queue.
    ImportDlq {
        /// At most this many messages (1 to 500).
        #[arg(long, default_value_t = 100)]
        max: u32,
    },
    /// Erase the bodies quarantined longer than QUARANTINE_RETENTION_DAYS (the service's setting).
    Purge,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The message id (for a replay, the original message's).
    id: String,
    /// That attempt (0: as first seen; n: the n-th replay). Default: the newest.
    #[arg(long)]
    attempt: Option<i64>,
    /// Why (recorded in the audit; at least 8 visible characters).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Message ids: the newest attempt of each is replayed.
    #[arg(required_unless_present = "reason_code", conflicts_with = "reason_code")]
    ids: Vec<String>,
    /// Every row with this reason code instead.
    #[arg(long)]
    reason_code: Option<String>,
    /// With --reason-code: only rows quarantined at or after this time (RFC 3339).
    #[arg(long, requires = "reason_code")]
    since: Option<String>,
    /// Why (recorded in the audit; at least 8 visible characters).
    #[arg(long)]
    reason: Option<String>,
}

impl QuarantineCommand {
    /// The reason to check before contacting anything, for the commands that need one.
    pub fn reason(&self) -> Option<Option<&str>> {
        match self {
            QuarantineCommand::Show(args) => Some(args.reason.as_deref()),
            QuarantineCommand::Replay(args) => Some(args.reason.as_deref()),
            _ => None,
        }
    }
}

/// Runs the command (as many requests as its pages need) and prints the answer.
pub async fn run(client: &VaultClient, command: QuarantineCommand, json: bool) -> Result<ExitCode, CliError> {
    match command {
        QuarantineCommand::List { since, reason_code, limit } => {
            let mut rows = Vec::new();
            let mut after = None;
            let result = loop {
                let wanted = limit.map_or(MAX_PAGE_ROWS, |l| l.saturating_sub(rows.len() as u32));
                if wanted == 0 {
                    break Ok(());
                }
                let request = Request::QuarantineList {
                    since: since.clone(),
                    reason_code: reason_code.clone(),
                    after: after.take(),
                    limit: Some(wanted.min(MAX_PAGE_ROWS)),
                };
                match client.send(&request).await {
                    Ok(Response::QuarantineList { rows: page, next }) => {
                        rows.extend(page);
                        match next {
                            Some(next) => after = Some(next),
                            None => break Ok(()),
                        }
                    }
                    Ok(_) => break Err(ClientError::BadAnswer { status: 200 }),
                    Err(error) => break Err(error),
                }
            };
            // What arrived before a failure is still shown; a refusal alone prints no table.
            if result.is_ok() || !rows.is_empty() {
                print_list(&rows, json);
            }
            result?;
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCommand::Show(ShowArgs { id, attempt, reason }) => {
            let answer = client.send(&Request::QuarantineShow { message_id: id, attempt, reason }).await?;
            let Response::QuarantineShow { message_id, attempt, outcome, body } = answer else {
                return Err(ClientError::BadAnswer { status: 200 }.into());
            };
            print_show(&message_id, attempt, outcome, body.as_ref(), json);
            Ok(match outcome {
                Outcome::Unknown => ExitCode::from(3),
                Outcome::Erased => ExitCode::from(4),
                _ => ExitCode::SUCCESS,
            })
        }
        QuarantineCommand::Replay(ReplayArgs { ids, reason_code, since, reason }) => {
            let mut rows = Vec::new();
            let result = match reason_code {
                Some(code) => {
                    let mut after = None;
                    loop {
                        let selection = ReplaySelection::ReasonCode {
                            code: code.clone(),
                            since: since.clone(),
                            after: after.take(),
                        };
                        match replay_page(client, selection, &reason).await {
                            Ok((page, next)) => {
                                rows.extend(page);
                                match next {
                                    Some(next) => after = Some(next),
                                    None => break Ok(()),
                                }
                            }
                            Err(error) => break Err(error),
                        }
                    }
                }
                None => {
                    let mut result = Ok(());
                    for chunk in ids.chunks(MAX_REPLAY_IDS) {
                        match replay_page(client, ReplaySelection::MessageIds(chunk.to_vec()), &reason).await
                        {
                            Ok((page, _)) => rows.extend(page),
                            Err(error) => {
                                result = Err(error);
                                break;
                            }
                        }
                    }
                    result
                }
            };
            if result.is_ok() || !rows.is_empty() {
                print_replay(&rows, json);
            }
            result?;
            Ok(replay_exit(&rows))
        }
        QuarantineCommand::ImportDlq { max } => {
            let answer = client.send(&Request::QuarantineImportDlq { max: Some(max) }).await?;
            let Response::QuarantineImportDlq { imported, already_quarantined, left_on_queue, more } = answer
            else {
                return Err(ClientError::BadAnswer { status: 200 }.into());
            };
            if json {
                println!(
                    "{}",
                    escape::json(
                        &serde_json::json!({"imported": imported, "already_quarantined": already_quarantined,
                                                     "left_on_queue": left_on_queue, "more": more})
                    )
                );
            } else {
                println!(
                    "import-dlq: {imported} imported, {already_quarantined} already quarantined, {left_on_queue} left on the queue{}",
                    if more { "; the queue may hold more: run it again" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCommand::Purge => {
            let answer = client.send(&Request::QuarantinePurge).await?;
            let Response::QuarantinePurge { purged, retention_days, more } = answer else {
                return Err(ClientError::BadAnswer { status: 200 }.into());
            };
            if json {
                println!(
                    "{}",
                    escape::json(
                        &serde_json::json!({"purged": purged, "retention_days": retention_days, "more": more})
                    )
                );
            } else {
                println!(
                    "purge: {purged} bodies quarantined more than {retention_days} days ago erased{}",
                    if more { "; more are left: run it again" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn replay_page(
    client: &VaultClient,
    selection: ReplaySelection,
    reason: &Option<String>,
) -> Result<(Vec<ReplayedRow>, Option<String>), ClientError> {
    match client.send(&Request::QuarantineReplay { selection, reason: reason.clone() }).await? {
        Response::QuarantineReplay { rows, next } => Ok((rows, next)),
        _ => Err(ClientError::BadAnswer { status: 200 }),
    }
}

/// 0 when every row was sent (now or before); 4 if a body was erased; 3 if an id is
/// unknown; 1 for any other row left unsent (no SentTimestamp, busy, out of time, …).
fn replay_exit(rows: &[ReplayedRow]) -> ExitCode {
    let has = |outcome| rows.iter().any(|r| r.outcome == outcome);
    if has(ReplayOutcome::Erased) {
        ExitCode::from(4)
    } else if has(ReplayOutcome::Unknown) {
        ExitCode::from(3)
    } else if rows
        .iter()
        .any(|r| !matches!(r.outcome, ReplayOutcome::Replayed | ReplayOutcome::AlreadyReplayed))
    {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

fn print_list(rows: &[QuarantinedMessage], json: bool) {
    if json {
        println!("{}", escape::json(&serde_json::to_value(rows).unwrap_or_default()));
        return;
    }
    let status = |r: &QuarantinedMessage| match (&r.erased_by, r.replay_attempt) {
        (Some(by), _) => format!("erased ({by})"),
        (None, Some(attempt)) => format!("replayed as attempt {attempt}"),
        (None, None) => "pending".to_owned(),
    };
    print_table(
        &[
            "message_id",
            "attempt",
            "source",
            "reason_code",
            "field",
            "receives",
            "sent_at",
            "quarantined_at",
            "status",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    r.message_id.clone(),
                    r.attempt.to_string(),
                    r.source.clone(),
                    r.reason_code.clone(),
                    r.field.clone().unwrap_or_default(),
                    r.receive_count.map(|n| n.to_string()).unwrap_or_default(),
                    time(r.sent_at),
                    time(Some(r.quarantined_at)),
                    status(r),
                ]
            })
            .collect(),
    );
    println!("{} row(s)", rows.len());
}

fn print_show(
    message_id: &str,
    attempt: Option<i32>,
    outcome: Outcome,
    body: Option<&Plaintext>,
    json: bool,
) {
    if json {
        let value = serde_json::json!({"message_id": message_id, "attempt": attempt, "outcome": outcome,
                                       "body": body.map(Plaintext::expose)});
        println!("{}", escape::json(&value));
        return;
    }
    let attempt = attempt.map(|a| format!(" attempt {a}")).unwrap_or_default();
    match body {
        Some(body) => {
            eprintln!(
                "message {}{attempt} (control and invisible characters shown as \\u{{…}}):",
                escape::text(message_id)
            );
            println!("{}", escape::text(body.expose()));
        }
        None => eprintln!("message {}{attempt}: {}", escape::text(message_id), outcome.as_str()),
    }
}

fn print_replay(rows: &[ReplayedRow], json: bool) {
    if json {
        println!("{}", escape::json(&serde_json::to_value(rows).unwrap_or_default()));
        return;
    }
    print_table(
        &["message_id", "attempt", "outcome", "replay_attempt"],
        rows.iter()
            .map(|r| {
                vec![
                    r.message_id.clone(),
                    r.attempt.map(|a| a.to_string()).unwrap_or_default(),
                    r.outcome.as_str().to_owned(),
                    r.replay_attempt.map(|a| a.to_string()).unwrap_or_default(),
                ]
            })
            .collect(),
    );
    let sent = rows.iter().filter(|r| r.outcome == ReplayOutcome::Replayed).count();
    println!("{sent} of {} row(s) sent to the replay queue", rows.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(outcome: ReplayOutcome) -> ReplayedRow {
        ReplayedRow { message_id: "m".into(), attempt: Some(0), outcome, replay_attempt: None }
    }

    #[test]
    fn a_replay_exits_zero_only_when_every_row_was_sent() {
        use ReplayOutcome::*;
        let exit = |outcomes: &[ReplayOutcome]| {
            let rows: Vec<_> = outcomes.iter().map(|o| row(*o)).collect();
            format!("{:?}", replay_exit(&rows))
        };
        assert_eq!(exit(&[Replayed, AlreadyReplayed]), format!("{:?}", ExitCode::SUCCESS));
        assert_eq!(exit(&[Replayed, Unknown, Erased]), format!("{:?}", ExitCode::from(4)));
        assert_eq!(exit(&[Replayed, Unknown]), format!("{:?}", ExitCode::from(3)));
        for other in [NoSentAt, EmptyBody, Unsendable, AttemptsExhausted, Busy, NotAttempted, Other] {
            assert_eq!(exit(&[Replayed, other]), format!("{:?}", ExitCode::from(1)), "{other:?}");
        }
    }
}
