//! `pii-vault audit …`: the audit, one page a request (`--all` follows every page), and
//! `audit verify`, which asks the service to recompute the hash chain page by page and,
//! given the service's log (`--log`) or a link taken from it (`--head`), also catches
//! entries deleted from the end. Everything the service answers is printed through
//! [`crate::escape`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use pii_vault_protocol::{AuditRow, Request, Response, VerifyPage};

use crate::client::{ClientError, VaultClient};
use crate::{CliError, VERIFY_FAILED, escape, print_table};

/// The message of the service's log line for each committed audit entry (its fields `seq`
/// and `chain`); the service's `audit::CHAIN_LOG_MESSAGE`.
const CHAIN_LOG_MESSAGE: &str = "audit chain";

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only entries at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Only entries after this id (the cursor a previous page printed).
    #[arg(long)]
    after: Option<i64>,
    /// Entries per page (1 to 5000; default 1000; a page also stops at 1 MiB).
    #[arg(long)]
    limit: Option<u32>,
    /// Follow every page instead of printing the cursor of the next one.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the audit's hash chain; exit 10 if an entry was rewritten, forged, deleted or truncated.
    Verify {
        /// The service's log (its JSON lines, e.g. exported from CloudWatch Logs): the chain must reach its newest link.
        #[arg(long, conflicts_with = "head")]
        log: Option<PathBuf>,
        /// A link taken from the service's log, SEQ:CHAIN: the chain must reach it and agree.
        #[arg(long)]
        head: Option<String>,
    },
}

pub async fn run(client: &VaultClient, args: AuditArgs, json: bool) -> Result<ExitCode, CliError> {
    match args.command {
        Some(AuditCommand::Verify { log, head }) => {
            let head = match log {
                Some(path) => Some(newest_link(&path)?),
                None => head,
            };
            verify(client, head, json).await
        }
        None => list(client, args, json).await,
    }
}

async fn list(client: &VaultClient, args: AuditArgs, json: bool) -> Result<ExitCode, CliError> {
    let mut entries = Vec::new();
    let mut after = args.after;
    let result = loop {
        let request = Request::Audit { since: args.since, after, limit: args.limit };
        match client.send(&request).await {
            Ok(Response::Audit { entries: page, next }) => {
                entries.extend(page);
                match next {
                    Some(next) if args.all => after = Some(next),
                    next => break Ok(next),
                }
            }
            Ok(_) => break Err(ClientError::BadAnswer { status: 200 }),
            Err(error) => break Err(error),
        }
    };
    // What arrived before a failure is still shown; a refusal alone prints no table.
    if result.is_ok() || !entries.is_empty() {
        print_entries(&entries, json);
    }
    if let Some(next) = result? {
        eprintln!("pii-vault: more entries follow: --after {next} (or --all)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(client: &VaultClient, head: Option<String>, json: bool) -> Result<ExitCode, CliError> {
    let mut total = VerifyPage::empty();
    let mut after = None;
    loop {
        let page =
            match client.send(&Request::AuditVerify { after: after.take(), head: head.clone() }).await? {
                Response::AuditVerify(page) => page,
                _ => return Err(ClientError::BadAnswer { status: 200 }.into()),
            };
        match total.add(page) {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if json {
        println!(
            "{}",
            escape::json(&serde_json::json!({
                "verified": total.verified, "unchained": total.unchained, "last": total.last,
                "head": head, "broken": total.broken,
            }))
        );
    } else {
        match &total.broken {
            Some(broken) => println!(
                "audit verify: BROKEN at {}: {} ({} entries verified before it)",
                broken.seq,
                escape::text(&broken.problem),
                total.verified
            ),
            None => println!(
                "audit verify: {} chained entries verified, the last {}{}; {} older entries carry no chain (not covered)",
                total.verified,
                escape::text(total.last.as_deref().unwrap_or("(none)")),
                head.as_deref()
                    .map(|h| format!(", reaching the log's {}", escape::text(h)))
                    .unwrap_or_default(),
                total.unchained
            ),
        }
    }
    Ok(if total.broken.is_some() { ExitCode::from(VERIFY_FAILED) } else { ExitCode::SUCCESS })
}

/// The newest link (`SEQ:CHAIN`) among the service's log lines in `path`: JSON lines,
/// each possibly after a prefix (CloudWatch's export adds a timestamp).
fn newest_link(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    links(&text)
        .max_by_key(|(seq, _)| *seq)
        .map(|(seq, chain)| format!("{seq}:{chain}"))
        .ok_or_else(|| CliError::Usage(format!("{} holds no `{CHAIN_LOG_MESSAGE}` line", path.display())))
}

/// Every (seq, chain) of an audit-chain log line in `text`.
fn links(text: &str) -> impl Iterator<Item = (i64, String)> + '_ {
    text.lines().filter_map(|line| {
        let value: serde_json::Value = serde_json::from_str(&line[line.find('{')?..]).ok()?;
        let fields = value.get("fields").unwrap_or(&value);
        (fields.get("message")?.as_str()? == CHAIN_LOG_MESSAGE).then_some(())?;
        Some((fields.get("seq")?.as_i64()?, fields.get("chain")?.as_str()?.to_owned()))
    })
}

fn print_entries(entries: &[AuditRow], json: bool) {
    if json {
        println!("{}", escape::json(&serde_json::to_value(entries).unwrap_or_default()));
        return;
    }
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    print_table(
        &["id", "at", "caller", "action", "field", "mask", "target", "outcome", "reason"],
        entries
            .iter()
            .map(|e| {
                let mask = e.blind_index.as_deref().unwrap_or_default();
                vec![
                    e.id.to_string(),
                    e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    e.caller.clone(),
                    e.action.clone(),
                    text(&e.field),
                    if mask.is_empty() {
                        String::new()
                    } else {
                        format!("{}…", mask.chars().take(16).collect::<String>())
                    },
                    text(&e.target),
                    text(&e.outcome),
                    text(&e.reason),
                ]
            })
            .collect(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_link_is_read_from_the_services_json_lines_whatever_precedes_them() {
        let log = r#"START RequestId: 1
{"timestamp":"t","level":"INFO","fields":{"message":"audit chain","seq":2,"chain":"bb"}}
2026-12-06T12:00:00Z {"timestamp":"t","level":"INFO","fields":{"message":"audit chain","seq":7,"chain":"cc"}}
{"timestamp":"t","level":"INFO","fields":{"message":"other","seq":9,"chain":"dd"}}
not json {
{"timestamp":"t","level":"INFO","fields":{"message":"audit chain","seq":5,"chain":"aa"}}"#;
        assert_eq!(links(log).max_by_key(|(seq, _)| *seq), Some((7, "cc".to_owned())));
        assert_eq!(links("nothing here").count(), 0);
    }
}
