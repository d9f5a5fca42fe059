//! What a delivered message says about its event: who it is (invocation id,
//! idempotency key), where it came from, which attempt this is, and the
//! event the function receives. Invocation-stream messages carry this in
//! stoke's headers (`stoke_bus::Envelope`, decoded here); a message on a
//! subscribed subject, from any NATS client, is wrapped with where it came
//! from.

use async_nats::jetstream;
use bytes::Bytes;
use stoke_core::naming;
use stoke_core::trace::TraceContext;
use stoke_store::{AttemptOutcome, AttemptRecord, Store, StoreError};

/// One event as delivered.
pub(crate) struct Envelope {
    pub invocation_id: String,
    pub key: String,
    pub trigger: String,
    pub sync: bool,
    pub version: Option<u32>,
    /// Its trace: from its headers, else derived from its identity (every
    /// delivery of the message shares it).
    pub trace: TraceContext,
    /// Attempt number across redrives (1-based); see [`Envelope::number_attempt`].
    pub attempt: u32,
    /// Attempts a redrive carried over (the `Stoke-Attempt-Base` header).
    base: u32,
    /// Times JetStream delivered this message (1 the first time).
    pub delivered: u32,
    /// The key is this event's own, so on its first delivery nothing can
    /// have completed it yet: a subject message without `Nats-Msg-Id`
    /// (`STOKE_EVENTS:<sequence>@<ms>`), or a call without an idempotency key
    /// (`stoke_bus::Envelope::own_key`).
    pub own_key: bool,
    pub created_ms: i64,
    /// The event the function receives.
    pub payload: Bytes,
    /// The digest its completion records, when not its payload's.
    pub digest: Option<String>,
    /// Its caller waits on the response as it is streamed.
    pub stream: bool,
}

