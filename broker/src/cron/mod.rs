//! The cron scheduler: turns `[[triggers]] cron = ...` into invocation
//! events. Any number of brokers may run it at once; each tick's fate is
//! decided once by the ledger's primary key (schedule, scheduled time), and
//! its event carries `cron:<schedule>:<scheduled ms>` as `Nats-Msg-Id` and
//! idempotency key, so a tick runs once even if two brokers publish it.

pub mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use stoke_core::{CronSpec, Manifest, Overlap, Trigger};
use stoke_store::{CronTick, Edge, Status, TickOutcome};
use tokio_util::sync::CancellationToken;

use schedule::{Plan, Schedule};
use stoke_bus::{InvokeRequest, Invoker};

/// Scheduler settings (the `[broker.cron]` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CronOptions {
    /// Run the scheduler in this broker.
    pub enabled: bool,
    /// A tick later than this (ms) counts as missed (no broker ran at its time).
    pub tolerance_ms: u64,
    /// Seconds between re-reading the deployed schedules.
    pub refresh_secs: u64,
}

impl Default for CronOptions {
    fn default() -> Self {
        CronOptions {
            enabled: true,
            tolerance_ms: 3000,
            refresh_secs: 1,
        }
    }
}

/// One cron schedule of one deployed function (from its manifest or the
/// admin API).
struct Entry {
    function: String,
    spec: CronSpec,
    /// An admin schedule's name and event data.
    admin: Option<(String, Option<serde_json::Value>)>,
    schedule: Schedule,
    /// Ticks up to here are decided.
    decided_until: DateTime<Utc>,
    /// The invocation of the newest tick that fired (for overlap).
    last_fired: Option<String>,
    /// overlap = "queue": the first tick held back behind a running one.
    /// Ticks from here on are waiting, not missed, however late they get.
    queued_from: Option<DateTime<Utc>>,
}

/// Why the scheduler could not decide or fire a tick now (it tries again
/// at its next pass).
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error(transparent)]
    Store(#[from] stoke_store::StoreError),
    #[error("schedule {name}: {cause}")]
    Schedule {
        name: String,
        cause: stoke_core::manifest::ManifestError,
    },
    #[error("cron expression {expr:?}: {cause}")]
    Expression { expr: String, cause: cron::error::Error },
    #[error("publishing tick {key}: {cause}")]
    Publish {
        key: String,
        cause: Box<stoke_bus::InvokeError>,
    },
}

pub struct Scheduler {
    store: Arc<dyn Edge>,
    invoker: Invoker,
    opts: CronOptions,
}

