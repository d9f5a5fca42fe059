//! `stoke cron ...`: schedules created through the admin API (manifest
//! schedules are listed too) and the ledger of ticks.

use stoke_proto::{
    CreateScheduleRequest, ListCronTicksRequest, ListSchedulesRequest, ScheduleInfo, ScheduleNameRequest,
};

use super::run::read_payload;
use crate::client::Admin;
use crate::output::{self, Output};
use crate::row;

#[derive(clap::Subcommand)]
pub enum CronCommand {
    /// Create a schedule without redeploying (manifest `[[triggers]] cron` also works).
    #[command(after_help = "Examples:\n  \
        stoke cron create nightly --function report --cron '0 0 3 * * *' --timezone Europe/Berlin\n  \
        stoke cron create poll --function poller --cron '*/30 * * * * *' --overlap skip --data '{\"full\":false}'")]
    Create {
        /// Schedule name ([a-z][a-z0-9-]*).
        name: String,
        #[arg(long)]
        function: String,
        /// sec min hour day month weekday [year], e.g. "0 */5 * * * *".
        #[arg(long)]
        cron: String,
        /// IANA time zone (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// allow | skip | queue (default allow).
        #[arg(long)]
        overlap: Option<String>,
        /// none | latest | all (default none).
        #[arg(long)]
        catch_up: Option<String>,
        /// Seconds `--catch-up all` reaches back (default 3600).
        #[arg(long)]
        catch_up_window: Option<u32>,
        /// Event data: inline JSON, @FILE or @-.
        #[arg(long)]
        data: Option<String>,
    },
    /// List schedules (from manifests and the admin API).
    #[command(
        after_help = "Examples:\n  stoke cron list --function tick\n  stoke cron list -o json | jq -r '.[] | select(.paused) | .id'"
    )]
    List {
        #[arg(long)]
        function: Option<String>,
    },
    /// Stop a schedule firing (its ticks are not caught up on resume).
    #[command(after_help = "Example:\n  stoke cron pause nightly")]
    Pause { name: String },
    /// Start a paused schedule again, from now.
    #[command(after_help = "Example:\n  stoke cron resume nightly")]
    Resume { name: String },
    /// Delete a schedule created with `stoke cron create`.
    #[command(after_help = "Example:\n  stoke cron delete nightly")]
    Delete { name: String },
    /// The ledger: each tick and what became of it (fired, caught_up,
    /// skipped_overlap, missed_by_policy), newest first.
    #[command(after_help = "Examples:\n  \
        stoke cron ledger --function tick --limit 10\n  \
        stoke cron ledger -o json | jq -r '.[] | select(.outcome != \"fired\") | .scheduled_at'")]
    Ledger {
        #[arg(long)]
        function: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

const HEADERS: &[&str] = &[
    "ID", "SOURCE", "CRON", "OVERLAP", "CATCHUP", "PAUSED", "FUNCTION", "TIMEZONE",
];

fn row(s: &ScheduleInfo) -> Vec<String> {
    row![
        s.id, s.source, s.cron, s.overlap, s.catch_up, s.paused, s.function, s.timezone
    ]
}

/// One schedule: a JSON object, or a one-row table.
fn one(out: Output, s: &ScheduleInfo) -> anyhow::Result<()> {
    out.one(s, |s| output::emit(&output::table(HEADERS, vec![row(s)])))
}

pub async fn run(admin: &mut Admin, command: CronCommand) -> anyhow::Result<()> {
    let mut c = admin.client().clone();
    let (err, out) = (admin.err(), admin.out);
    match command {
        CronCommand::Create {
            name,
            function,
            cron,
            timezone,
            overlap,
            catch_up,
            catch_up_window,
            data,
        } => {
            let payload = match data {
                Some(d) => read_payload(Some(&d))?,
                None => Vec::new(),
            };
            let req = CreateScheduleRequest {
                name,
                function,
                cron,
                timezone: timezone.unwrap_or_default(),
                overlap: overlap.unwrap_or_default(),
                catch_up: catch_up.unwrap_or_default(),
                catch_up_window: catch_up_window.unwrap_or(0),
                payload,
            };
            one(out, &c.create_schedule(req).await.map_err(err)?.into_inner())
        }
        CronCommand::List { function } => {
            let req = ListSchedulesRequest {
                function: function.unwrap_or_default(),
            };
            let list = c.list_schedules(req).await.map_err(err)?.into_inner().schedules;
            out.list(&list, "no cron schedules", HEADERS, row)
        }
        CronCommand::Pause { name } => one(
            out,
            &c.pause_schedule(ScheduleNameRequest { name })
                .await
                .map_err(err)?
                .into_inner(),
        ),
        CronCommand::Resume { name } => one(
            out,
            &c.resume_schedule(ScheduleNameRequest { name })
                .await
                .map_err(err)?
                .into_inner(),
        ),
        CronCommand::Delete { name } => {
            let r = c
                .delete_schedule(ScheduleNameRequest { name: name.clone() })
                .await
                .map_err(err)?
                .into_inner();
            out.one(&r, |_| println!("deleted schedule {name}"))
        }
        CronCommand::Ledger { function, limit } => {
            let req = ListCronTicksRequest {
                function: function.unwrap_or_default(),
                limit,
            };
            let ticks = c.list_cron_ticks(req).await.map_err(err)?.into_inner().ticks;
            let headers = &["SCHEDULED (UTC)", "SCHEDULE", "OUTCOME", "INVOCATION"];
            out.list(&ticks, "no cron ticks yet", headers, |t| {
                let at = chrono::DateTime::from_timestamp_millis(t.scheduled_unix_ms)
                    .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                    .unwrap_or_default();
                row![at, t.schedule_id, t.outcome, t.invocation_id]
            })
        }
    }
}
