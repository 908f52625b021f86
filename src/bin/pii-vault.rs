//! `pii-vault`: the staff tool for finding and recovering PII. See `pii-vault --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use login_etl::config::{self, database};
use login_etl::crypto::{BlindIndex, PiiField};
use login_etl::error::report;
use login_etl::event::{ClientIp, DeviceId};
use login_etl::keys::{self, DataKeyCache, Kms};
use login_etl::recovery::{self, RecoveryError};

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  other error (vault ciphertext not authentic, rotation race, …)
  2  usage error, including a missing --reason
  3  unknown: no row or vault entry for that mask, value or user id
  4  the value was erased (crypto-shredded) by `forget`
  5  permission denied for the database role
  6  KMS refused or unreachable (key policy, encryption context, network)
  7  database unreachable or failing

Environment: VAULT_DATABASE_URL (a login in role login_etl_vault_reader), else
DATABASE_URL; KMS as for the function (AWS_REGION, AWS_ENDPOINT_URL, credentials).
rotate-key and reencrypt need the schema owner (the role that ran the migrations).";

#[derive(Parser)]
#[command(
    name = "pii-vault",
    about = "Find and recover the PII behind login-etl's masks; every reveal and erasure is audited",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Database URL (default: VAULT_DATABASE_URL, else DATABASE_URL).
    #[arg(long, global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List user_logins rows whose ip or device id is this plaintext (no decryption, not audited).
    Find(PlainTarget),
    /// Decrypt the original ip and device id behind masks (audited; needs --reason).
    Reveal(RevealArgs),
    /// Erase one value for good (crypto-shred); masks stay; audited; needs --reason.
    Forget(ForgetArgs),
    /// Who revealed or erased what, when and why.
    Audit {
        /// Only entries at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
    },
    /// Create a new data-key version; the function seals new values with it from its next cold start.
    RotateKey,
    /// Re-encrypt vault rows of older data-key versions under the newest (resumable).
    Reencrypt {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: i64,
    },
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
    target: RevealTarget,
    #[command(flatten)]
    why: Why,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct RevealTarget {
    /// A masked_ip value from user_logins.
    #[arg(long)]
    masked_ip: Option<String>,
    /// A masked_device_id value from user_logins.
    #[arg(long)]
    masked_device_id: Option<String>,
    /// Every ip and device id of this user's rows.
    #[arg(long)]
    user_id: Option<String>,
}

