//! `esm-local`: a local SQS event source mapping. Long-polls a real SQS endpoint, hands
//! batches to the login-etl function code in-process, deletes what succeeded, and leaves
//! item failures and failed invocations to the queue (the function hides a batch it could
//! not write for the backoff) and its redrive policy. Configured like the function (DATABASE_URL,
//! KMS_KEY_ID, AWS_*), plus the flags below.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use login_etl::Function;
use login_etl_core::error::report;
use login_etl_core::{config, telemetry};
use login_etl_local_tools::esm::{self, EsmOptions};

#[derive(Parser)]
#[command(about = "Drain an SQS queue through the login-etl handler, as Lambda's SQS trigger would")]
struct Args {
    /// URL of the queue to poll.
    #[arg(long, env = "QUEUE_URL")]
    queue_url: String,
    /// Messages per handler invocation.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=10000))]
    batch_size: u16,
    /// Seconds to gather a batch after its first message (Lambda's MaximumBatchingWindowInSeconds).
    #[arg(long, default_value_t = 1.0)]
    batching_window: f64,
    /// Concurrent long-pollers (ReceiveMessage, 10 messages each).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=32))]
    pollers: u8,
    /// WaitTimeSeconds of each ReceiveMessage.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..=20))]
    wait_time: i32,
    /// Stop when the queue holds no visible, in-flight or delayed message.
    #[arg(long)]
    until_empty: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Seconds each invocation may take, as the function's Timeout (its deadline).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(4..=900))]
    function_timeout: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    // telemetry::init's JSON lines on stdout, through a writer that keeps them off the end
    // of the progress line on stderr (the same terminal, usually).
    let _ = tracing::subscriber::set_global_default(telemetry::json_subscriber(esm::LogWriter));
    let args = Args::parse();
    if !(args.batching_window.is_finite() && (0.0..=300.0).contains(&args.batching_window)) {
        eprintln!("esm-local: --batching-window must be between 0 and 300 seconds");
        return ExitCode::from(2);
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("esm-local: {}", report(&*error));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let sdk = config::aws_sdk_config().await?;
    let function = Function::from_env(&sdk).await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let options = EsmOptions {
        queue_url: args.queue_url.clone(),
        batch_size: usize::from(args.batch_size),
        batching_window: Duration::from_secs_f64(args.batching_window),
        pollers: usize::from(args.pollers),
        wait_time_seconds: args.wait_time,
        until_empty: args.until_empty,
        progress: !args.json && std::io::stderr().is_terminal(),
        function_timeout: Duration::from_secs(u64::from(args.function_timeout)),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let on_ctrl_c = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nesm-local: stopping after the batch in flight");
            on_ctrl_c.store(true, Ordering::SeqCst);
        }
    });

    let summary = esm::run(&function, &sqs, &options, stop).await?;
    let dlq_url = esm::dead_letter_queue_url(&sqs, &args.queue_url).await?;
    let dlq_depth = match &dlq_url {
        Some(url) => Some(esm::queue_depth(&sqs, url).await?.total()),
        None => None,
    };
    let queue_left = esm::queue_depth(&sqs, &args.queue_url).await?.total();
    let seconds = summary.elapsed.as_secs_f64();
    let rate = summary.received as f64 / seconds.max(1e-3);

    if args.json {
        let summary = serde_json::json!({
            "received": summary.received,
            "batches": summary.batches,
            "written": summary.written,
            "already_present": summary.already_present,
            "rejected": summary.rejected(),
            "rejected_by_reason": summary.rejected_by_reason,
            "quarantined": summary.quarantined,
            "deleted": summary.deleted,
            "failed_invocations": summary.failed_invocations,
            "failed_fast": summary.failed_fast,
            "hidden_for_backoff": summary.hidden,
            "not_hidden": summary.not_hidden,
            "vault_values_added": summary.vault_values_added,
            "retries": summary.retries,
            "unidentifiable": summary.unidentifiable,
            "left_in_queue": queue_left,
            "in_dlq": dlq_depth,
            "seconds": seconds,
            "messages_per_second": rate,
        });
        println!("{summary}");
    } else {
        println!("esm-local summary");
        println!("  received (incl. redeliveries) {:>8}", summary.received);
        println!("  written to user_logins        {:>8}", summary.written);
        println!("  already present (redelivered) {:>8}", summary.already_present);
        println!("  rejected, quarantined         {:>8}", summary.rejected());
        for (reason, count) in &summary.rejected_by_reason {
            println!("    {reason:<28}{count:>8}");
        }
        println!("  quarantine rows added         {:>8}", summary.quarantined);
        println!("  vault values added            {:>8}", summary.vault_values_added);
        println!("  retries (transient db errors) {:>8}", summary.retries);
        println!("  without messageId (skipped)   {:>8}", summary.unidentifiable);
        println!("  failed invocations            {:>8}", summary.failed_invocations);
        println!("    of which failed fast        {:>8}", summary.failed_fast);
        println!("  hidden for the backoff        {:>8}", summary.hidden);
        if summary.not_hidden > 0 {
            println!("  NOT hidden (SQS failed)       {:>8}", summary.not_hidden);
        }
        println!("  left in the queue             {:>8}", queue_left);
        match dlq_depth {
            Some(depth) => println!("  in the dead-letter queue      {depth:>8}"),
            None => println!("  in the dead-letter queue         (queue has no RedrivePolicy)"),
        }
        println!("  duration                      {seconds:>8.2} s");
        println!("  throughput                    {rate:>8.1} messages/s");
    }
    Ok(())
}
