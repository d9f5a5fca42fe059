//! The invocation event's envelope: the headers stoke puts around the
//! payload a function receives, on the invocation stream. One type, one
//! [`Envelope::encode`] (the accepting side: gateway, admin API, cron,
//! redrive) and one [`Envelope::decode`] (the dispatcher), tested to
//! round-trip. A message anyone publishes raw onto the stream, without
//! these headers, decodes too: a fresh invocation id, which is also its
//! key, and trigger `nats`.

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use stoke_core::naming::{self, headers};
use stoke_core::trace::TraceContext;

/// One invocation event's identity and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `Nats-Msg-Id`: JetStream drops a repeat within its duplicate window.
    /// Empty on a message published without one.
    pub msg_id: String,
    pub invocation_id: String,
    /// The idempotency key its completion is recorded under.
    pub key: String,
    /// `http`, `admin`, `cron`, ... (`nats` for a raw publish).
    pub trigger: String,
    /// A caller waits (RequestResponse: not retried) or not (Event).
    pub sync: bool,
    /// The version to run; `None`: the function's current one.
    pub version: Option<u32>,
    /// Attempts made before this message (a redriven dead letter).
    pub attempt_base: u32,
    /// Its trace context; `None` when the message carries none.
    pub trace: Option<TraceContext>,
    /// The digest its completion records for its key, when not its
    /// payload's (a function URL's event: the request's).
    pub digest: Option<String>,
    /// The caller waits on the response as it is streamed
    /// ([`crate::stream`]).
    pub stream: bool,
}

impl Envelope {
    /// An event keyed by its own fresh invocation id (a call without an
    /// idempotency key): nothing can have completed that key before.
    pub fn keyless(invocation_id: String, trigger: &str) -> Envelope {
        Envelope {
            msg_id: invocation_id.clone(),
            key: invocation_id.clone(),
            invocation_id,
            trigger: trigger.to_string(),
            sync: false,
            version: None,
            attempt_base: 0,
            trace: None,
            digest: None,
            stream: false,
        }
    }

    /// The key is this event's own (see [`Envelope::keyless`]): the
    /// invocation id itself, and not a redrive (which repeats an earlier
    /// event). A caller's key yields an id derived from it
    /// ([`crate::ids::id_for_key`]), never equal to it. Should a publisher
    /// fake this on the stream, the store's one completion per key still
    /// holds: the repeat runs, but its completion is refused as a duplicate.
    pub fn own_key(&self) -> bool {
        self.key == self.invocation_id && self.attempt_base == 0
    }

    /// The message headers that carry this envelope.
    pub fn encode(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if !self.msg_id.is_empty() {
            h.insert(headers::MSG_ID, self.msg_id.as_str());
        }
        h.insert(headers::INVOCATION_ID, self.invocation_id.as_str());
        h.insert(headers::IDEMPOTENCY_KEY, self.key.as_str());
        h.insert(headers::TRIGGER, self.trigger.as_str());
        let kind = if self.sync {
            naming::REQUEST_RESPONSE
        } else {
            naming::EVENT
        };
        h.insert(headers::INVOCATION_TYPE, kind);
        if let Some(trace) = &self.trace {
            h.insert(headers::TRACEPARENT, trace.traceparent().as_str());
        }
        if let Some(v) = self.version {
            h.insert(headers::FUNCTION_VERSION, v.to_string().as_str());
        }
        if self.attempt_base > 0 {
            h.insert(headers::ATTEMPT_BASE, self.attempt_base.to_string().as_str());
        }
        if let Some(digest) = &self.digest {
            h.insert(headers::PAYLOAD_DIGEST, digest.as_str());
        }
        if self.stream {
            h.insert(headers::RESPONSE_STREAM, "1");
        }
        h
    }

    /// The envelope `headers` carry. What is missing is filled in: the
    /// invocation id by `fresh_id`, the key by the invocation id, the
    /// trigger as `nats`; unreadable numbers count as absent.
    pub fn decode(headers: Option<&HeaderMap>, fresh_id: impl FnOnce() -> String) -> Envelope {
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
                .filter(|v| !v.is_empty())
        };
        let invocation_id = header(headers::INVOCATION_ID).unwrap_or_else(fresh_id);
        Envelope {
            msg_id: header(headers::MSG_ID).unwrap_or_default(),
            key: header(headers::IDEMPOTENCY_KEY).unwrap_or_else(|| invocation_id.clone()),
            invocation_id,
            trigger: header(headers::TRIGGER).unwrap_or_else(|| "nats".into()),
            sync: header(headers::INVOCATION_TYPE).as_deref() == Some(naming::REQUEST_RESPONSE),
            version: header(headers::FUNCTION_VERSION).and_then(|v| v.parse().ok()),
            attempt_base: header(headers::ATTEMPT_BASE).and_then(|b| b.parse().ok()).unwrap_or(0),
            trace: headers.and_then(trace_of),
            digest: header(headers::PAYLOAD_DIGEST),
            stream: header(headers::RESPONSE_STREAM).as_deref() == Some("1"),
        }
    }

    /// Publish this event for `function` with `payload`, and wait for
    /// JetStream to store it.
    pub async fn publish(
        &self,
        js: &jetstream::Context,
        function: &str,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck, PublishError> {
        js.publish_with_headers(naming::invoke_subject(function), self.encode(), payload)
            .await
            .map_err(PublishError::Send)?
            .await
            .map_err(PublishError::Ack)
    }
}

