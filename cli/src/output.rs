//! How the CLI verbs print what the admin API answered: `-o table` (the
//! default) for people, `-o json` for programs. Every verb that talks to the
//! admin API prints through here, so both formats follow the same rules.
//!
//! # Using it in a verb
//!
//! The verb gets an [`Output`] from [`crate::client::Admin::out`] and ends
//! with one line:
//!
//! ```ignore
//! use crate::row;
//! let resp = admin.client().list_functions(req).await.map_err(admin.err())?.into_inner();
//! // A list: a JSON array of the messages, or an aligned table.
//! admin.out.list(&resp.functions, "no functions deployed", &["NAME", "VERSION"], |f| row![f.name, f.version])
//! // One message: a JSON object, or whatever the closure prints for people.
//! admin.out.one(&info, |i| println!("{} now runs version {}", i.name, i.version))
//! ```
//!
//! The verb needs no `-o` flag of its own: the `ClientFlags` it flattens
//! (settings.rs) carry it. Messages of the human form that are not the
//! answer (progress, hints) go to stderr, so stdout stays one document.
//!
//! Any prost message of the `stoke.v1` package works (they implement
//! `prost::Name`; the descriptor comes from [`stoke_proto::FILE_DESCRIPTOR_SET`]),
//! so a new RPC or field needs no code here. [`to_json`] and [`print_json`]
//! are there for documents that add something to a message (`versions` adds
//! `current`).
//!
//! # JSON
//!
//! One document per command on stdout: an object for one message (the
//! response of the RPC; `{}` for empty responses such as a delete), an array
//! for a list. Field names are the proto field names (snake_case), every
//! field is present (defaults included), an unset message field is `null`.
//! - `bytes`: a UTF-8 value is a string; anything else is `null` there and
//!   base64 (standard, padded) in a sibling `<name>_base64` field.
//! - `*_unix_ms` (int64) fields are timestamps: renamed `*_at`, RFC 3339 in
//!   UTC with milliseconds (`2026-11-23T10:00:00.000Z`), `null` when 0.
//! - enums: the value's name, lowercased, without the enum's prefix
//!   (`INVOCATION_STATUS_TIMED_OUT` → `"timed_out"`); an unknown number stays
//!   a number.
//! - 64-bit integers are JSON numbers (not strings as in proto3's JSON).
//!
//! # Errors
//!
//! Errors go to stderr and the exit status is 1, in both formats. With
//! `-o json` stderr gets one line `{"error":{"code":"NOT_FOUND","message":"..."}}`
//! (`code`: the gRPC status code name, `UNAVAILABLE` when the API cannot be
//! reached, `null` for local errors such as a bad flag value), so a program
//! can branch on the code; with `-o table` it is `error: <message>`. A verb
//! whose call worked but whose outcome is a failure (an invocation that
//! failed) prints its document on stdout and the error on stderr.
//!
//! # Tables
//!
//! A header line of upper-case column names, columns separated by two
//! spaces and padded to the widest cell; a column whose cells all start with
//! a digit and contain no space (counts, sizes) is right-aligned. An empty
//! list prints one line saying so.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage as _, Value,
};
use serde_json::{Map, Value as Json};

/// `-o table|json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Aligned columns and sentences, for people.
    #[default]
    Table,
    /// One JSON document on stdout, for programs.
    Json,
}

/// Where a verb prints its answer.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
}

/// The cells of a table row: `row![f.name, f.version]`.
#[macro_export]
macro_rules! row {
    ($($cell:expr),* $(,)?) => { vec![$($cell.to_string()),*] };
}

