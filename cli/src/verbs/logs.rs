//! `stoke logs`: function output through the admin API — one invocation's
//! lines (`GetLogs`), or a function's recent and live ones (`TailLogs`).

use anyhow::Context as _;
use futures::StreamExt as _;
use stoke_proto::{GetLogsRequest, LogLine, LogStream, TailLogsRequest};

use crate::client::Admin;

pub const EXAMPLES: &str = "Examples:
  stoke logs --invocation 0193c0de-7a51-7c3e-9a1b-2f4c5d6e7f80   # every attempt's stdout and stderr
  stoke logs --invocation 0193c0de-7a51-7c3e-9a1b-2f4c5d6e7f80 --attempt 2
  stoke logs hello                  # hello's output of the last 10 minutes
  stoke logs hello -f               # new lines as invocations run (Ctrl-C stops)
  stoke logs hello -f --since 1h    # the last hour, then new lines
  stoke logs hello --since 2026-11-23T10:00:00Z

Lines: TIME [INVOCATION] ATTEMPT STREAM TEXT. Output is kept on the STOKE_LOGS stream for a
limited time and size ([streams] logs_max_age_secs, logs_max_bytes), up to the
worker's log cap per attempt (log_cap_bytes), where a \"[output over the log cap ...]\" line
marks the cut.";

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The function whose output to show (not with --invocation).
    #[arg(required_unless_present = "invocation", conflicts_with = "invocation")]
    function: Option<String>,
    /// Show one invocation's output: every attempt, in order.
    #[arg(long, value_name = "ID")]
    invocation: Option<String>,
    /// With --invocation: only this attempt (1-based).
    #[arg(long, value_name = "N", requires = "invocation")]
    attempt: Option<u32>,
    /// Keep printing new lines as the function's invocations run.
    #[arg(long, short, conflicts_with = "invocation")]
    follow: bool,
    /// Start this far back (30s, 10m, 2h, 1d) or at this time (RFC 3339 or
    /// Unix ms). Default: 10m, or only new lines with --follow.
    #[arg(long, value_name = "AGE|TIME", conflicts_with = "invocation")]
    since: Option<String>,
}

pub async fn run(admin: &mut Admin, args: LogsArgs) -> anyhow::Result<()> {
    if let Some(id) = args.invocation {
        return invocation(admin, id, args.attempt.unwrap_or(0)).await;
    }
    let function = args
        .function
        .context("name a function, or an invocation with --invocation")?;
    let since_unix_ms = match (&args.since, args.follow) {
        (Some(s), _) => super::invocations::parse_when(Some(s), stoke_core::now_ms())?,
        (None, true) => 0,
        (None, false) => stoke_core::now_ms() - 10 * 60 * 1000,
    };
    let mut lines = admin
        .client()
        .tail_logs(TailLogsRequest {
            function,
            since_unix_ms,
            follow: args.follow,
        })
        .await
        .map_err(admin.err())?
        .into_inner();
    while let Some(line) = lines.next().await {
        let line = line.map_err(admin.err())?;
        println!(
            "{} {} {:>2} {} {}",
            time(line.unix_ms),
            if line.invocation_id.is_empty() {
                "(no invocation)"
            } else {
                &line.invocation_id
            },
            line.attempt,
            stream(&line),
            line.text
        );
    }
    Ok(())
}

async fn invocation(admin: &mut Admin, invocation_id: String, attempt: u32) -> anyhow::Result<()> {
    let resp = admin
        .client()
        .get_logs(GetLogsRequest {
            invocation_id: invocation_id.clone(),
            attempt,
        })
        .await
        .map_err(admin.err())?
        .into_inner();
    if admin.out.is_json() {
        return admin.out.one(&resp, |_| {});
    }
    if resp.lines.is_empty() {
        eprintln!("invocation {invocation_id} of {} has no stored output", resp.function);
    }
    for line in &resp.lines {
        println!(
            "{} {:>2} {} {}",
            time(line.unix_ms),
            line.attempt,
            stream(line),
            line.text
        );
    }
    if resp.truncated {
        eprintln!("(more output than one answer carries: this is the beginning; use --attempt)");
    }
    Ok(())
}

fn stream(line: &LogLine) -> &'static str {
    match LogStream::try_from(line.stream) {
        Ok(LogStream::Stdout) => "stdout",
        Ok(LogStream::Stderr) => "stderr",
        _ => "?     ",
    }
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}
