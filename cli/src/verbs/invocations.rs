//! `stoke invocations` and `stoke usage`: what ran, and what it cost,
//! through the admin API, as tables.

use anyhow::{Context as _, bail};
use stoke_proto::{
    GetUsageRequest, InvocationStatus, InvocationSummary, ListInvocationsRequest, UsageBucket, UsageGroupBy,
};

use crate::client::Admin;

/// The server never sends more than this per page.
const PAGE_MAX: u32 = 1000;

/// `stoke invocations --help`, after the options.
pub const INVOCATIONS_HELP: &str = "Examples:\n  \
    stoke invocations                          # the newest 50, every function\n  \
    stoke invocations hello --status failed    # hello's failures\n  \
    stoke invocations --since 1h --status dead_lettered\n  \
    stoke invocations --since 2026-11-23T10:00:00Z --until 2026-11-23T11:00:00Z\n  \
    stoke invocations hello --key order-42     # the invocation of one idempotency key\n\n\
    Statuses: queued (not run yet), running (a worker has run it for 0.25 s, or an attempt\n\
    failed and it waits for the next, or it was redriven after one), succeeded, failed,\n\
    timed_out, dead_lettered.\n\
    `stoke status ID` shows one with its result.";

/// `stoke usage --help`, after the options.
pub const USAGE_HELP: &str = "Examples:\n  \
    stoke usage                                # per function, all time\n  \
    stoke usage --by namespace --per hour      # per namespace and UTC hour\n  \
    stoke usage --per day --since 7d           # per function and UTC day, last week\n  \
    stoke usage --namespace team-a --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z\n\n\
    Every attempt counts (retries too), whole, in the period it started in. GB-seconds are\n\
    billed seconds x memory in GB (MB / 1024), as Lambda bills.";

#[derive(clap::Args)]
pub struct InvocationsArgs {
    /// Only this function.
    pub function: Option<String>,
    /// queued, running, succeeded, failed, timed_out or dead_lettered.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Created at or after: a duration back from now (30s, 15m, 1h, 2d, 1w),
    /// RFC 3339 (2026-11-23T10:00:00Z) or Unix milliseconds.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Created before (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only the invocation of this idempotency key.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Only functions of this namespace.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Show at most this many (newest first).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: u32,
}

#[derive(clap::Args)]
pub struct UsageArgs {
    /// Only this function.
    #[arg(long)]
    pub function: Option<String>,
    /// One row per `function` (default) or per `namespace`.
    #[arg(long, value_name = "WHAT", default_value = "function")]
    pub by: String,
    /// One row per UTC `hour` or `day` as well.
    #[arg(long, value_name = "PERIOD")]
    pub per: Option<String>,
    /// Only functions of this namespace.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Attempts started at or after: a duration back from now (1h, 7d),
    /// RFC 3339 or Unix milliseconds.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Attempts started before (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

/// `30s`, `15m`, `1h`, `2d`, `1w` back from `now_ms`; RFC 3339; or Unix
/// milliseconds. None → 0 (unbounded).
pub fn parse_when(t: Option<&str>, now_ms: i64) -> anyhow::Result<i64> {
    let Some(t) = t.map(str::trim) else { return Ok(0) };
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    let unit_ms = match t.chars().last() {
        Some('s') => Some(1_000),
        Some('m') => Some(60_000),
        Some('h') => Some(3_600_000),
        Some('d') => Some(86_400_000),
        Some('w') => Some(7 * 86_400_000),
        _ => None,
    };
    if let Some(unit) = unit_ms
        && let Ok(n) = t[..t.len() - 1].parse::<u32>()
    {
        return Ok(now_ms - i64::from(n) * unit);
    }
    let dt = chrono::DateTime::parse_from_rfc3339(t).with_context(|| {
        format!(
            "{t:?} is not a duration back from now (30s, 15m, 1h, 2d, 1w), RFC 3339 (2026-11-23T10:00:00Z) or Unix ms"
        )
    })?;
    Ok(dt.timestamp_millis())
}

fn parse_status(s: &str) -> anyhow::Result<InvocationStatus> {
    Ok(match s.to_ascii_lowercase().replace('-', "_").as_str() {
        "queued" => InvocationStatus::Queued,
        "running" => InvocationStatus::Running,
        "succeeded" | "success" | "ok" => InvocationStatus::Succeeded,
        "failed" => InvocationStatus::Failed,
        "timed_out" | "timeout" => InvocationStatus::TimedOut,
        "dead_lettered" | "dead" => InvocationStatus::DeadLettered,
        _ => bail!("unknown status {s:?}: use queued, running, succeeded, failed, timed_out or dead_lettered"),
    })
}

fn status_name(s: i32) -> &'static str {
    match InvocationStatus::try_from(s) {
        Ok(InvocationStatus::Queued) => "queued",
        Ok(InvocationStatus::Running) => "running",
        Ok(InvocationStatus::Succeeded) => "succeeded",
        Ok(InvocationStatus::Failed) => "failed",
        Ok(InvocationStatus::TimedOut) => "timed_out",
        Ok(InvocationStatus::DeadLettered) => "dead_lettered",
        _ => "unknown",
    }
}

