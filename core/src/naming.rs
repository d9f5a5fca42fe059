//! Names on the wire: JetStream stream, subjects, consumers and headers.
//! Every role derives them from here so they cannot drift apart.

/// The work-queue stream holding invocation events addressed to one function
/// (HTTP, admin invoke; cron later). One subject per function, so one consumer
/// per subject, as work-queue retention requires.
pub const INVOKE_STREAM: &str = "STOKE_INVOKE";
/// Subjects captured by [`INVOKE_STREAM`].
pub const INVOKE_SUBJECTS: &str = "stoke.invoke.>";

/// Subject an invocation event for `function` is published on.
pub fn invoke_subject(function: &str) -> String {
    format!("stoke.invoke.{function}")
}

/// Durable pull consumer the dispatchers share for `function`.
pub fn invoke_consumer(function: &str) -> String {
    format!("fn-{function}")
}

/// The limits-retention stream that captures user subjects functions
/// subscribe to (`[[triggers]] subject = "orders.*"`). Every subscription
/// is its own durable consumer on it, so several functions each get every
/// message and one's backlog never holds up another's.
pub const EVENTS_STREAM: &str = "STOKE_EVENTS";

/// Durable consumer of `function`'s subscription to `subject`.
pub fn subscription_consumer(function: &str, subject: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(subject.as_bytes());
    format!("sub-{function}-{}", hex::encode(&h[..4]))
}

/// Does subject filter `a` match everything filter `b` matches?
pub fn subject_covers(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for (i, at) in a.iter().enumerate() {
        match (*at, b.get(i)) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(bt)) if *bt != ">" => {}
            (lit, Some(bt)) if lit == *bt => {}
            _ => return false,
        }
    }
    a.len() == b.len()
}

/// The smallest set of filters that captures all of `subjects` without two
/// overlapping (a stream refuses overlapping subjects): filters covered by
/// another are dropped. Overlaps that neither covers (`a.*` and `*.b`)
/// are merged into the enclosing `>` of their common prefix.
pub fn subject_cover(subjects: &[String]) -> Vec<String> {
    let mut set: Vec<String> = subjects.to_vec();
    set.sort();
    set.dedup();
    loop {
        let mut changed = false;
        'outer: for i in 0..set.len() {
            for j in 0..set.len() {
                if i == j {
                    continue;
                }
                if subject_covers(&set[i], &set[j]) {
                    set.remove(j);
                    changed = true;
                    break 'outer;
                }
                if subjects_overlap(&set[i], &set[j]) {
                    let merged = common_prefix_wildcard(&set[i], &set[j]);
                    let (hi, lo) = (i.max(j), i.min(j));
                    set.remove(hi);
                    set.remove(lo);
                    set.push(merged);
                    changed = true;
                    break 'outer;
                }
            }
        }
        if !changed {
            set.sort();
            return set;
        }
    }
}

/// Can one subject match both filters?
fn subjects_overlap(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (Some(x), Some(y)) if *x == "*" || *y == "*" || x == y => {}
            _ => return false,
        }
    }
    true
}

fn common_prefix_wildcard(a: &str, b: &str) -> String {
    let prefix: Vec<&str> = a
        .split('.')
        .zip(b.split('.'))
        .take_while(|(x, y)| x == y && *x != "*" && *x != ">")
        .map(|(x, _)| x)
        .collect();
    if prefix.is_empty() {
        ">".into()
    } else {
        format!("{}.>", prefix.join("."))
    }
}

/// Core-NATS subject a completed invocation's result is announced on, so a
/// waiting synchronous caller wakes without polling the store.
pub fn result_subject(invocation_id: &str) -> String {
    format!("stoke.result.{invocation_id}")
}

/// The limits-retention stream holding functions' output, one message per
/// chunk of lines (`stoke.logs.<function>.<invocation token>`).
pub const LOGS_STREAM: &str = "STOKE_LOGS";
/// Subjects captured by [`LOGS_STREAM`].
pub const LOGS_SUBJECTS: &str = "stoke.logs.>";

/// The subject token of an invocation id in log subjects. Ids stoke makes
/// (UUIDs) are used as they are; anything else an event header may carry
/// (dots, wildcards, spaces) becomes `_h` + the hex of its SHA-256, so no id
/// can widen a filter. Output of a sandbox between invocations (empty id)
/// is `_`.
pub fn log_token(invocation_id: &str) -> String {
    use sha2::Digest as _;
    if invocation_id.is_empty() {
        return "_".into();
    }
    let plain = invocation_id.len() <= 128 && invocation_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if plain {
        return invocation_id.to_string();
    }
    format!(
        "_h{}",
        hex::encode(&sha2::Sha256::digest(invocation_id.as_bytes())[..16])
    )
}

/// Subject a chunk of `function`'s output for `invocation_id` is stored on.
pub fn log_subject(function: &str, invocation_id: &str) -> String {
    format!("stoke.logs.{function}.{}", log_token(invocation_id))
}

/// Filter for every chunk of one invocation, whatever its function.
pub fn invocation_logs_filter(invocation_id: &str) -> String {
    format!("stoke.logs.*.{}", log_token(invocation_id))
}

/// Core-NATS subject a streamed response's parts are published on, for
/// the caller waiting on them.
pub fn stream_subject(invocation_id: &str) -> String {
    format!("stoke.stream.{}", log_token(invocation_id))
}

/// Filter for every chunk of one function.
pub fn function_logs_filter(function: &str) -> String {
    format!("stoke.logs.{function}.*")
}

