//! `pii-vault`: the staff tool for finding and recovering PII through the vault service.
//! See `pii-vault --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
mod audit;
mod client;
mod escape;
mod quarantine;

use client::{ClientError, VaultClient};
use login_etl_core::config;
use login_etl_core::crypto::PiiField;
use login_etl_core::error::report;
use login_etl_core::event::text::{ReasonError, audit_reason};
use pii_vault_protocol::{ErrorCode, ForgetTarget, Plaintext, Request, Response, RevealTarget};
use quarantine::QuarantineCommand;

/// The exit codes, as `pii-vault --help` lists them; [`exit_code`] maps every error code
/// of the service to one of them.
const EXIT_CODES: [(u8, &str); 11] = [
    (0, "done"),
    (1, "other error (vault ciphertext not authentic, rotation race, a replayed row left unsent, …)"),
    (2, "usage error, including a missing or unusable --reason"),
    (3, "unknown: no row, vault entry or quarantined message for that mask, value or id"),
    (4, "the value or quarantined body was erased (by `forget`, or by the retention's purge)"),
    (5, "not allowed for this caller, or no credentials to sign with"),
    (6, "KMS refused or unreachable (key policy, encryption context, network)"),
    (7, "the service, its database, its queues or its audit unreachable"),
    (
        8,
        "a daily budget is spent: yours (reveals, finds, forgets, shows), the staff role's, or your erasure quota",
    ),
    (9, "the service lacks the setting this needs (REPLAY_QUEUE_URL, DEAD_LETTER_QUEUE_URL)"),
    (VERIFY_FAILED, "`audit verify`: an audit entry was rewritten, forged, deleted or truncated"),
];

/// `audit verify` found the chain broken.
const VERIFY_FAILED: u8 = 10;

/// The exit code of an error code the service answered with.
fn exit_code(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::BadReason | ErrorCode::BadRequest => 2,
        ErrorCode::Unknown => 3,
        ErrorCode::Erased => 4,
        ErrorCode::NoIdentity | ErrorCode::NotAllowed => 5,
        ErrorCode::Keys => 6,
        ErrorCode::Database | ErrorCode::AuditUnavailable | ErrorCode::Queue => 7,
        ErrorCode::BudgetExhausted => 8,
        ErrorCode::NotConfigured => 9,
        ErrorCode::Unauthentic | ErrorCode::RotationRace | ErrorCode::Other => 1,
    }
}

/// `--help`'s epilogue: the exit codes, each with the service's error codes that give it.
fn after_help() -> String {
    let mut text = String::from("Exit codes:\n");
    for (exit, meaning) in EXIT_CODES {
        let codes: Vec<&str> =
            ErrorCode::ALL.into_iter().filter(|c| exit_code(*c) == exit).map(ErrorCode::as_str).collect();
        text += &format!("  {exit}  {meaning}");
        if !codes.is_empty() {
            text += &format!(" [{}]", codes.join(", "));
        }
        text.push('\n');
    }
    text + "
Every operation is recorded in the audit by the vault service before it runs; nothing is
answered otherwise. Environment: PII_VAULT_URL (the service's function URL), AWS_REGION
and the AWS credentials that sign the request (the SDK's default chain): the caller the
audit records is the IAM principal those credentials prove."
}

#[derive(Parser)]
#[command(
    name = "pii-vault",
    about = "Find and recover the PII behind login-etl's masks; every act is audited first",
    after_help = after_help()
)]
struct Cli {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List user_logins rows whose ip or device id is this plaintext (audited: it tests a guess).
    Find(FindArgs),
    /// Decrypt the original ip and device id behind masks (audited; needs --reason).
    Reveal(RevealArgs),
    /// Erase one value (spends a reveal unit; answers `forgotten` whether or not it was there), or
    /// every value of a user (--user-id; spends the erasure quota), for good; audited; needs --reason.
    Forget(ForgetArgs),
    /// Who did what, when and why, one page at a time; `audit verify` checks the hash chain.
    Audit(audit::AuditArgs),
    /// Key administration (the key administrator only).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The quarantine: messages the function rejected, and what reached the dead-letter queue (staff).
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the index keys and the first data key where missing (idempotent).
    InitKeys,
    /// Create a new data-key version; the function seals new values with it from its next cold start.
    RotateKey,
    /// Re-encrypt vault rows and quarantined bodies of older data-key versions under the newest (resumable);
    /// then convert erasures made before schema version 10 (their masks become tokens).
    Reencrypt {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: i64,
    },
    /// Delete the vault values no login has carried for VAULT_RETENTION_DAYS (the service's setting;
    /// unset: only values in no login at all), batch by batch, each batch an audited request; an
    /// interrupted run resumes where the last batch stopped.
    Expire {
        /// Vault rows per batch (each its own short transaction).
        #[arg(long, default_value_t = 1000)]
        batch_size: i64,
    },
}

