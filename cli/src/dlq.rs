//! `stoke dlq list|show|redrive`: the dead-letter store through the admin API.

use anyhow::Context as _;
use stoke_proto::{DeadLetterInfo, GetDeadLetterRequest, ListDeadLettersRequest, RedriveRequest};

use crate::client::Admin;

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        /// Only this function.
        #[arg(long)]
        function: Option<String>,
        /// Also list ones already redriven.
        #[arg(long)]
        all: bool,
        /// Died at or after this time (RFC 3339, e.g. 2026-11-23T10:00:00Z, or Unix ms).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Died before this time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
    },
    /// Show one dead letter: payload, reason, and every attempt with its error and where its logs are.
    Show { invocation_id: String },
    /// Send dead letters back for another try with their original idempotency key.
    Redrive {
        /// These invocation ids; or use --function/--since/--until to select.
        ids: Vec<String>,
        #[arg(long)]
        function: Option<String>,
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Run this version instead of the one each event was for (e.g. a fixed deploy).
        #[arg(long)]
        version: Option<u32>,
        /// Only list what would be redriven.
        #[arg(long)]
        dry_run: bool,
    },
}

/// RFC 3339 or Unix milliseconds → Unix ms; None → 0 (unbounded).
fn parse_time(t: Option<&str>) -> anyhow::Result<i64> {
    let Some(t) = t else { return Ok(0) };
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    let dt = chrono::DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("{t:?} is neither RFC 3339 (2026-11-23T10:00:00Z) nor Unix milliseconds"))?;
    Ok(dt.timestamp_millis())
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn last_error(d: &DeadLetterInfo) -> String {
    d.error
        .as_ref()
        .map(|e| format!("{}: {}", e.error_type, e.error_message))
        .unwrap_or_default()
}

pub async fn run(admin: &mut Admin, addr: &str, cmd: DlqCommand) -> anyhow::Result<()> {
    let client = admin.client();
    match cmd {
        DlqCommand::List {
            function,
            all,
            since,
            until,
        } => {
            let list = client
                .list_dead_letters(ListDeadLettersRequest {
                    function: function.unwrap_or_default(),
                    since_unix_ms: parse_time(since.as_deref())?,
                    until_unix_ms: parse_time(until.as_deref())?,
                    include_redriven: all,
                    limit: 0,
                })
                .await
                .map_err(|s| crate::client::rpc_error(addr, s))?
                .into_inner()
                .dead_letters;
            if list.is_empty() {
                println!("no dead letters");
                return Ok(());
            }
            println!(
                "{:<38} {:<20} {:>3} {:<15} {:>8} {:<24} LAST ERROR",
                "INVOCATION", "FUNCTION", "VER", "REASON", "ATTEMPTS", "DIED"
            );
            for d in &list {
                let redriven = if d.redriven_unix_ms != 0 { " (redriven)" } else { "" };
                println!(
                    "{:<38} {:<20} {:>3} {:<15} {:>8} {:<24} {}{redriven}",
                    d.invocation_id,
                    d.function,
                    d.version,
                    d.reason,
                    d.attempts,
                    time(d.dead_unix_ms),
                    last_error(d)
                );
            }
            Ok(())
        }
        DlqCommand::Show { invocation_id } => {
            let d = client
                .get_dead_letter(GetDeadLetterRequest { invocation_id })
                .await
                .map_err(|s| crate::client::rpc_error(addr, s))?
                .into_inner();
            println!("invocation      {}", d.invocation_id);
            println!("function        {} version {}", d.function, d.version);
            println!("idempotency key {}", d.idempotency_key);
            println!("trigger         {}", d.trigger);
            println!("reason          {} after {} attempt(s)", d.reason, d.attempts);
            println!("accepted        {}", time(d.created_unix_ms));
            println!("died            {}", time(d.dead_unix_ms));
            if d.redriven_unix_ms != 0 {
                println!(
                    "redriven        {} ({} time(s))",
                    time(d.redriven_unix_ms),
                    d.redrive_count
                );
            }
            println!("last error      {}", last_error(&d));
            println!("payload         {}", String::from_utf8_lossy(&d.payload));
            println!("output          stoke logs --invocation {}", d.invocation_id);
            for a in &d.attempt_history {
                let err = a
                    .error
                    .as_ref()
                    .map(|e| format!(" {}: {}", e.error_type, e.error_message))
                    .unwrap_or_default();
                println!(
                    "attempt {:>3}     v{} {} in {:.1} ms{err}\n                logs: worker {} between {} and {}",
                    a.attempt,
                    a.version,
                    a.outcome,
                    a.duration_us as f64 / 1000.0,
                    if a.worker.is_empty() { "-" } else { &a.worker },
                    time(a.started_unix_ms),
                    time(a.ended_unix_ms)
                );
            }
            Ok(())
        }
        DlqCommand::Redrive {
            ids,
            function,
            since,
            until,
            version,
            dry_run,
        } => {
            let resp = client
                .redrive(RedriveRequest {
                    invocation_ids: ids,
                    function: function.unwrap_or_default(),
                    since_unix_ms: parse_time(since.as_deref())?,
                    until_unix_ms: parse_time(until.as_deref())?,
                    version: version.unwrap_or(0),
                    dry_run,
                })
                .await
                .map_err(|s| crate::client::rpc_error(addr, s))?
                .into_inner();
            for id in &resp.invocation_ids {
                println!("{id}");
            }
            let verb = if resp.dry_run { "would redrive" } else { "redrove" };
            eprintln!("{verb} {} dead letter(s)", resp.invocation_ids.len());
            Ok(())
        }
    }
}