impl Scheduler {
    pub fn new(store: Arc<dyn Edge>, invoker: Invoker, opts: CronOptions) -> Scheduler {
        Scheduler { store, invoker, opts }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("cron scheduler started");
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let refresh = Duration::from_secs(self.opts.refresh_secs.max(1));
        let mut last_refresh: Option<tokio::time::Instant> = None;
        loop {
            if last_refresh.is_none_or(|t| t.elapsed() >= refresh) {
                if let Err(e) = self.refresh(&mut entries).await {
                    tracing::warn!(error = %e, "cannot read schedules; retrying");
                }
                last_refresh = Some(tokio::time::Instant::now());
            }
            for (id, entry) in entries.iter_mut() {
                if let Err(e) = self.tick(id, entry, Utc::now()).await {
                    tracing::warn!(schedule = %id, error = %e, "cron tick failed; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Track the cron triggers of every deployed function.
    async fn refresh(&self, entries: &mut HashMap<String, Entry>) -> Result<(), CronError> {
        let versions = self.store.list_functions().await?;
        let mut seen = Vec::new();
        for v in versions {
            let Ok(manifest) = Manifest::parse(&v.manifest) else {
                continue;
            };
            for trigger in manifest.triggers().unwrap_or_default() {
                let Trigger::Cron(spec) = trigger else { continue };
                let id = spec.schedule_id(&v.function);
                seen.push(id.clone());
                if entries.contains_key(&id) {
                    continue;
                }
                let schedule = Schedule::new(&spec)?;
                // Continue from the ledger; a new schedule starts at its deploy.
                let last = self.store.last_tick(&id, false).await?;
                let fired = self.store.last_tick(&id, true).await?;
                let from_ms = last.map_or(v.created_ms, |t| t.scheduled_ms);
                tracing::info!(schedule = %id, function = %v.function, expr = %spec.schedule, tz = %spec.timezone, "cron schedule active");
                entries.insert(
                    id,
                    Entry {
                        function: v.function.clone(),
                        spec,
                        admin: None,
                        schedule,
                        decided_until: Utc.timestamp_millis_opt(from_ms).single().unwrap_or_else(Utc::now),
                        last_fired: fired.and_then(|t| t.invocation_id),
                        queued_from: None,
                    },
                );
            }
        }
        // Schedules created through the admin API (paused ones are left out,
        // and resume from their resume time: a pause is not an outage).
        for s in self.store.schedules().await? {
            if s.paused {
                continue;
            }
            let id = format!("{}@{}", s.function, s.name);
            seen.push(id.clone());
            if entries.contains_key(&id) {
                continue;
            }
            let def = stoke_core::manifest::TriggerDef {
                cron: Some(s.cron.clone()),
                timezone: Some(s.timezone.clone()),
                overlap: serde_json::from_value(serde_json::Value::String(s.overlap.clone())).ok(),
                catch_up: serde_json::from_value(serde_json::Value::String(s.catch_up.clone())).ok(),
                catch_up_window: Some(s.catch_up_window_secs),
                ..Default::default()
            };
            let spec = stoke_core::manifest::parse_cron(&def).map_err(|cause| CronError::Schedule {
                name: s.name.clone(),
                cause,
            })?;
            let schedule = Schedule::new(&spec)?;
            let last = self.store.last_tick(&id, false).await?;
            let fired = self.store.last_tick(&id, true).await?;
            let from_ms = last.map_or(s.updated_ms, |t| t.scheduled_ms.max(s.updated_ms));
            let data = s.payload.as_deref().map(|p| {
                serde_json::from_slice(p)
                    .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(p).into()))
            });
            tracing::info!(schedule = %id, function = %s.function, expr = %spec.schedule, "cron schedule active");
            entries.insert(
                id,
                Entry {
                    function: s.function.clone(),
                    spec,
                    admin: Some((s.name.clone(), data)),
                    schedule,
                    decided_until: Utc.timestamp_millis_opt(from_ms).single().unwrap_or_else(Utc::now),
                    last_fired: fired.and_then(|t| t.invocation_id),
                    queued_from: None,
                },
            );
        }
        entries.retain(|id, _| seen.contains(id));
        Ok(())
    }

    /// Decide every tick of `entry` that is due by `now`.
    async fn tick(&self, id: &str, entry: &mut Entry, now: DateTime<Utc>) -> Result<(), CronError> {
        let due = entry.schedule.fire_times(entry.decided_until, now, 1000);
        if due.is_empty() {
            return Ok(());
        }
        let tolerance = chrono::Duration::milliseconds(self.opts.tolerance_ms as i64);
        let window = chrono::Duration::seconds(i64::from(entry.spec.catch_up_window_secs));
        for (at, mut plan) in schedule::plan(&due, now, tolerance, entry.spec.catch_up, window) {
            if entry.queued_from.is_some_and(|q| at >= q) {
                plan = Plan::Fire;
            }
            let record = |outcome, invocation_id: Option<String>| CronTick {
                schedule_id: id.to_string(),
                function: entry.function.clone(),
                scheduled_ms: at.timestamp_millis(),
                outcome,
                invocation_id,
                recorded_ms: Utc::now().timestamp_millis(),
            };
            if plan == Plan::Missed {
                self.claim(&record(TickOutcome::MissedByPolicy, None)).await?;
                entry.decided_until = at;
                continue;
            }
            if entry.spec.overlap != Overlap::Allow && self.still_running(entry.last_fired.as_deref()).await? {
                if entry.spec.overlap == Overlap::Queue {
                    entry.queued_from.get_or_insert(at);
                    return Ok(()); // this tick waits; look again on the next pass
                }
                self.claim(&record(TickOutcome::SkippedOverlap, None)).await?;
                entry.decided_until = at;
                continue;
            }
            let key = format!("cron:{id}:{}", at.timestamp_millis());
            let invocation_id = stoke_bus::ids::id_for_key(&entry.function, &key);
            let outcome = if plan == Plan::CatchUp {
                TickOutcome::CaughtUp
            } else {
                TickOutcome::Fired
            };
            let (fired, publish) = match self.claim(&record(outcome, Some(invocation_id.clone()))).await? {
                None => (Some(invocation_id.clone()), true),
                // Decided before (another broker, or an earlier run of this
                // one): that decision stands. If it fired but its event never
                // got out (its broker died in between), publish it too — the
                // message id makes a second publish harmless.
                Some(earlier) => {
                    let ours = earlier.invocation_id.as_deref() == Some(invocation_id.as_str());
                    let lost = ours && self.store.accepted(&invocation_id).await?.is_none();
                    (earlier.invocation_id, lost)
                }
            };
            if publish {
                self.fire(entry, &key, at, plan == Plan::CatchUp).await?;
            }
            if fired.is_some() {
                entry.last_fired = fired;
            }
            entry.decided_until = at;
        }
        entry.queued_from = None;
        Ok(())
    }

    /// Record a tick's fate; the earlier decision if it already had one.
    async fn claim(&self, tick: &CronTick) -> Result<Option<CronTick>, CronError> {
        let earlier = self.store.claim_tick(tick).await?;
        if earlier.is_none() {
            tracing::debug!(schedule = %tick.schedule_id, at = tick.scheduled_ms, outcome = tick.outcome.as_str(), "cron tick");
        }
        Ok(earlier)
    }

    async fn still_running(&self, invocation_id: Option<&str>) -> Result<bool, CronError> {
        let Some(id) = invocation_id else { return Ok(false) };
        let view = self.store.invocation(id).await?;
        Ok(view.is_some_and(|v| matches!(v.status, Status::Queued | Status::Running)))
    }

    async fn fire(&self, entry: &Entry, key: &str, at: DateTime<Utc>, catch_up: bool) -> Result<(), CronError> {
        let mut event = serde_json::json!({
            "source": "cron",
            "schedule": entry.spec.schedule,
            "timezone": entry.spec.timezone.name(),
            "scheduledTime": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "catchUp": catch_up,
        });
        if let Some((name, data)) = &entry.admin {
            event["name"] = name.clone().into();
            if let Some(data) = data {
                event["data"] = data.clone();
            }
        }
        let req = InvokeRequest {
            function: entry.function.clone(),
            payload: Bytes::from(serde_json::to_vec(&event).expect("JSON values serialise")),
            idempotency_key: Some(key.to_string()),
            trigger: "cron",
            wait: false,
            via: stoke_bus::Via::Platform,
            trace: None,
            http: None,
            stream: false,
        };
        match self.invoker.invoke(req).await {
            Ok(_) => Ok(()),
            Err(cause) => Err(CronError::Publish {
                key: key.to_string(),
                cause: Box::new(cause),
            }),
        }
    }
}
