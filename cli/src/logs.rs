//! `stoke logs`: function output through the admin API — one invocation's
//! lines (`GetLogs`), or a function's recent and live ones (`TailLogs`).

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use stoke_proto::{GetLogsRequest, LogLine, LogStream, TailLogsRequest};

use crate::client::{Admin, rpc_error};

pub const EXAMPLES: &str = "Examples:
  stoke logs --invocation 0193c0de-7a51-7c3e-9a1b-2f4c5d6e7f80   # every attempt's stdout and stderr
  stoke logs --invocation 0193c0de-7a51-7c3e-9a1b-2f4c5d6e7f80 --attempt 2
  stoke logs hello                  # hello's output of the last 10 minutes
  stoke logs hello -f               # new lines as invocations run (Ctrl-C stops)
  stoke logs hello -f --since 1h    # the last hour, then new lines
  stoke logs hello --since 2026-11-23T10:00:00Z

Lines: TIME [INVOCATION] ATTEMPT STREAM TEXT. Output is kept on the STOKE_LOGS stream for a
limited time and size ([dispatcher.stream] logs_max_age_secs, logs_max_bytes), up to the
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

pub async fn run(admin: &mut Admin, addr: &str, args: LogsArgs) -> anyhow::Result<()> {
    if let Some(id) = args.invocation {
        return invocation(admin, addr, id, args.attempt.unwrap_or(0)).await;
    }
    let function = args
        .function
        .context("name a function, or an invocation with --invocation")?;
    let since_unix_ms = match (&args.since, args.follow) {
        (Some(s), _) => since(s, stoke_core::now_ms())?,
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
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
    while let Some(line) = lines.next().await {
        let line = line.map_err(|s| rpc_error(addr, s))?;
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

async fn invocation(admin: &mut Admin, addr: &str, invocation_id: String, attempt: u32) -> anyhow::Result<()> {
    let resp = admin
        .client()
        .get_logs(GetLogsRequest {
            invocation_id: invocation_id.clone(),
            attempt,
        })
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
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

/// `--since`: an age (30s, 10m, 2h, 1d) before `now_ms`, an RFC 3339 time,
/// or Unix milliseconds.
fn since(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let unit = |u: &str| match u {
        "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        "d" => Some(86_400_000),
        _ => None,
    };
    if let Some(i) = s.find(|c: char| !c.is_ascii_digit())
        && i > 0
        && let (Ok(n), Some(ms)) = (s[..i].parse::<i64>(), unit(&s[i..]))
    {
        return Ok(now_ms - n.saturating_mul(ms));
    }
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => Ok(t.timestamp_millis()),
        Err(_) => bail!("--since {s:?}: give an age (30s, 10m, 2h, 1d), an RFC 3339 time or Unix milliseconds"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_takes_ages_times_and_milliseconds() {
        let now = 1_800_000_000_000;
        assert_eq!(super::since("10m", now).unwrap(), now - 600_000);
        assert_eq!(super::since("30s", now).unwrap(), now - 30_000);
        assert_eq!(super::since("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(super::since("1d", now).unwrap(), now - 86_400_000);
        assert_eq!(super::since("1700000000000", now).unwrap(), 1_700_000_000_000);
        assert_eq!(super::since("2026-11-23T10:00:00Z", now).unwrap(), 1_795_428_000_000);
        for bad in ["", "m", "10x", "ten minutes", "-5m"] {
            assert!(super::since(bad, now).is_err(), "{bad:?}");
        }
    }
}