/// Delivery count and publish time of a message.
fn delivery(msg: &jetstream::Message) -> (u32, i64, u64) {
    match msg.info() {
        Ok(info) => (
            u32::try_from(info.delivered).unwrap_or(1).max(1),
            (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
            info.stream_sequence,
        ),
        Err(_) => (1, stoke_core::now_ms(), 0),
    }
}

/// An event on the invocation stream (HTTP, admin API, cron, redrive).
pub(crate) fn invocation(msg: &jetstream::Message) -> Envelope {
    let (delivered, created_ms, _) = delivery(msg);
    let e = stoke_bus::Envelope::decode(msg.headers.as_ref(), stoke_core::new_invocation_id);
    let own_key = e.own_key();
    let trace = e
        .trace
        .unwrap_or_else(|| TraceContext::derived(&e.invocation_id, secs(created_ms)));
    Envelope {
        own_key,
        key: e.key,
        invocation_id: e.invocation_id,
        trigger: e.trigger,
        sync: e.sync,
        version: e.version,
        trace,
        // A redriven dead letter carries on counting from its earlier attempts.
        attempt: e.attempt_base + 1,
        base: e.attempt_base,
        delivered,
        created_ms,
        payload: msg.payload.clone(),
        digest: e.digest,
        stream: e.stream,
    }
}

/// A message on a subscribed subject, and the event the function receives
/// for it (see [`subject_event`]; a batch embeds it in its records). Its key
/// is its `Nats-Msg-Id`, else `STOKE_EVENTS:<sequence>@<publish time, ms>`:
/// a sequence alone repeats once the stream is deleted and made again.
pub(crate) fn subscription(msg: &jetstream::Message, function: &str) -> (Envelope, serde_json::Value) {
    let (delivered, created_ms, seq) = delivery(msg);
    let (key, own_key, event) = subject_event(msg, created_ms, seq);
    // Without a trace context of its own, a message's trace follows from its
    // key: every function subscribed to it, and every retry, shares one.
    let trace = trace_of(msg).unwrap_or_else(|| TraceContext::derived(&key, secs(created_ms)));
    // Every delivery of the message gets the same id: time-ordered when the
    // key is the message's own (its sequence, and its publish time, read).
    // Made from the sequence alone and the time, as before the key had the
    // time in it, so a message delivered across that upgrade keeps its id.
    let invocation_id = if own_key && seq > 0 {
        stoke_bus::ids::id_for_message(function, &sequence_key(seq), created_ms)
    } else {
        stoke_bus::ids::id_for_key(function, &key)
    };
    let env = Envelope {
        invocation_id,
        key,
        trigger: "subject".into(),
        sync: false,
        version: None,
        trace,
        attempt: 1,
        base: 0,
        delivered,
        own_key,
        created_ms,
        payload: Bytes::from(serde_json::to_vec(&event).expect("JSON values serialise")),
        digest: None,
        stream: false,
    };
    (env, event)
}

/// The one invocation that runs a batch of subject messages: its own id
/// (and key), numbered as its most-tried item.
pub(crate) fn batch_run(first: &Envelope, attempt: u32) -> Envelope {
    let invocation_id = stoke_core::new_invocation_id();
    Envelope {
        key: invocation_id.clone(),
        invocation_id,
        trigger: "subject-batch".into(),
        sync: false,
        version: None,
        // A batch holds many messages' traces; it starts its own.
        trace: TraceContext::fresh(),
        attempt,
        base: 0,
        delivered: 1,
        own_key: true,
        created_ms: first.created_ms,
        payload: Bytes::new(),
        digest: None,
        stream: false,
    }
}

/// The trace context a message carries (see `stoke_bus::envelope::trace_of`).
fn trace_of(msg: &jetstream::Message) -> Option<TraceContext> {
    stoke_bus::envelope::trace_of(msg.headers.as_ref()?)
}

fn secs(ms: i64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(0)
}

/// The key of a subject message and the event a function receives for it:
/// `{"source":"nats","subject","sequence","publishedAt","headers":{..},"data":..}`
/// (`data` is the payload as JSON when it parses, else a string;
/// non-UTF-8 payloads come as `dataBase64`).
fn subject_event(msg: &jetstream::Message, published_ms: i64, seq: u64) -> (String, bool, serde_json::Value) {
    use base64::Engine as _;
    let mut headers = serde_json::Map::new();
    for (name, values) in msg.headers.iter().flat_map(|h| h.iter()) {
        let v: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
        let v = if v.len() == 1 {
            serde_json::json!(v[0])
        } else {
            serde_json::json!(v)
        };
        headers.insert(name.to_string(), v);
    }
    let msg_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(naming::headers::MSG_ID))
        .map(|v| v.as_str().to_string())
        .filter(|k| !k.is_empty());
    let own_key = msg_id.is_none();
    let key = msg_id.unwrap_or_else(|| format!("{}@{published_ms}", sequence_key(seq)));
    let mut event = serde_json::json!({
        "source": "nats",
        "subject": msg.subject.as_str(),
        "sequence": seq,
        "publishedAt": rfc3339_ms(published_ms),
        "headers": headers,
    });
    match std::str::from_utf8(&msg.payload) {
        Ok(text) => {
            event["data"] = serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.into()));
        }
        Err(_) => event["dataBase64"] = base64::engine::general_purpose::STANDARD.encode(&msg.payload).into(),
    }
    (key, own_key, event)
}

/// `STOKE_EVENTS:<sequence>`: a subject message's own key before it had
/// its publish time appended (see [`Envelope::sequence_only_key`]).
fn sequence_key(seq: u64) -> String {
    format!("{}:{seq}", naming::EVENTS_STREAM)
}

