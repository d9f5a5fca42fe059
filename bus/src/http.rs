//! The event an HTTP request to a function URL becomes: Lambda's function
//! URL event, payload format 2.0, field for field, so every adapter written
//! for Lambda (Mangum, serverless-http, `lambda_http`, the Lambda Web
//! Adapter) reads it as it would on AWS.
//!
//! What the function sees as its path (`rawPath`) is the part of the URL
//! under the function's prefix: `/fn/shop/items/42?q=x` reaches `shop` as
//! `rawPath` `/items/42`, `rawQueryString` `q=x`, so a framework's own
//! routes work without knowing the prefix. A request that matched a route
//! at the gateway's root (`stoke_core::routes`) keeps its whole path, and
//! the event carries the route as `routeKey` and its `pathParameters`, as
//! API Gateway's HTTP API sends them.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use stoke_core::percent::decode;

/// One HTTP request as the gateway received it.
#[derive(Debug, Clone, Default)]
pub struct HttpCall {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path under the function's prefix, percent-encoded as sent,
    /// starting with `/`.
    pub raw_path: String,
    /// The query string as sent, without `?`.
    pub raw_query: String,
    /// Every header as sent, in order (names in any case).
    pub headers: Vec<(String, String)>,
    /// The body (shared with the request's payload, not copied).
    pub body: bytes::Bytes,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: String,
    pub source_ip: String,
    /// The gateway route it matched; None for a function URL.
    pub route: Option<stoke_core::routes::RouteMatch>,
}

impl HttpCall {
    /// What identifies the request for an idempotency key: its method,
    /// path, query and body (not the time or request id the event carries).
    pub fn digest_input(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(self.body.len() + 64);
        for part in [&self.method, &self.raw_path, &self.raw_query] {
            d.extend_from_slice(part.as_bytes());
            d.push(0);
        }
        d.extend_from_slice(&self.body);
        d
    }
}

/// A request the event cannot describe.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HttpEventError {
    #[error("malformed percent-encoding in the query string: {0:?}")]
    Query(String),
    #[error(transparent)]
    Path(#[from] stoke_core::routes::BadPath),
}

/// The function URL event (payload 2.0) of `call` to `function`, with API
/// request id `request_id`, received at `now_ms` (Unix ms).
pub fn url_event(call: &HttpCall, function: &str, request_id: &str, now_ms: i64) -> Result<Value, HttpEventError> {
    let mut headers = Map::new();
    let mut cookies: Vec<Value> = Vec::new();
    for (name, value) in &call.headers {
        let name = name.to_ascii_lowercase();
        if name == "cookie" {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(Value::from),
            );
            continue;
        }
        match headers.get_mut(&name) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => {
                headers.insert(name, Value::from(value.as_str()));
            }
        }
    }
    let header = |name: &str| headers.get(name).and_then(Value::as_str).unwrap_or("").to_string();
    let domain = header("host");
    let domain_prefix = domain.split('.').next().unwrap_or("").to_string();
    let user_agent = header("user-agent");
    let route_key = call.route.as_ref().map_or("$default", |r| r.route_key.as_str());
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": call.raw_path,
        "rawQueryString": call.raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": function,
            "domainName": domain,
            "domainPrefix": domain_prefix,
            "http": {
                "method": call.method,
                "path": decode(&call.raw_path).unwrap_or_else(|| call.raw_path.clone()),
                "protocol": call.protocol,
                "sourceIp": call.source_ip,
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": clf_time(now_ms),
            "timeEpoch": now_ms,
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if let Some(route) = call.route.as_ref().filter(|r| !r.path_parameters.is_empty()) {
        event["pathParameters"] = route
            .path_parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect::<Map<_, _>>()
            .into();
    }
    if !call.raw_query.is_empty() {
        event["queryStringParameters"] = Value::Object(query_parameters(&call.raw_query)?);
    }
    if !call.body.is_empty() {
        match std::str::from_utf8(&call.body) {
            Ok(text) => event["body"] = Value::from(text),
            Err(_) => {
                event["body"] = Value::from(base64::engine::general_purpose::STANDARD.encode(&call.body));
                event["isBase64Encoded"] = Value::Bool(true);
            }
        }
    }
    Ok(event)
}

/// `a=1&b=2&a=3` → `{"a": "1,3", "b": "2"}`, decoded (`+` is a space).
fn query_parameters(raw: &str) -> Result<Map<String, Value>, HttpEventError> {
    let mut params = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(&k.replace('+', " ")).ok_or_else(|| HttpEventError::Query(k.to_string()))?;
        let value = decode(&v.replace('+', " ")).ok_or_else(|| HttpEventError::Query(v.to_string()))?;
        match params.get_mut(&key) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => {
                params.insert(key, Value::from(value));
            }
        }
    }
    Ok(params)
}

