//! Trace context: the W3C `traceparent` an event carries from its trigger to
//! the function, and the AWS X-Ray form Lambda runtime clients expect.
//!
//! One [`TraceContext`] is a trace id (16 bytes), the parent span id (8
//! bytes) and the trace flags. It travels with the event as a W3C
//! `traceparent` header (HTTP request → NATS message → dispatcher) and
//! reaches the function two ways: `Lambda-Runtime-Trace-Id` in X-Ray form
//! (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`, which runtime
//! clients copy into `_X_AMZN_TRACE_ID`) and `traceparent` as is. The X-Ray
//! root is the W3C trace id split after its first 8 hex digits, the mapping
//! AWS's own propagators use, so both forms name the same trace.
//!
//! stoke exports no spans of its own, so it passes the caller's parent id
//! through unchanged: the function's spans become children of the caller's.
//! A missing or malformed header is never an error: the event gets a fresh
//! context ([`TraceContext::fresh`]) or, for messages that may be delivered
//! again without one, one derived from the message's identity
//! ([`TraceContext::derived`]) so every attempt shares it.

use std::fmt;

use sha2::Digest as _;

/// A W3C trace context (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// The `sampled` bit of the trace flags.
const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// Parse a `traceparent` header value. `None` for anything the W3C
    /// Trace Context spec says to ignore: a wrong length or separator,
    /// version `ff`, hex that is not lowercase, an all-zero trace or parent
    /// id. A version above 00 is read by its first four fields, as the spec
    /// asks.
    pub fn parse(traceparent: &str) -> Option<TraceContext> {
        let s = traceparent.trim_matches([' ', '\t']);
        let b = s.as_bytes();
        if b.len() < 55 || !s.is_ascii() {
            return None;
        }
        let version = lower_hex::<1>(&s[0..2])?[0];
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let trace_id = lower_hex::<16>(&s[3..35])?;
        let parent_id = lower_hex::<8>(&s[36..52])?;
        let flags = lower_hex::<1>(&s[53..55])?[0];
        TraceContext::new(trace_id, parent_id, flags)
    }

    /// Parse an AWS X-Ray trace header (`X-Amzn-Trace-Id`, `_X_AMZN_TRACE_ID`):
    /// `Root=1-<8 hex>-<24 hex>`, optionally `Parent=<16 hex>` and
    /// `Sampled=0|1|?`, in any order, other fields ignored. Without a parent
    /// a random one is made; only `Sampled=0` means not sampled.
    pub fn from_xray(header: &str) -> Option<TraceContext> {
        let (mut root, mut parent, mut sampled) = (None, None, true);
        for field in header.split(';') {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            match k.trim() {
                "Root" => root = Some(v.trim()),
                "Parent" => parent = Some(v.trim()),
                "Sampled" => sampled = v.trim() != "0",
                _ => {}
            }
        }
        let root = root?.to_ascii_lowercase();
        let rest = root.strip_prefix("1-")?;
        let (time, random) = rest.split_once('-')?;
        if time.len() != 8 || random.len() != 24 {
            return None;
        }
        let trace_id = lower_hex::<16>(&format!("{time}{random}"))?;
        let parent_id = match parent {
            Some(p) => lower_hex::<8>(&p.to_ascii_lowercase())?,
            None => random_parent(),
        };
        TraceContext::new(trace_id, parent_id, if sampled { SAMPLED } else { 0 })
    }

    /// The context of an incoming request: its valid `traceparent`, else
    /// its valid X-Ray header, else none (the caller makes one).
    pub fn from_headers(traceparent: Option<&str>, xray: Option<&str>) -> Option<TraceContext> {
        traceparent
            .and_then(TraceContext::parse)
            .or_else(|| xray.and_then(TraceContext::from_xray))
    }

    /// A new trace, sampled. Its trace id starts with the current Unix time
    /// in seconds (8 hex digits) and goes on with 12 random bytes, so its
    /// X-Ray form is a valid X-Ray trace id.
    pub fn fresh() -> TraceContext {
        let random = *uuid::Uuid::new_v4().as_bytes();
        let mut trace_id = [0u8; 16];
        trace_id[..4].copy_from_slice(&unix_secs().to_be_bytes());
        trace_id[4..].copy_from_slice(&random[..12]);
        TraceContext::new(trace_id, random_parent(), SAMPLED).expect("time-prefixed ids are never zero")
    }

    /// A trace that is the same every time for the same `seed` (a
    /// message's identity), so every delivery of a message that came
    /// without a trace context shares one. `unix_secs` (when the message
    /// was published) starts the trace id, as in [`TraceContext::fresh`].
    pub fn derived(seed: &str, unix_secs: u32) -> TraceContext {
        let hash = sha2::Sha256::digest(seed.as_bytes());
        let mut trace_id = [0u8; 16];
        trace_id[..4].copy_from_slice(&unix_secs.to_be_bytes());
        trace_id[4..].copy_from_slice(&hash[..12]);
        let mut parent_id = [0u8; 8];
        parent_id.copy_from_slice(&hash[12..20]);
        // (All-zero ids are invalid; a hash that gives one is all but impossible.)
        trace_id[15] |= u8::from(trace_id == [0; 16]);
        parent_id[7] |= u8::from(parent_id == [0; 8]);
        TraceContext::new(trace_id, parent_id, SAMPLED).expect("non-zero ids")
    }

    fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<TraceContext> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(TraceContext {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id, 32 lowercase hex digits (what logs record).
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The W3C `traceparent` value (version 00).
    pub fn traceparent(&self) -> String {
        self.to_string()
    }

    /// The X-Ray form: `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`.
    pub fn xray(&self) -> String {
        let id = self.trace_id();
        format!(
            "Root=1-{}-{};Parent={};Sampled={}",
            &id[..8],
            &id[8..],
            hex::encode(self.parent_id),
            u8::from(self.sampled())
        )
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

/// Exactly `N` bytes written as `2N` lowercase hex digits.
fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn random_parent() -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    if p == [0; 8] {
        p[7] = 1;
    }
    p
}

fn unix_secs() -> u32 {
    u32::try_from(crate::now_ms() / 1000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W3C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const XRAY: &str = "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1";

    #[test]
    fn traceparent_to_xray_and_back() {
        let t = TraceContext::parse(W3C).expect("valid");
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled());
        assert_eq!(t.xray(), XRAY);
        assert_eq!(t.traceparent(), W3C);
        let back = TraceContext::from_xray(XRAY).expect("valid X-Ray");
        assert_eq!(back, t);
        assert_eq!(back.traceparent(), W3C);
        // Fields in any order, unknown ones and a trailing separator ignored.
        let shuffled =
            "Sampled=1;Lineage=a87bd80c:1|68fd508a:5;Parent=00f067aa0ba902b7;Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;";
        assert_eq!(TraceContext::from_xray(shuffled), Some(t));
    }

    #[test]
    fn the_sampled_flag_carries_over() {
        let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!t.sampled());
        assert!(t.xray().ends_with(";Sampled=0"), "{}", t.xray());
        let x = TraceContext::from_xray("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Sampled=0;Parent=00f067aa0ba902b7");
        assert_eq!(x, Some(t));
        // Other flag bits are kept, only bit 0 is "sampled".
        let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
        assert!(t.sampled());
        assert!(t.traceparent().ends_with("-03"));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            // Wrong version / reserved version ff.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Short, long, wrong separators.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            // Multi-byte characters where hex should be (no panic on slicing).
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
            "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let t = TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").unwrap();
        assert_eq!(t.traceparent(), W3C);
        assert_eq!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            None
        );
    }

    #[test]
    fn malformed_xray_headers_are_ignored() {
        for bad in [
            "",
            "Root=",
            "Root=2-4bf92f35-77b34da6a3ce929d0e0e4736",
            "Root=1-4bf92f3-77b34da6a3ce929d0e0e4736",
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e473",
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=xyz",
            "Parent=00f067aa0ba902b7",
        ] {
            assert_eq!(TraceContext::from_xray(bad), None, "{bad:?}");
        }
        // No parent: one is made up, the trace id is kept.
        let t = TraceContext::from_xray("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn headers_prefer_a_valid_traceparent_then_xray() {
        let t = TraceContext::parse(W3C).unwrap();
        assert_eq!(TraceContext::from_headers(Some(W3C), Some("junk")), Some(t));
        assert_eq!(TraceContext::from_headers(Some("junk"), Some(XRAY)), Some(t));
        assert_eq!(TraceContext::from_headers(Some("junk"), None), None);
        assert_eq!(TraceContext::from_headers(None, None), None);
    }

    #[test]
    fn fresh_contexts_are_well_formed_and_distinct() {
        let a = TraceContext::fresh();
        let b = TraceContext::fresh();
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(TraceContext::parse(&a.traceparent()), Some(a));
        assert_eq!(TraceContext::from_xray(&a.xray()), Some(a));
        assert!(a.sampled());
        // The X-Ray root starts with the time in seconds.
        let secs = u32::from_str_radix(&a.trace_id()[..8], 16).unwrap();
        assert!((i64::from(secs) - crate::now_ms() / 1000).abs() < 5);
        let x = a.xray();
        let expected_len = "Root=1-".len() + 8 + 1 + 24 + ";Parent=".len() + 16 + ";Sampled=1".len();
        assert!(
            x.len() == expected_len && x.starts_with("Root=1-") && x.ends_with(";Sampled=1"),
            "{x}"
        );
    }

    #[test]
    fn derived_contexts_are_stable_per_seed() {
        let a = TraceContext::derived("STOKE_EVENTS:42", 0x5759e988);
        assert_eq!(a, TraceContext::derived("STOKE_EVENTS:42", 0x5759e988));
        assert_ne!(a, TraceContext::derived("STOKE_EVENTS:43", 0x5759e988));
        assert!(a.trace_id().starts_with("5759e988"));
        assert_eq!(TraceContext::parse(&a.traceparent()), Some(a));
    }
}