/// RFC 3339 UTC with milliseconds.
fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl Envelope {
    /// A subject event's envelope as delivered for the `delivered`-th time,
    /// keyed by its own sequence (`own_key`) or by a publisher's id.
    #[cfg(test)]
    pub fn for_test(function: &str, key: &str, own_key: bool, delivered: u32) -> Envelope {
        Envelope {
            invocation_id: stoke_bus::ids::id_for_key(function, key),
            key: key.into(),
            trigger: "subject".into(),
            sync: false,
            version: None,
            trace: TraceContext::fresh(),
            attempt: 1,
            base: 0,
            delivered,
            own_key,
            created_ms: 0,
            payload: Bytes::new(),
            digest: None,
            stream: false,
        }
    }

    /// A subject message keyed by its own sequence `seq` and publish time,
    /// as delivered for the `delivered`-th time.
    #[cfg(test)]
    pub fn for_test_message(function: &str, seq: u64, published_ms: i64, delivered: u32) -> Envelope {
        Envelope {
            invocation_id: stoke_bus::ids::id_for_message(function, &sequence_key(seq), published_ms),
            key: format!("{}@{published_ms}", sequence_key(seq)),
            created_ms: published_ms,
            ..Envelope::for_test(function, "", true, delivered)
        }
    }

    /// The broker may have recorded this event when it accepted it
    /// (`Store::record_accepted`: an async call, or one with a caller's
    /// key, on the invocation stream), so it has a record to mark running.
    pub fn recorded_when_accepted(&self) -> bool {
        !matches!(self.trigger.as_str(), "subject" | "subject-batch") && (!self.sync || !self.own_key)
    }

    /// The key a subject message keyed by its own sequence had before its
    /// publish time was added to it (`STOKE_EVENTS:<sequence>`), when this
    /// is such a message: a completion recorded under it is this message's
    /// only if its invocation id says so (see `handle::already_ended`).
    pub fn sequence_only_key(&self) -> Option<&str> {
        let (old, _published) = self.key.split_once('@').filter(|_| self.own_key)?;
        let seq = old.strip_prefix(naming::EVENTS_STREAM)?.strip_prefix(':')?;
        (!seq.is_empty()).then_some(old)
    }

    /// Attempts a redrive carried over (0 for a first life).
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Whether JetStream delivered this message before.
    pub fn redelivered(&self) -> bool {
        self.delivered > 1
    }

    /// Number this attempt: one above the attempts metered so far. The
    /// delivery count is not used: a message also comes back when it was
    /// deferred (its concurrency key busy) or no worker was free, and those
    /// are not attempts. Only a repeat delivery needs the store.
    pub async fn number_attempt(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        if self.redelivered() || self.base > 0 {
            let made = store.last_attempt(&self.invocation_id).await?;
            self.attempt = made.max(self.base) + 1;
        }
        Ok(())
    }

    /// Number this attempt by its delivery count, for a message that can
    /// only come back after an earlier try (a batch item).
    pub fn number_by_delivery(&mut self) {
        self.attempt = self.base + self.delivered;
    }

    /// An attempt row of this event, not yet metered.
    pub fn attempt(&self, function: &str, version: u32, memory_mb: u32, outcome: AttemptOutcome) -> AttemptRecord {
        let now = stoke_core::now_ms();
        AttemptRecord {
            invocation_id: self.invocation_id.clone(),
            function: function.to_string(),
            version,
            idempotency_key: self.key.clone(),
            attempt: self.attempt,
            epoch: 0,
            trigger: self.trigger.clone(),
            worker: String::new(),
            started_ms: now,
            ended_ms: now,
            duration_us: 0,
            memory_mb,
            max_memory_used_kb: 0,
            cold: false,
            init_duration_us: 0,
            outcome,
            error_type: None,
            error_message: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Envelope;

    #[test]
    fn only_async_or_caller_keyed_calls_were_recorded_when_accepted() {
        let call = |sync: bool, own_key: bool| Envelope {
            trigger: "http".into(),
            sync,
            own_key,
            ..Envelope::for_test("f", "k", own_key, 1)
        };
        assert!(call(false, true).recorded_when_accepted(), "async");
        assert!(call(true, false).recorded_when_accepted(), "a caller's key");
        assert!(!call(true, true).recorded_when_accepted(), "sync, no key");
        assert!(
            !Envelope::for_test("f", "k", false, 1).recorded_when_accepted(),
            "a subject message"
        );
    }
}