/// UTC, to the second (or `fmt`).
fn utc(ms: i64, fmt: &str) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format(fmt).to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn duration(i: &InvocationSummary) -> String {
    if i.completed_unix_ms == 0 {
        return "-".into();
    }
    let ms = (i.completed_unix_ms - i.created_unix_ms).max(0);
    match ms {
        ms if ms < 10_000 => format!("{ms}ms"),
        ms if ms < 600_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms => format!("{:.1}m", ms as f64 / 60_000.0),
    }
}

/// `stoke invocations`.
pub async fn invocations(admin: &mut Admin, a: InvocationsArgs) -> anyhow::Result<()> {
    let now = stoke_core::now_ms();
    let mut req = ListInvocationsRequest {
        function: a.function.unwrap_or_default(),
        status: a.status.as_deref().map(parse_status).transpose()?.unwrap_or_default() as i32,
        since_unix_ms: parse_when(a.since.as_deref(), now)?,
        until_unix_ms: parse_when(a.until.as_deref(), now)?,
        idempotency_key: a.key.unwrap_or_default(),
        namespace: a.namespace.unwrap_or_default(),
        limit: 0,
        page_token: String::new(),
    };
    let mut rows: Vec<InvocationSummary> = Vec::new();
    let more = loop {
        req.limit = (a.limit - rows.len() as u32).min(PAGE_MAX);
        if req.limit == 0 {
            break false;
        }
        let page = admin
            .client()
            .list_invocations(req.clone())
            .await
            .map_err(admin.err())?
            .into_inner();
        rows.extend(page.invocations);
        if page.next_page_token.is_empty() {
            break false;
        }
        if rows.len() as u32 >= a.limit {
            break true;
        }
        req.page_token = page.next_page_token;
    };
    if admin.out.is_json() {
        return admin.out.list(&rows, "", &[], |_| Vec::new());
    }
    if rows.is_empty() {
        println!("no invocations");
        return Ok(());
    }
    println!(
        "{:<36}  {:<20} {:>3}  {:<13} {:>8}  {:<19}  {:>8}  ERROR",
        "INVOCATION", "FUNCTION", "VER", "STATUS", "ATTEMPTS", "CREATED (UTC)", "DURATION"
    );
    for i in &rows {
        let line = format!(
            "{:<36}  {:<20} {:>3}  {:<13} {:>8}  {:<19}  {:>8}  {}",
            i.invocation_id,
            i.function,
            i.version,
            status_name(i.status),
            i.attempts,
            utc(i.created_unix_ms, "%Y-%m-%d %H:%M:%S"),
            duration(i),
            i.error.as_ref().map(|e| e.error_type.as_str()).unwrap_or_default()
        );
        println!("{}", line.trim_end());
    }
    if more {
        eprintln!(
            "(showing the newest {}; older ones: --limit or --until {})",
            rows.len(),
            rows.last().map_or(0, |i| i.created_unix_ms)
        );
    }
    Ok(())
}