/// Message headers carried by an invocation event.
pub mod headers {
    /// JetStream de-duplication id; stoke sets it to the idempotency key.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const INVOCATION_ID: &str = "Stoke-Invocation-Id";
    pub const IDEMPOTENCY_KEY: &str = "Stoke-Idempotency-Key";
    /// `http`, `admin`, `cron`, `subject`.
    pub const TRIGGER: &str = "Stoke-Trigger";
    /// `RequestResponse` (a caller waits: not retried) or `Event` (async: retried).
    pub const INVOCATION_TYPE: &str = "Stoke-Invocation-Type";
    /// W3C trace context (`00-<trace id>-<parent id>-<flags>`), as HTTP
    /// carries it; also read from messages on subscribed subjects.
    pub const TRACEPARENT: &str = "traceparent";
    /// AWS X-Ray trace header, read when no valid `traceparent` came.
    pub const XRAY_TRACE_ID: &str = "X-Amzn-Trace-Id";
    /// The function version current when the event was accepted.
    pub const FUNCTION_VERSION: &str = "Stoke-Function-Version";
    /// Attempts already made before this message (a redriven dead letter).
    pub const ATTEMPT_BASE: &str = "Stoke-Attempt-Base";
    /// What identifies the event for its idempotency key, when that is not
    /// its payload (a function URL's event carries the time; the digest is
    /// of the request).
    pub const PAYLOAD_DIGEST: &str = "Stoke-Payload-Digest";
    /// `1`: the caller waits on the response as it is streamed
    /// (`stream_subject`).
    pub const RESPONSE_STREAM: &str = "Stoke-Response-Stream";
}

/// Lambda's invocation types.
pub const REQUEST_RESPONSE: &str = "RequestResponse";
pub const EVENT: &str = "Event";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_follows_nats_wildcards() {
        assert!(subject_covers("orders.*", "orders.new"));
        assert!(subject_covers("orders.>", "orders.eu.new"));
        assert!(subject_covers("orders.>", "orders.*"));
        assert!(subject_covers(">", "a.b.c"));
        assert!(!subject_covers("orders.*", "orders.eu.new"));
        assert!(!subject_covers("orders.*", "orders.>"));
        assert!(!subject_covers("orders.new", "orders.*"));
        assert!(!subject_covers("orders", "orders.new"));
    }

    #[test]
    fn log_subjects_cannot_be_widened_by_an_invocation_id() {
        let id = "0193c0de-7a51-7c3e-9a1b-2f4c5d6e7f80";
        assert_eq!(log_subject("hello", id), format!("stoke.logs.hello.{id}"));
        assert_eq!(log_subject("hello", ""), "stoke.logs.hello._");
        for hostile in [">", "*", "a.b", "a b", "x.>", "_", "_h00"] {
            let token = log_token(hostile);
            assert!(token.starts_with("_h") && token.len() == 34, "{hostile:?} -> {token}");
            assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        }
        assert_ne!(log_token("a.b"), log_token("a.c"));
        assert_eq!(invocation_logs_filter(id), format!("stoke.logs.*.{id}"));
        assert!(subject_covers(
            &function_logs_filter("hello"),
            &log_subject("hello", id)
        ));
        assert!(!subject_covers(
            &function_logs_filter("hello"),
            &log_subject("hello-2", id)
        ));
    }

    #[test]
    fn cover_set_has_no_overlaps_and_captures_everything() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            subject_cover(&s(&["orders.*", "orders.new", "users.created"])),
            s(&["orders.*", "users.created"])
        );
        assert_eq!(subject_cover(&s(&["a.*", "*.b"])), s(&[">"]));
        assert_eq!(subject_cover(&s(&["x.a.*", "x.*.b"])), s(&["x.>"]));
        let input = s(&["a.b", "a.*", "c.>", "c.d.e", "f"]);
        let cover = subject_cover(&input);
        for sub in &input {
            assert!(
                cover.iter().any(|c| subject_covers(c, sub)),
                "{sub} not captured by {cover:?}"
            );
        }
        for (i, a) in cover.iter().enumerate() {
            for b in &cover[i + 1..] {
                assert!(!subjects_overlap(a, b), "{a} overlaps {b}");
            }
        }
    }
}

/// Which version a qualified function name (Lambda's `name:qualifier`) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qualifier<'a> {
    /// `name`: the current version.
    Current,
    /// `name:7`.
    Version(u32),
    /// `name:live`.
    Alias(&'a str),
}

/// Split `name`, `name:7` or `name:alias`. Function names and aliases never
/// hold a ':' and aliases start with a letter, so this is unambiguous; a
/// qualifier that is neither a version number nor an alias name is returned
/// as an alias and found by no one.
pub fn split_qualified(qualified: &str) -> (&str, Qualifier<'_>) {
    match qualified.split_once(':') {
        None => (qualified, Qualifier::Current),
        Some((name, q)) => match q.parse::<u32>() {
            Ok(v) if q.starts_with(|c: char| c.is_ascii_digit()) => (name, Qualifier::Version(v)),
            _ => (name, Qualifier::Alias(q)),
        },
    }
}

#[cfg(test)]
mod qualifier_tests {
    use super::{Qualifier, split_qualified};

    #[test]
    fn qualified_names_split_into_name_and_version_or_alias() {
        assert_eq!(split_qualified("hello"), ("hello", Qualifier::Current));
        assert_eq!(split_qualified("hello:7"), ("hello", Qualifier::Version(7)));
        assert_eq!(split_qualified("hello:live"), ("hello", Qualifier::Alias("live")));
        assert_eq!(split_qualified("hello:+7"), ("hello", Qualifier::Alias("+7")));
        assert_eq!(split_qualified("a-1:b:c"), ("a-1", Qualifier::Alias("b:c")));
    }
}