#[derive(Args)]
struct FindArgs {
    #[command(flatten)]
    target: PlainTarget,
    /// Why (recorded in the audit; optional for find).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct PlainTarget {
    /// An IP address (any spelling of it).
    #[arg(long)]
    ip: Option<String>,
    /// A device id.
    #[arg(long)]
    device_id: Option<String>,
}

#[derive(Args)]
struct RevealArgs {
    #[command(flatten)]
    target: RevealTargetArgs,
    /// Why (recorded in the audit; at least 8 letters or digits).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct RevealTargetArgs {
    /// A masked_ip value from user_logins.
    #[arg(long)]
    masked_ip: Option<String>,
    /// A masked_device_id value from user_logins.
    #[arg(long)]
    masked_device_id: Option<String>,
    /// Every ip and device id of this user's rows.
    #[arg(long)]
    user_id: Option<String>,
    /// The ip and device id of this SQS message's row.
    #[arg(long)]
    message_id: Option<String>,
}

#[derive(Args)]
struct ForgetArgs {
    #[command(flatten)]
    target: ForgetTargetArgs,
    /// Why (recorded in the audit; at least 8 letters or digits).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ForgetTargetArgs {
    /// An IP address (any spelling of it).
    #[arg(long)]
    ip: Option<String>,
    /// A masked_ip value from user_logins.
    #[arg(long)]
    masked_ip: Option<String>,
    /// A device id.
    #[arg(long)]
    device_id: Option<String>,
    /// A masked_device_id value from user_logins.
    #[arg(long)]
    masked_device_id: Option<String>,
    /// Every ip and device id of this user's rows (spends the erasure quota, not the
    /// reveal budget; a value other users share is erased for them too).
    #[arg(long)]
    user_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    /// Refused here, before contacting anything.
    #[error(transparent)]
    Reason(#[from] ReasonError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("configuration")]
    Config(#[from] config::ConfigError),
    /// A bad argument the CLI itself reads (a log file).
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Reason(_) => exit_code(ErrorCode::BadReason),
            CliError::Client(ClientError::Service { code, .. }) => exit_code(*code),
            CliError::Client(ClientError::Credentials(_) | ClientError::Signing(_)) => 5,
            CliError::Client(ClientError::Url(_)) => 2,
            CliError::Client(
                ClientError::Unreachable { .. }
                | ClientError::BadAnswer { .. }
                | ClientError::Redirected { .. }
                | ClientError::TooLarge,
            ) => 7,
            CliError::Config(_) | CliError::Usage(_) => 2,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // A closed pipe ends the tool as it ends `cat`, instead of a panic in `println!`.
    sigpipe::reset();
    let cli = Cli::parse();
    let json = cli.json;
    match cli.command {
        Command::Quarantine(command) => return exit_with(Box::pin(run_quarantine(command, json)).await),
        Command::Admin(AdminCommand::Expire { batch_size }) => {
            return exit_with(Box::pin(run_expire(batch_size, json)).await);
        }
        Command::Audit(args) => return exit_with(Box::pin(run_audit(args, json)).await),
        _ => {}
    }
    let request = request_of(cli.command);
    exit_with(Box::pin(run(request)).await.map(|response| {
        print(&response, json);
        exit_of(&response)
    }))
}

fn request_of(command: Command) -> Request {
    let field_value = |ip: Option<String>, device_id: Option<String>| match (ip, device_id) {
        (Some(ip), _) => (PiiField::Ip, ip),
        (_, Some(id)) => (PiiField::DeviceId, id),
        _ => unreachable!("clap requires one target"),
    };
    match command {
        Command::Find(FindArgs { target, reason }) => {
            let (field, value) = field_value(target.ip, target.device_id);
            Request::Find { field, value: Plaintext::new(value), reason }
        }
        Command::Reveal(RevealArgs { target: t, reason }) => {
            let target = match (t.masked_ip, t.masked_device_id, t.user_id, t.message_id) {
                (Some(mask), ..) => RevealTarget::Mask { field: PiiField::Ip, mask },
                (_, Some(mask), ..) => RevealTarget::Mask { field: PiiField::DeviceId, mask },
                (_, _, Some(user), _) => RevealTarget::UserId(user),
                (.., Some(id)) => RevealTarget::MessageId(id),
                _ => unreachable!("clap requires one target"),
            };
            Request::Reveal { target, reason }
        }
        Command::Forget(ForgetArgs { target: ForgetTargetArgs { user_id: Some(user_id), .. }, reason }) => {
            Request::ForgetUser { user_id, reason }
        }
        Command::Forget(ForgetArgs { target: t, reason }) => {
            let (field, target) = match (t.ip, t.masked_ip, t.device_id, t.masked_device_id) {
                (_, Some(mask), ..) => (PiiField::Ip, ForgetTarget::Mask(mask)),
                (.., Some(mask)) => (PiiField::DeviceId, ForgetTarget::Mask(mask)),
                (Some(ip), ..) => (PiiField::Ip, ForgetTarget::Plaintext(Plaintext::new(ip))),
                (_, _, Some(id), _) => (PiiField::DeviceId, ForgetTarget::Plaintext(Plaintext::new(id))),
                _ => unreachable!("clap requires one target"),
            };
            Request::Forget { field, target, reason }
        }
        Command::Admin(AdminCommand::InitKeys) => Request::InitKeys,
        Command::Admin(AdminCommand::RotateKey) => Request::RotateKey,
        Command::Admin(AdminCommand::Reencrypt { batch_size }) => Request::Reencrypt { batch_size },
        Command::Quarantine(_) | Command::Audit(_) | Command::Admin(AdminCommand::Expire { .. }) => {
            unreachable!("main runs these commands")
        }
    }
}

/// Sends the request to the vault service, signed with the caller's AWS credentials.
async fn run(request: Request) -> Result<Response, CliError> {
    // Refuse an unusable reason before contacting anything.
    if let Request::Reveal { reason, .. }
    | Request::Forget { reason, .. }
    | Request::ForgetUser { reason, .. } = &request
    {
        audit_reason(reason.as_deref())?;
    }
    Ok(connect().await?.send(&request).await?)
}

/// A client of the service at `PII_VAULT_URL`, signing with the SDK's default credentials.
async fn connect() -> Result<VaultClient, CliError> {
    let url = config::required_env("PII_VAULT_URL")?;
    let timeout = request_timeout(std::env::var("PII_VAULT_TIMEOUT_SECONDS").ok().as_deref())?;
    Ok(VaultClient::new(&url, config::aws_sdk_config().await?, timeout)?)
}

/// `PII_VAULT_TIMEOUT_SECONDS`: 1 to 300, else the default.
fn request_timeout(value: Option<&str>) -> Result<std::time::Duration, config::ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(client::DEFAULT_TIMEOUT),
        Some(text) => {
            text.parse().ok().filter(|s| (1..=300).contains(s)).map(std::time::Duration::from_secs).ok_or(
                config::ConfigError::Malformed {
                    var: "PII_VAULT_TIMEOUT_SECONDS",
                    reason: "expected whole seconds from 1 to 300".into(),
                },
            )
        }
    }
}