#[derive(Args)]
struct ForgetArgs {
    #[command(flatten)]
    target: ForgetTarget,
    #[command(flatten)]
    why: Why,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ForgetTarget {
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
}

#[derive(Args)]
struct Why {
    /// Why (recorded in the audit; required).
    #[arg(long)]
    reason: Option<String>,
    /// Who asks (recorded in the audit; default: $USER, else the database user).
    #[arg(long, env = "PII_VAULT_ACTOR")]
    actor: Option<String>,
}

impl Why {
    fn actor(&self) -> String {
        self.actor.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_default()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.downcast_ref::<RecoveryError>().map_or(1, RecoveryError::exit_code);
            eprintln!("pii-vault: {}", report(error.as_ref()));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Refuse before connecting: nothing happens without a reason.
    if let Command::Reveal(RevealArgs { why, .. }) | Command::Forget(ForgetArgs { why, .. }) = &cli.command {
        recovery::require_reason(why.reason.as_deref())?;
    }
    let url = cli
        .database_url
        .clone()
        .or_else(|| std::env::var("VAULT_DATABASE_URL").ok())
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .context("set VAULT_DATABASE_URL (or DATABASE_URL, or pass --database-url)")?;
    let db_config = database::parse_database_url(&url).context("the database URL is malformed")?;
    let mut db = database::connect(&db_config)
        .await
        .map_err(RecoveryError::Db)
        .context("cannot connect to the database")?;
    // Unwrapping uses the KMS key id stored with each wrapped key; only a new key needs
    // KMS_KEY_ID, and then it is required by name.
    let kms_key_id = match cli.command {
        Command::RotateKey => config::required_env("KMS_KEY_ID").map_err(RecoveryError::from)?,
        _ => String::new(),
    };
    let kms = Kms::new(aws_sdk_kms::Client::new(&config::aws_sdk_config().await?), kms_key_id);
    let mut data_keys = DataKeyCache::new();

    match cli.command {
        Command::Find(target) => {
            let indexer = keys::load_indexer(&db, &kms).await.map_err(RecoveryError::from)?;
            let (field, normalized) = normalize_plain(target.ip, target.device_id)?;
            let (index, rows) = recovery::find(&db, &indexer, field, &normalized).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "field": field.as_str(), "mask": index.as_str(), "rows": rows })
                );
            } else {
                println!("masked_{field} = {index}: {} row(s)", rows.len());
                print_table(
                    &["sqs_message_id", "user_id", "device_type", "locale", "app_version", "create_date"],
                    rows.iter()
                        .map(|r| {
                            vec![
                                r.sqs_message_id.clone().unwrap_or_default(),
                                r.user_id.clone().unwrap_or_default(),
                                r.device_type.clone().unwrap_or_default(),
                                r.locale.clone().unwrap_or_default(),
                                r.app_version_raw.clone().unwrap_or_default(),
                                r.create_date.map(|d| d.to_string()).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                );
            }
            if rows.is_empty() {
                return Err(RecoveryError::Unknown(field.to_string()).into());
            }
        }
        Command::Reveal(args) => {
            let reason = recovery::require_reason(args.why.reason.as_deref())?.to_owned();
            let actor = args.why.actor();
            let targets = match (args.target.masked_ip, args.target.masked_device_id, args.target.user_id) {
                (Some(mask), _, _) => vec![(PiiField::Ip, parse_mask(&mask)?)],
                (_, Some(mask), _) => vec![(PiiField::DeviceId, parse_mask(&mask)?)],
                (_, _, Some(user)) => recovery::masks_of_user(&db, &user).await?,
                _ => unreachable!("clap requires one target"),
            };
            let mut revealed = Vec::new();
            for (field, index) in &targets {
                revealed
                    .push(recovery::reveal(&db, &kms, &mut data_keys, *field, index, &reason, &actor).await?);
            }
            if cli.json {
                let items: Vec<_> = revealed
                    .iter()
                    .map(|r| serde_json::json!({"field": r.field.as_str(), "mask": r.blind_index.as_str(), "value": r.value.as_str()}))
                    .collect();
                println!("{}", serde_json::Value::from(items));
            } else {
                print_table(
                    &["field", "mask", "value"],
                    revealed
                        .iter()
                        .map(|r| vec![r.field.to_string(), r.blind_index.to_string(), r.value.to_string()])
                        .collect(),
                );
            }
        }
        Command::Forget(args) => {
            let reason = recovery::require_reason(args.why.reason.as_deref())?.to_owned();
            let t = args.target;
            let (field, index) = match (t.ip, t.masked_ip, t.device_id, t.masked_device_id) {
                (_, Some(mask), _, _) => (PiiField::Ip, parse_mask(&mask)?),
                (_, _, _, Some(mask)) => (PiiField::DeviceId, parse_mask(&mask)?),
                (ip, _, device_id, _) => {
                    let indexer = keys::load_indexer(&db, &kms).await.map_err(RecoveryError::from)?;
                    let (field, normalized) = normalize_plain(ip, device_id)?;
                    (field, indexer.index(field, &normalized))
                }
            };
            let outcome = recovery::forget(&db, field, &index, &reason, &args.why.actor()).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"field": field.as_str(), "mask": index.as_str(), "outcome": outcome})
                );
            } else {
                println!("{field} {index}: {outcome}");
            }
        }
        Command::Audit { since } => {
            let entries = recovery::audit(&db, since).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&entries)?);
            } else {
                print_table(
                    &["id", "at", "db_user", "actor", "action", "field", "mask", "outcome", "reason"],
                    entries
                        .iter()
                        .map(|e| {
                            vec![
                                e.id.to_string(),
                                e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                                e.db_user.clone(),
                                e.actor.clone(),
                                e.action.clone(),
                                e.field.clone(),
                                format!("{}…", &e.blind_index[..e.blind_index.len().min(16)]),
                                e.outcome.clone(),
                                e.reason.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Command::RotateKey => {
            let version = recovery::rotate_data_key(&db, &kms).await?;
            println!(
                "data key version {version} created; run `pii-vault reencrypt` once the function's instances have restarted"
            );
        }
        Command::Reencrypt { batch_size } => {
            anyhow::ensure!(batch_size >= 1, "--batch-size must be at least 1");
            let total = recovery::reencrypt(&mut db, &kms, &mut data_keys, batch_size, |done, remaining| {
                eprintln!("reencrypt: {done} re-encrypted, {remaining} left");
            })
            .await?;
            println!("reencrypt: {total} vault rows re-encrypted under the newest data key");
        }
    }
    Ok(())
}

fn parse_mask(text: &str) -> Result<BlindIndex, anyhow::Error> {
    BlindIndex::parse(text).context("a mask is 64 hex characters, as in user_logins")
}

/// Normalizes a plaintext as the function does, so any spelling finds the same mask.
fn normalize_plain(ip: Option<String>, device_id: Option<String>) -> anyhow::Result<(PiiField, String)> {
    match (ip, device_id) {
        (Some(ip), _) => {
            Ok((PiiField::Ip, ClientIp::parse(&ip).context("not an IPv4 or IPv6 address")?.canonical()))
        }
        (_, Some(id)) => Ok((
            PiiField::DeviceId,
            DeviceId::parse(&id).context("empty or invalid device id")?.canonical().to_owned(),
        )),
        _ => anyhow::bail!("give --ip or --device-id"),
    }
}

fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
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