impl Output {
    pub fn new(format: Format) -> Output {
        errors_as(format);
        Output { format }
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// A list of messages: a JSON array, or a table with `headers` and one
    /// `row` per message (`empty` when there are none).
    pub fn list<M, F>(&self, items: &[M], empty: &str, headers: &[&str], row: F) -> anyhow::Result<()>
    where
        M: prost::Message + prost::Name,
        F: Fn(&M) -> Vec<String>,
    {
        if self.is_json() {
            return print_json(&Json::Array(items.iter().map(to_json).collect()));
        }
        if items.is_empty() {
            emit(&format!("{empty}\n"));
        } else {
            emit(&table(headers, items.iter().map(row).collect()));
        }
        Ok(())
    }

    /// One message: a JSON object, or what `human` prints.
    pub fn one<M, F>(&self, item: &M, human: F) -> anyhow::Result<()>
    where
        M: prost::Message + prost::Name,
        F: FnOnce(&M),
    {
        if self.is_json() {
            return print_json(&to_json(item));
        }
        human(item);
        Ok(())
    }
}

/// Print a document on stdout (pretty, one document, newline-terminated).
pub fn print_json(v: &Json) -> anyhow::Result<()> {
    emit(&(serde_json::to_string_pretty(v)? + "\n"));
    Ok(())
}

/// Write to stdout; a reader that went away (`stoke functions | head -1`)
/// ends the process quietly with 141, as SIGPIPE would, instead of a panic.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

static JSON_ERRORS: AtomicBool = AtomicBool::new(false);

/// The format [`print_error`] uses, set as soon as it is known (a failed
/// connection is reported in the format asked for).
pub fn errors_as(format: Format) {
    JSON_ERRORS.store(format == Format::Json, Ordering::Relaxed);
}

/// Print a failed command's error on stderr in the chosen format. `code`
/// is the gRPC status code name when the error came from the API.
pub fn print_error(err: &anyhow::Error, code: Option<&str>) {
    if JSON_ERRORS.load(Ordering::Relaxed) {
        let doc = serde_json::json!({"error": {"code": code, "message": format!("{err:#}")}});
        eprintln!("{doc}");
    } else {
        eprintln!("error: {err:#}");
    }
}

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(stoke_proto::FILE_DESCRIPTOR_SET).expect("stoke-proto embeds a valid descriptor set")
});

/// A message as JSON, by the rules in the module doc.
pub fn to_json<M: prost::Message + prost::Name>(m: &M) -> Json {
    let name = M::full_name();
    let desc = POOL
        .get_message_by_name(&name)
        .unwrap_or_else(|| panic!("{name} is in stoke-proto's descriptor set"));
    let dynamic = DynamicMessage::decode(desc.clone(), m.encode_to_vec().as_slice())
        .expect("a message decodes with its own descriptor");
    message(&desc, &dynamic)
}

fn message(desc: &MessageDescriptor, m: &DynamicMessage) -> Json {
    let mut out = Map::new();
    for field in desc.fields() {
        let name = field.name();
        if field.supports_presence() && !m.has_field(&field) {
            out.insert(name.to_string(), Json::Null);
            continue;
        }
        let value = m.get_field(&field);
        match (&*value, name.strip_suffix("_unix_ms")) {
            (Value::I64(ms), Some(stem)) => {
                out.insert(format!("{stem}_at"), timestamp(*ms));
            }
            (Value::Bytes(b), _) => {
                let text = std::str::from_utf8(b).ok();
                out.insert(name.to_string(), text.map_or(Json::Null, |t| Json::String(t.into())));
                if text.is_none() {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(b);
                    out.insert(format!("{name}_base64"), Json::String(b64));
                }
            }
            (v, _) => {
                out.insert(name.to_string(), field_value(&field, v));
            }
        }
    }
    Json::Object(out)
}

fn field_value(field: &FieldDescriptor, v: &Value) -> Json {
    match v {
        Value::List(items) => Json::Array(items.iter().map(|i| scalar(&field.kind(), i)).collect()),
        Value::Map(entries) => {
            let value_kind = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                k => k,
            };
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(map_key(k), scalar(&value_kind, v));
            }
            Json::Object(out)
        }
        v => scalar(&field.kind(), v),
    }
}

fn scalar(kind: &Kind, v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F32(n) => serde_json::Number::from_f64(f64::from(*n)).map_or(Json::Null, Json::Number),
        Value::F64(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        // Bytes in a list or map (none today): UTF-8 or base64, unmarked.
        Value::Bytes(b) => Json::String(match std::str::from_utf8(b) {
            Ok(t) => t.to_string(),
            Err(_) => base64::engine::general_purpose::STANDARD.encode(b),
        }),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(v) => Json::String(enum_name(e.name(), v.name())),
                None => Json::from(*n),
            },
            _ => Json::from(*n),
        },
        Value::Message(m) => message(&m.descriptor(), m),
        Value::List(_) | Value::Map(_) => Json::Null, // not nested in proto3
    }
}

