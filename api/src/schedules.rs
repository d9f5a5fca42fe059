//! Cron schedules through the admin API.

use crate::error::ApiError;
use stoke_core::manifest::{TriggerDef, parse_cron, validate_name};
use stoke_core::{CronSpec, Manifest, Trigger};
use stoke_proto::{CreateScheduleRequest, ScheduleInfo};
use stoke_store::{Admin, ScheduleDef};

fn spelling<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn manifest_info(function: &str, spec: &CronSpec) -> ScheduleInfo {
    ScheduleInfo {
        id: spec.schedule_id(function),
        name: String::new(),
        function: function.to_string(),
        cron: spec.schedule.clone(),
        timezone: spec.timezone.name().to_string(),
        overlap: spelling(spec.overlap),
        catch_up: spelling(spec.catch_up),
        catch_up_window: spec.catch_up_window_secs,
        paused: false,
        source: "manifest".into(),
        payload: Vec::new(),
    }
}

pub(crate) fn admin_info(s: &ScheduleDef) -> ScheduleInfo {
    ScheduleInfo {
        id: format!("{}@{}", s.function, s.name),
        name: s.name.clone(),
        function: s.function.clone(),
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        overlap: s.overlap.clone(),
        catch_up: s.catch_up.clone(),
        catch_up_window: s.catch_up_window_secs,
        paused: s.paused,
        source: "admin".into(),
        payload: s.payload.clone().unwrap_or_default(),
    }
}

/// Validate and store a new schedule.
pub(crate) async fn create(store: &dyn Admin, r: CreateScheduleRequest) -> Result<ScheduleInfo, ApiError> {
    validate_name(&r.name).map_err(|e| ApiError::invalid(format!("schedule name: {e}")))?;
    if store.current_version(&r.function).await?.is_none() {
        return Err(ApiError::not_found(format!("function {:?} not found", r.function)));
    }
    // Empty = the default; otherwise one of the manifest spellings.
    fn policy<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> Result<Option<T>, ApiError> {
        if v.is_empty() {
            return Ok(None);
        }
        serde_json::from_value(serde_json::Value::String(v.into()))
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("field `{field}`: unknown value {v:?}")))
    }
    let def = TriggerDef {
        cron: Some(r.cron.clone()),
        timezone: (!r.timezone.is_empty()).then(|| r.timezone.clone()),
        overlap: policy("overlap", &r.overlap)?,
        catch_up: policy("catch_up", &r.catch_up)?,
        catch_up_window: (r.catch_up_window != 0).then_some(r.catch_up_window),
        ..Default::default()
    };
    let spec = parse_cron(&def).map_err(|e| ApiError::invalid(e.to_string()))?;
    let now = stoke_core::now_ms();
    let s = ScheduleDef {
        name: r.name.clone(),
        function: r.function,
        cron: spec.schedule.clone(),
        timezone: spec.timezone.name().to_string(),
        overlap: spelling(spec.overlap),
        catch_up: spelling(spec.catch_up),
        catch_up_window_secs: spec.catch_up_window_secs,
        payload: (!r.payload.is_empty()).then_some(r.payload),
        paused: false,
        created_ms: now,
        updated_ms: now,
    };
    if !store.create_schedule(&s).await? {
        return Err(ApiError::exists(format!("a schedule named {:?} exists", r.name)));
    }
    Ok(admin_info(&s))
}

/// Manifest schedules of every deployed function, then admin ones.
pub(crate) async fn list(store: &dyn Admin, function: &str) -> Result<Vec<ScheduleInfo>, ApiError> {
    let mut out = Vec::new();
    for v in store.list_functions().await? {
        if !function.is_empty() && v.function != function {
            continue;
        }
        let Ok(m) = Manifest::parse(&v.manifest) else { continue };
        for t in m.triggers().unwrap_or_default() {
            if let Trigger::Cron(spec) = t {
                out.push(manifest_info(&v.function, &spec));
            }
        }
    }
    for s in store.schedules().await? {
        if function.is_empty() || s.function == function {
            out.push(admin_info(&s));
        }
    }
    Ok(out)
}

pub(crate) async fn set_paused(store: &dyn Admin, name: &str, paused: bool) -> Result<ScheduleInfo, ApiError> {
    if !store.set_schedule_paused(name, paused, stoke_core::now_ms()).await? {
        return Err(ApiError::not_found(format!(
            "no schedule named {name:?} (manifest schedules change by redeploying)"
        )));
    }
    let all = store.schedules().await?;
    all.iter()
        .find(|s| s.name == name)
        .map(admin_info)
        .ok_or_else(|| ApiError::not_found(format!("no schedule named {name:?}")))
}

/// The wire view of one cron tick in the ledger.
pub(crate) fn tick_info(t: stoke_store::CronTick) -> stoke_proto::CronTickInfo {
    stoke_proto::CronTickInfo {
        schedule_id: t.schedule_id,
        function: t.function,
        scheduled_unix_ms: t.scheduled_ms,
        outcome: t.outcome.as_str().into(),
        invocation_id: t.invocation_id.unwrap_or_default(),
        recorded_unix_ms: t.recorded_ms,
    }
}