/// `12/Mar/2020:19:03:58 +0000` (the time field's format).
fn clf_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%d/%b/%Y:%H:%M:%S +0000").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> HttpCall {
        HttpCall {
            method: "POST".into(),
            raw_path: "/items/a%20b".into(),
            raw_query: "q=x+y&tag=1&tag=2&empty".into(),
            headers: vec![
                ("Host".into(), "shop.example.com".into()),
                ("User-Agent".into(), "curl/8".into()),
                ("X-Many".into(), "a".into()),
                ("x-many".into(), "b".into()),
                ("Cookie".into(), "s=1; t=2".into()),
            ],
            body: bytes::Bytes::from_static(br#"{"name":"Ada"}"#),
            protocol: "HTTP/1.1".into(),
            source_ip: "127.0.0.1".into(),
            route: None,
        }
    }

    #[test]
    fn a_request_becomes_the_2_0_event_field_for_field() {
        let e = url_event(&call(), "shop", "req-1", 1_584_039_838_000).unwrap();
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "$default");
        assert_eq!(e["rawPath"], "/items/a%20b");
        assert_eq!(e["rawQueryString"], "q=x+y&tag=1&tag=2&empty");
        assert_eq!(e["cookies"], json!(["s=1", "t=2"]));
        assert_eq!(e["headers"]["x-many"], "a,b", "repeated headers comma-joined");
        assert_eq!(e["headers"]["host"], "shop.example.com");
        assert!(e["headers"].get("cookie").is_none(), "cookies go to `cookies`");
        assert_eq!(
            e["queryStringParameters"],
            json!({"q": "x y", "tag": "1,2", "empty": ""})
        );
        let rc = &e["requestContext"];
        assert_eq!(rc["accountId"], "anonymous");
        assert_eq!(rc["domainName"], "shop.example.com");
        assert_eq!(rc["domainPrefix"], "shop");
        assert_eq!(rc["http"]["method"], "POST");
        assert_eq!(rc["http"]["path"], "/items/a b");
        assert_eq!(rc["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(rc["http"]["userAgent"], "curl/8");
        assert_eq!(rc["requestId"], "req-1");
        assert_eq!(
            (rc["routeKey"].as_str(), rc["stage"].as_str()),
            (Some("$default"), Some("$default"))
        );
        assert_eq!(rc["time"], "12/Mar/2020:19:03:58 +0000");
        assert_eq!(rc["timeEpoch"], 1_584_039_838_000i64);
        assert_eq!(e["body"], r#"{"name":"Ada"}"#);
        assert_eq!(e["isBase64Encoded"], false);
        // lambda_http tells 1.0 from 2.0 by these: a 2.0 event has none.
        assert!(e.get("httpMethod").is_none() && rc.get("httpMethod").is_none());
        assert!(e.get("pathParameters").is_none(), "a function URL has none");
    }

    #[test]
    fn a_routed_request_carries_its_route_and_parameters() {
        let mut c = call();
        c.raw_path = "/users/42/files/a%20b".into();
        c.route = Some(stoke_core::routes::RouteMatch {
            function: "users".into(),
            route_key: "GET /users/{id}/files/{path+}".into(),
            path_parameters: vec![("id".into(), "42".into()), ("path".into(), "a b".into())],
        });
        let e = url_event(&c, "users", "r", 0).unwrap();
        assert_eq!(e["routeKey"], "GET /users/{id}/files/{path+}");
        assert_eq!(e["requestContext"]["routeKey"], "GET /users/{id}/files/{path+}");
        assert_eq!(e["rawPath"], "/users/42/files/a%20b", "the whole path");
        assert_eq!(e["pathParameters"], json!({"id": "42", "path": "a b"}));
    }

    #[test]
    fn a_binary_body_is_base64_and_an_empty_one_absent() {
        let mut c = call();
        c.body = bytes::Bytes::from_static(&[0x89, b'P', b'N', b'G', 0, 0xff]);
        let e = url_event(&c, "f", "r", 0).unwrap();
        assert_eq!(e["isBase64Encoded"], true);
        let back = base64::engine::general_purpose::STANDARD
            .decode(e["body"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, c.body, "byte for byte");
        c.body = bytes::Bytes::new();
        c.raw_query.clear();
        let e = url_event(&c, "f", "r", 0).unwrap();
        assert!(e.get("body").is_none() && e.get("queryStringParameters").is_none());
    }

    #[test]
    fn malformed_percent_encoding_is_refused_by_name() {
        let mut c = call();
        c.raw_query = "a=%zz".into();
        assert_eq!(
            url_event(&c, "f", "r", 0).unwrap_err(),
            HttpEventError::Query("%zz".into())
        );
    }
}