/// `InvocationStatus` + `INVOCATION_STATUS_TIMED_OUT` → `timed_out`.
fn enum_name(enum_name: &str, value: &str) -> String {
    let prefix = screaming_snake(enum_name) + "_";
    value.strip_prefix(&prefix).unwrap_or(value).to_ascii_lowercase()
}

/// `InvocationStatus` → `INVOCATION_STATUS`; `NotFound` → `NOT_FOUND`.
pub fn screaming_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// Unix ms → RFC 3339 (UTC, milliseconds); 0 → null.
pub fn timestamp(ms: i64) -> Json {
    if ms == 0 {
        return Json::Null;
    }
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => Json::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        None => Json::from(ms),
    }
}

/// Unix ms → `2026-11-23 10:00:00` (UTC) for tables; 0 → `-`.
pub fn when(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) if ms != 0 => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => "-".into(),
    }
}

/// Aligned columns (see the module doc), each line newline-terminated.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let cols = headers.len();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .chain([headers[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..cols).map(width).collect();
    let right: Vec<bool> = (0..cols)
        .map(|i| {
            let mut cells = rows
                .iter()
                .filter_map(|r| r.get(i))
                .filter(|c| !c.is_empty())
                .peekable();
            cells.peek().is_some()
                && cells.all(|c| c.starts_with(|ch: char| ch.is_ascii_digit()) && !c.contains(char::is_whitespace))
        })
        .collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, w) in widths.iter().enumerate() {
            let cell = cells.get(i).map_or("", String::as_str);
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w - cell.chars().count();
            if right[i] {
                s.extend(std::iter::repeat_n(' ', pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// `key  value` lines, keys padded to the longest (for one record).
pub fn fields(pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{k:<w$}  {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoke_proto::{ErrorInfo, InvocationInfo, InvocationStatus, WarmFunction, WorkerInfo};

    #[test]
    fn json_follows_the_documented_rules() {
        let info = InvocationInfo {
            invocation_id: "inv-1".into(),
            status: InvocationStatus::TimedOut as i32,
            result: vec![0xff, 0x00],
            error: Some(ErrorInfo {
                error_type: "Function.Timeout".into(),
                error_message: "too slow".into(),
                raw: br#"{"a":1}"#.to_vec(),
            }),
            created_unix_ms: 1_795_000_000_123,
            completed_unix_ms: 0,
            ..Default::default()
        };
        let j = to_json(&info);
        assert_eq!(j["invocation_id"], "inv-1");
        assert_eq!(j["status"], "timed_out");
        assert_eq!(j["result"], Json::Null);
        assert_eq!(j["result_base64"], "/wA=");
        assert_eq!(j["error"]["raw"], r#"{"a":1}"#);
        assert!(j["error"].get("raw_base64").is_none());
        assert_eq!(j["created_at"], "2026-11-18T11:06:40.123Z");
        assert_eq!(j["completed_at"], Json::Null);
        assert!(j.get("created_unix_ms").is_none());
        assert_eq!(j["version"], 0, "defaults are present");
        assert_eq!(j["idempotency_key"], "");

        let none = to_json(&InvocationInfo::default());
        assert_eq!(none["error"], Json::Null, "an unset message is null");
        assert_eq!(none["result"], "", "empty bytes are an empty string");

        let w = to_json(&WorkerInfo {
            memory_mb: u64::MAX,
            warm: vec![WarmFunction {
                function: "f".into(),
                version: 2,
                idle: 1,
            }],
            ..Default::default()
        });
        assert_eq!(w["memory_mb"], u64::MAX);
        assert_eq!(w["warm"][0]["version"], 2);
        assert_eq!(w["attached_at"], Json::Null);
    }

    #[test]
    fn enum_prefixes_are_stripped() {
        assert_eq!(
            enum_name("InvocationStatus", "INVOCATION_STATUS_DEAD_LETTERED"),
            "dead_lettered"
        );
        assert_eq!(enum_name("Outcome", "OUTCOME_FUNCTION_ERROR"), "function_error");
        assert_eq!(enum_name("Outcome", "OTHER"), "other");
    }

    #[test]
    fn tables_align_and_right_align_numbers() {
        let t = table(
            &["NAME", "COUNT", "NOTE"],
            vec![row!["a", 5, "x y"], row!["longer", 120, ""]],
        );
        assert_eq!(t, "NAME    COUNT  NOTE\na           5  x y\nlonger    120\n");
    }
}
