//! `stoke dlq list|show|redrive`: the dead-letter store through the admin API.

use anyhow::Context as _;
use stoke_proto::{DeadLetterInfo, GetDeadLetterRequest, ListDeadLettersRequest, RedriveRequest};

use crate::client::Admin;
use crate::row;

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    #[command(
        after_help = "Examples:\n  stoke dlq list --function hello --since 2026-11-23T10:00:00Z\n  stoke dlq list -o json | jq -r '.[].invocation_id'"
    )]
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
    #[command(
        after_help = "Examples:\n  stoke dlq show 0192f3c4-...\n  stoke dlq show 0192f3c4-... -o json | jq '.attempt_history[] | {attempt, worker, started_at}'"
    )]
    Show { invocation_id: String },
    /// Send dead letters back for another try with their original idempotency key.
    #[command(
        after_help = "Examples:\n  stoke dlq redrive 0192f3c4-...              # one, to its own version\n  stoke dlq redrive --function hello --version 3 --dry-run\n  stoke dlq redrive --function hello --since 2026-11-23T10:00:00Z"
    )]
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

pub async fn run(admin: &mut Admin, cmd: DlqCommand) -> anyhow::Result<()> {
    let mut client = admin.client().clone();
    let (err, out) = (admin.err(), admin.out);
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
                .map_err(err)?
                .into_inner()
                .dead_letters;
            let headers = &[
                "INVOCATION",
                "FUNCTION",
                "VER",
                "REASON",
                "ATTEMPTS",
                "DIED",
                "LAST ERROR",
            ];
            out.list(&list, "no dead letters", headers, |d| {
                let redriven = if d.redriven_unix_ms != 0 { " (redriven)" } else { "" };
                row![
                    d.invocation_id,
                    d.function,
                    d.version,
                    d.reason,
                    d.attempts,
                    time(d.dead_unix_ms),
                    format!("{}{redriven}", last_error(d))
                ]
            })
        }
        DlqCommand::Show { invocation_id } => {
            let d = client
                .get_dead_letter(GetDeadLetterRequest { invocation_id })
                .await
                .map_err(err)?
                .into_inner();
            out.one(&d, show)
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
                .map_err(err)?
                .into_inner();
            out.one(&resp, |resp| {
                for id in &resp.invocation_ids {
                    println!("{id}");
                }
                let verb = if resp.dry_run { "would redrive" } else { "redrove" };
                eprintln!("{verb} {} dead letter(s)", resp.invocation_ids.len());
            })
        }
    }
}

/// `stoke dlq show` for people.
fn show(d: &DeadLetterInfo) {
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
    println!("last error      {}", last_error(d));
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
}