/// An event JetStream did not take.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("nats publish: {0}")]
    Send(jetstream::context::PublishError),
    #[error("nats publish ack: {0}")]
    Ack(jetstream::context::PublishError),
}

/// The trace context a message's headers carry: a valid `traceparent`,
/// else a valid `X-Amzn-Trace-Id` (header names in any case: NATS clients
/// differ).
pub fn trace_of(headers: &HeaderMap) -> Option<TraceContext> {
    let find = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| AsRef::<str>::as_ref(name).eq_ignore_ascii_case(wanted))
            .and_then(|(_, values)| values.first().map(|v| v.as_str().to_string()))
    };
    TraceContext::from_headers(
        find(headers::TRACEPARENT).as_deref(),
        find(headers::XRAY_TRACE_ID).as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::id_for_key;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        // What may travel as a header value: printable ASCII, no spaces
        // (keys are validated so; ids and triggers are made so).
        "[!-~]{1,40}"
    }

    prop_compose! {
        fn envelope()(
            msg_id in proptest::option::of(token()),
            invocation_id in token(),
            key in proptest::option::of(token()),
            trigger in "[a-z-]{1,12}",
            sync in any::<bool>(),
            version in proptest::option::of(any::<u32>()),
            attempt_base in any::<u32>(),
            trace in proptest::option::of(any::<u64>()),
            digest in proptest::option::of("[0-9a-f]{64}"),
            stream in any::<bool>(),
        ) -> Envelope {
            Envelope {
                msg_id: msg_id.unwrap_or_default(),
                key: key.unwrap_or_else(|| invocation_id.clone()),
                invocation_id,
                trigger,
                sync,
                version,
                attempt_base,
                trace: trace.map(|t| TraceContext::derived(&t.to_string(), 1_700_000_000)),
                digest,
                stream,
            }
        }
    }

    proptest! {
        #[test]
        fn what_is_encoded_decodes_the_same(e in envelope()) {
            let decoded = Envelope::decode(Some(&e.encode()), || panic!("the id is in the headers"));
            prop_assert_eq!(&decoded, &e);
            prop_assert_eq!(decoded.own_key(), e.own_key());
        }
    }

    #[test]
    fn a_raw_message_gets_a_fresh_id_as_its_key() {
        let e = Envelope::decode(None, || "fresh".into());
        assert_eq!(
            e,
            Envelope {
                msg_id: String::new(),
                trigger: "nats".into(),
                ..Envelope::keyless("fresh".into(), "nats")
            }
        );
        assert!(e.own_key());
        // Empty and unreadable values count as absent.
        let mut h = HeaderMap::new();
        h.insert(headers::INVOCATION_ID, "");
        h.insert(headers::FUNCTION_VERSION, "seven");
        h.insert(headers::ATTEMPT_BASE, "-1");
        let e = Envelope::decode(Some(&h), || "fresh".into());
        assert_eq!(
            (e.invocation_id.as_str(), e.version, e.attempt_base),
            ("fresh", None, 0)
        );
    }

    #[test]
    fn only_a_key_the_envelope_made_is_the_events_own() {
        // No idempotency key: the key is the fresh invocation id.
        let id = stoke_core::new_invocation_id();
        assert!(Envelope::keyless(id.clone(), "http").own_key());
        // A caller's key: the id is derived from it, never equal.
        for key in ["order-17".to_string(), stoke_core::new_invocation_id()] {
            let e = Envelope {
                key: key.clone(),
                invocation_id: id_for_key("f", &key),
                ..Envelope::keyless(id.clone(), "http")
            };
            assert!(!e.own_key(), "{key}");
        }
        // A redrive repeats an earlier event.
        let redrive = Envelope {
            attempt_base: 2,
            ..Envelope::keyless(id, "http")
        };
        assert!(!redrive.own_key());
    }

    #[test]
    fn a_trace_is_read_from_either_header_in_any_case() {
        let t = TraceContext::fresh();
        let mut h = HeaderMap::new();
        h.insert("TraceParent", t.traceparent().as_str());
        assert_eq!(trace_of(&h), Some(t));
        let mut h = HeaderMap::new();
        h.insert("x-amzn-trace-id", t.xray().as_str());
        assert_eq!(trace_of(&h).map(|x| x.trace_id()), Some(t.trace_id()));
    }
}
