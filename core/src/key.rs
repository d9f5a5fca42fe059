//! Concurrency key expressions: a dotted path into the event a function
//! receives, e.g. `customer_id` for an HTTP body `{"customer_id": 7}` or
//! `data.customer` for a subject message (whose event wraps the payload in
//! `data`), or `body.customer_id` for a request to a function URL (whose
//! event carries the body as a string: a string that holds JSON is
//! descended into). A numeric segment indexes an array (`items.0.sku`), and
//! a leading `$.` is accepted for readers used to JSONPath.
//!
//! The key is the value found there: a string as is, a number or boolean as
//! its JSON text, an object or array as its compact JSON. An event that is
//! not JSON, or has no value (or `null`) at the path, has no key and is
//! limited only by the function's concurrency.

/// Check an expression's syntax.
pub fn validate(expr: &str) -> Result<(), String> {
    let path = expr.strip_prefix("$.").unwrap_or(expr);
    if path.is_empty() {
        return Err("must name a field, e.g. \"customer_id\" or \"data.customer\"".into());
    }
    if path.len() > 256 {
        return Err("must be at most 256 characters".into());
    }
    if path.split('.').any(str::is_empty) {
        return Err(format!("{expr:?} has an empty segment"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{expr:?} must not contain whitespace"));
    }
    Ok(())
}

/// The key of `event` under `expr`, if it has one.
pub fn evaluate(expr: &str, event: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(event).ok()?;
    evaluate_value(expr, &value)
}

/// [`evaluate`] over an already parsed event.
pub fn evaluate_value(expr: &str, event: &serde_json::Value) -> Option<String> {
    let path = expr.strip_prefix("$.").unwrap_or(expr);
    let segments: Vec<&str> = path.split('.').collect();
    descend(event, &segments)
}

/// The value at `segments` under `at`.
fn descend(at: &serde_json::Value, segments: &[&str]) -> Option<String> {
    use serde_json::Value;
    let Some((segment, rest)) = segments.split_first() else {
        return match at {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
    };
    match at {
        Value::Object(map) => descend(map.get(*segment)?, rest),
        Value::Array(items) => descend(items.get(segment.parse::<usize>().ok()?)?, rest),
        // JSON inside a string (each parse is shorter than the string it
        // came from, so this ends).
        Value::String(s) => descend(&serde_json::from_str::<Value>(s).ok()?, segments),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_along_the_path() {
        let event = br#"{"customer":"c-1","n":7,"ok":true,"data":{"items":[{"sku":"a"},{"sku":"b"}]},"nil":null}"#;
        assert_eq!(evaluate("customer", event).as_deref(), Some("c-1"));
        assert_eq!(evaluate("$.customer", event).as_deref(), Some("c-1"));
        assert_eq!(evaluate("n", event).as_deref(), Some("7"));
        assert_eq!(evaluate("ok", event).as_deref(), Some("true"));
        assert_eq!(evaluate("data.items.1.sku", event).as_deref(), Some("b"));
        assert_eq!(evaluate("data.items.0", event).as_deref(), Some(r#"{"sku":"a"}"#));
    }

    #[test]
    fn missing_null_and_non_json_have_no_key() {
        let event = br#"{"a":{"b":1},"nil":null,"list":[1]}"#;
        assert_eq!(evaluate("a.c", event), None);
        assert_eq!(evaluate("a.b.c", event), None);
        assert_eq!(evaluate("nil", event), None);
        assert_eq!(evaluate("list.x", event), None);
        assert_eq!(evaluate("list.5", event), None);
        assert_eq!(evaluate("a", b"not json"), None);
    }

    #[test]
    fn syntax_is_checked() {
        assert!(validate("customer_id").is_ok());
        assert!(validate("$.data.customer").is_ok());
        for bad in ["", "$.", "a..b", ".a", "a.", "a b"] {
            assert!(validate(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_function_url_events_json_body_is_descended_into() {
        let event = br#"{"version":"2.0","body":"{\"customer_id\":7,\"tags\":[\"a\"]}","isBase64Encoded":false}"#;
        assert_eq!(evaluate("body.customer_id", event).as_deref(), Some("7"));
        assert_eq!(evaluate("body.tags.0", event).as_deref(), Some("a"));
        assert_eq!(
            evaluate("body", event).as_deref(),
            Some(r#"{"customer_id":7,"tags":["a"]}"#)
        );
        assert_eq!(evaluate("body.missing", event), None);
        assert_eq!(
            evaluate("version.x", event),
            None,
            "a string that is not JSON has no fields"
        );
    }
}