/// A quarantine command: its reason checked here first, then its requests.
async fn run_quarantine(command: QuarantineCommand, json: bool) -> Result<ExitCode, CliError> {
    if let Some(reason) = command.reason() {
        audit_reason(reason)?;
    }
    quarantine::run(&connect().await?, command, json).await
}

/// `admin expire`: batches until the pass is done, each its own request (and audit entry).
/// What was done before a failure is said before the error.
async fn run_expire(batch_size: i64, json: bool) -> Result<ExitCode, CliError> {
    let client = connect().await?;
    let (mut expired, mut scanned, mut batches) = (0u64, 0u64, 0u64);
    let mut retention = None;
    let result = loop {
        match client.send(&Request::Expire { batch_size }).await {
            Ok(Response::Expire { expired: e, scanned: s, done, retention_days }) => {
                (expired, scanned, batches, retention) =
                    (expired + e, scanned + s, batches + 1, retention_days);
                if done {
                    break Ok(());
                }
            }
            Ok(_) => break Err(ClientError::BadAnswer { status: 200 }),
            Err(error) => break Err(error),
        }
    };
    let kept = retention.map_or_else(|| "forever".to_owned(), |days| format!("{days} days"));
    if json {
        println!(
            "{}",
            serde_json::json!({"expired": expired, "scanned": scanned, "batches": batches,
                               "retention_days": retention, "done": result.is_ok()})
        );
    } else {
        println!(
            "expire: {expired} of {scanned} vault value(s) expired in {batches} batch(es) (retention {kept}){}",
            if result.is_ok() { "" } else { "; stopped: run it again to resume" }
        );
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// A command's exit, its error said once on stderr.
fn exit_with(result: Result<ExitCode, CliError>) -> ExitCode {
    result.unwrap_or_else(|error| {
        eprintln!("pii-vault: {}", escape::text(&report(&error)));
        ExitCode::from(error.exit_code())
    })
}

/// An audit command: its pages, or its verification.
async fn run_audit(args: audit::AuditArgs, json: bool) -> Result<ExitCode, CliError> {
    audit::run(&connect().await?, args, json).await
}

/// 3 when a value was unknown, 4 when one was erased, else 0.
fn exit_of(response: &Response) -> ExitCode {
    use pii_vault_protocol::Outcome;
    let outcomes: Vec<Outcome> = match response {
        Response::Reveal { values } => values.iter().map(|v| v.outcome).collect(),
        Response::Find { rows, .. } if rows.is_empty() => vec![Outcome::Unknown],
        Response::Forget { outcome, .. } => vec![*outcome],
        _ => vec![],
    };
    if outcomes.contains(&Outcome::Erased) && !matches!(response, Response::Forget { .. }) {
        ExitCode::from(4)
    } else if outcomes.contains(&Outcome::Unknown) {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn print(response: &Response, json: bool) {
    match response {
        Response::Find { field, mask, rows, total } => {
            if json {
                println!(
                    "{}",
                    escape::json(
                        &serde_json::json!({ "field": field, "mask": mask, "rows": rows, "total": total })
                    )
                );
                return;
            }
            let shown = if *total > rows.len() as u64 {
                format!("{total} row(s), the oldest {} shown", rows.len())
            } else {
                format!("{} row(s)", rows.len())
            };
            println!("masked_{} = {}: {shown}", field.as_str(), escape::text(mask));
            let text = |v: &Option<String>| v.clone().unwrap_or_default();
            print_table(
                &["sqs_message_id", "user_id", "device_type", "locale", "app_version", "create_date"],
                rows.iter()
                    .map(|r| {
                        vec![
                            text(&r.sqs_message_id),
                            text(&r.user_id),
                            text(&r.device_type),
                            text(&r.locale),
                            text(&r.app_version_raw),
                            r.create_date.map(|d| d.to_string()).unwrap_or_default(),
                        ]
                    })
                    .collect(),
            );
        }
        Response::Reveal { values } => {
            if json {
                let items: Vec<_> = values
                    .iter()
                    .map(|v| {
                        serde_json::json!({"field": v.field, "mask": v.mask, "outcome": v.outcome,
                                           "value": v.value.as_ref().map(Plaintext::expose)})
                    })
                    .collect();
                println!("{}", escape::json(&serde_json::Value::from(items)));
                return;
            }
            print_table(
                &["field", "mask", "value"],
                values
                    .iter()
                    .map(|v| {
                        let value = match &v.value {
                            Some(value) => value.expose().to_owned(),
                            None => format!("({})", v.outcome.as_str()),
                        };
                        vec![v.field.to_string(), v.mask.clone(), value]
                    })
                    .collect(),
            );
        }
        Response::Forget { field, outcome } => {
            if json {
                println!("{}", escape::json(&serde_json::json!({"field": field, "outcome": outcome})));
            } else {
                println!(
                    "{}: {} (if it was ever vaulted, it can no longer be revealed)",
                    field.as_str(),
                    outcome.as_str()
                );
            }
        }
        Response::ForgetUser { user_id, erased, shared } => {
            if json {
                println!(
                    "{}",
                    escape::json(
                        &serde_json::json!({"user_id": user_id, "erased": erased, "shared": shared})
                    )
                );
            } else {
                println!(
                    "user {}: {erased} value(s) erased, {shared} of them shared with other users (erased for them too)",
                    escape::text(user_id)
                );
            }
        }
        Response::InitKeys { created } => {
            if json {
                println!("{}", escape::json(&serde_json::json!({ "created": created })));
            } else if created.is_empty() {
                println!("init-keys: every key exists already");
            } else {
                println!("init-keys: created {}", escape::text(&created.join(", ")));
            }
        }
        Response::RotateKey { version } => {
            if json {
                println!("{}", serde_json::json!({ "version": version }));
            } else {
                println!(
                    "data key version {version} created; run `pii-vault admin reencrypt` once the function's instances have restarted"
                );
            }
        }
        Response::Reencrypt { reencrypted, quarantine_reencrypted } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "reencrypted": reencrypted, "quarantine_reencrypted": quarantine_reencrypted })
                );
            } else {
                println!(
                    "reencrypt: {reencrypted} vault rows and {quarantine_reencrypted} quarantined bodies re-encrypted under the newest data key"
                );
            }
        }
        // Printed by `quarantine::run`, `audit::run` and `run_expire`, which send these.
        Response::Expire { .. }
        | Response::Audit { .. }
        | Response::AuditVerify(_)
        | Response::QuarantineList { .. }
        | Response::QuarantineShow { .. }
        | Response::QuarantineReplay { .. }
        | Response::QuarantineImportDlq { .. }
        | Response::QuarantinePurge { .. } => {
            println!("{}", escape::json(&serde_json::to_value(response).unwrap_or_default()))
        }
    }
}

/// A table; every cell through [`escape::text`] (service strings may hold text from outside).
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|cell| escape::text(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        line(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_a_documented_exit_code() {
        let help = after_help();
        for code in ErrorCode::ALL {
            let exit = exit_code(code);
            assert!(EXIT_CODES.iter().any(|(documented, _)| *documented == exit), "{code}: {exit}");
            assert!(help.contains(code.as_str()), "{code} in --help");
        }
        assert!(help.contains(
            "  8  a daily budget is spent: yours (reveals, finds, forgets, shows), the staff role's, or your erasure quota [budget_exhausted]"
        ));
    }
}