/// `stoke usage`.
pub async fn usage(admin: &mut Admin, a: UsageArgs) -> anyhow::Result<()> {
    let now = stoke_core::now_ms();
    let group_by = match a.by.as_str() {
        "function" => UsageGroupBy::Function,
        "namespace" => UsageGroupBy::Namespace,
        other => bail!("--by {other:?}: use function or namespace"),
    };
    let (bucket, period_fmt) = match a.per.as_deref() {
        None => (UsageBucket::None, ""),
        Some("hour") => (UsageBucket::Hour, "%Y-%m-%d %H:00"),
        Some("day") => (UsageBucket::Day, "%Y-%m-%d"),
        Some(other) => bail!("--per {other:?}: use hour or day"),
    };
    let rows = admin
        .client()
        .get_usage(GetUsageRequest {
            function: a.function.unwrap_or_default(),
            since_unix_ms: parse_when(a.since.as_deref(), now)?,
            until_unix_ms: parse_when(a.until.as_deref(), now)?,
            namespace: a.namespace.unwrap_or_default(),
            group_by: group_by as i32,
            bucket: bucket as i32,
        })
        .await
        .map_err(admin.err())?
        .into_inner()
        .rows;
    if admin.out.is_json() {
        return admin.out.list(&rows, "", &[], |_| Vec::new());
    }
    if rows.is_empty() {
        println!("no usage");
        return Ok(());
    }
    let by_function = group_by == UsageGroupBy::Function;
    let mut headers = Vec::new();
    if bucket != UsageBucket::None {
        headers.push("PERIOD (UTC)");
    }
    headers.push(if by_function { "FUNCTION" } else { "NAMESPACE" });
    headers.extend(["ATTEMPTS", "ERRORS", "COLD", "BILLED_MS", "GB_SECONDS"]);
    if by_function {
        headers.push("NAMESPACE");
    }
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "(unknown)".to_string()
        } else {
            s.to_string()
        }
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = Vec::new();
            if bucket != UsageBucket::None {
                row.push(utc(r.bucket_start_unix_ms, period_fmt));
            }
            row.push(or_unknown(if by_function { &r.function } else { &r.namespace }));
            row.extend(crate::row![
                r.attempts,
                r.errors,
                r.cold_starts,
                r.billed_ms,
                format!("{:.6}", r.gb_seconds)
            ]);
            if by_function {
                row.push(or_unknown(&r.namespace));
            }
            row
        })
        .collect();
    crate::output::emit(&crate::output::table(&headers, table));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_durations_back_rfc3339_or_unix_ms() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_when(None, now).unwrap(), 0);
        assert_eq!(parse_when(Some("1h"), now).unwrap(), now - 3_600_000);
        assert_eq!(parse_when(Some("30s"), now).unwrap(), now - 30_000);
        assert_eq!(parse_when(Some("15m"), now).unwrap(), now - 900_000);
        assert_eq!(parse_when(Some("2d"), now).unwrap(), now - 2 * 86_400_000);
        assert_eq!(parse_when(Some("1w"), now).unwrap(), now - 7 * 86_400_000);
        assert_eq!(
            parse_when(Some("2026-11-23T10:00:00Z"), now).unwrap(),
            1_795_428_000_000
        );
        assert_eq!(parse_when(Some("1795428000000"), now).unwrap(), 1_795_428_000_000);
        for bad in ["yesterday", "1y", "h", "-1h", "2026-11-23"] {
            assert!(parse_when(Some(bad), now).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_parse_as_listed() {
        assert_eq!(parse_status("timed-out").unwrap(), InvocationStatus::TimedOut);
        assert_eq!(parse_status("dead_lettered").unwrap(), InvocationStatus::DeadLettered);
        assert_eq!(parse_status("running").unwrap(), InvocationStatus::Running);
        assert!(parse_status("sleeping").is_err());
    }
}
