//! A function's answer as HTTP, by Lambda's payload 2.0 response rules: a
//! JSON object with `statusCode` is a proxy response (`statusCode`,
//! `headers`, `multiValueHeaders`, `cookies` — one `Set-Cookie` each —,
//! `body`, `isBase64Encoded`), and must be a valid one; any other JSON
//! value is returned as `application/json` with 200, anything else as
//! `application/octet-stream`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde::Deserialize as _;
use serde_json::Value;

/// The status, headers and cookies of a proxy response (or of a streamed
/// answer's prelude).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Head {
    status_code: u16,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    #[serde(default)]
    multi_value_headers: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    cookies: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Proxy {
    #[serde(flatten)]
    head: Head,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
}

fn header_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The HTTP status and headers of `h`; what is wrong with it otherwise.
pub(crate) fn head(h: &Head) -> Result<(StatusCode, HeaderMap), String> {
    let status = StatusCode::from_u16(h.status_code)
        .ok()
        .filter(|s| s.as_u16() >= 200)
        .ok_or_else(|| format!("statusCode {} is not a final HTTP status", h.status_code))?;
    let mut headers = HeaderMap::new();
    let pair = |k: &str, v: &Value| {
        let name = HeaderName::try_from(k).map_err(|_| format!("{k:?} is not a header name"))?;
        let text = header_text(v);
        let value = HeaderValue::from_str(&text).map_err(|_| format!("header {k}: {text:?} is not a header value"))?;
        Ok::<_, String>((name, value))
    };
    for (k, v) in &h.headers {
        let (name, value) = pair(k, v)?;
        headers.insert(name, value);
    }
    for (k, vs) in &h.multi_value_headers {
        for v in vs {
            let (name, value) = pair(k, v)?;
            headers.append(name, value);
        }
    }
    for c in &h.cookies {
        let value = HeaderValue::from_str(c).map_err(|_| format!("cookie {c:?} is not a header value"))?;
        headers.append(header::SET_COOKIE, value);
    }
    Ok((status, headers))
}

/// The status and headers a streamed HTTP answer's prelude (JSON, before
/// the 8 NUL bytes) gives; 200 when it names no status.
pub(crate) fn prelude_head(prelude: &[u8]) -> Result<(StatusCode, HeaderMap), String> {
    let mut v: Value = if prelude.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(prelude).map_err(|e| format!("the prelude is not JSON: {e}"))?
    };
    let obj = v.as_object_mut().ok_or("the prelude is not a JSON object")?;
    obj.entry("statusCode").or_insert(200.into());
    let h = Head::deserialize(&v).map_err(|e| format!("the prelude: {e}"))?;
    head(&h)
}

/// The HTTP response of a function's result; what is wrong with it when it
/// is an invalid proxy response.
pub(crate) fn response(result: &[u8]) -> Result<Response, String> {
    let parsed: Option<Value> = serde_json::from_slice(result).ok();
    let Some(v) = parsed.as_ref().filter(|v| v.get("statusCode").is_some()) else {
        // A plain value: the function's JSON as it is.
        let mut resp = Response::new(Body::from(result.to_vec()));
        let ct = if parsed.is_some() {
            "application/json"
        } else {
            "application/octet-stream"
        };
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        return Ok(resp);
    };
    let p = Proxy::deserialize(v).map_err(|e| e.to_string())?;
    let body = match (p.body, p.is_base64_encoded) {
        (Some(b), true) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|e| format!("isBase64Encoded is true but body is not base64: {e}"))?,
        (Some(b), false) => b.into_bytes(),
        (None, _) => Vec::new(),
    };
    let (status, headers) = head(&p.head)?;
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(r: Response) -> (StatusCode, HeaderMap, Vec<u8>) {
        let (parts, body) = r.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec();
        (parts.status, parts.headers, body)
    }

    #[tokio::test]
    async fn proxy_responses_map_to_http() {
        let r = response(
            br#"{"statusCode":201,"headers":{"x-a":"1","x-n":5},"multiValueHeaders":{"x-b":["2","3"]},"cookies":["c=1","d=2"],"body":"hi"}"#,
        )
        .unwrap();
        let (status, headers, body) = parts(r).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            (headers["x-a"].to_str().unwrap(), headers["x-n"].to_str().unwrap()),
            ("1", "5")
        );
        assert_eq!(headers.get_all("x-b").iter().count(), 2);
        assert_eq!(headers.get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(body, b"hi");
        let (_, _, body) =
            parts(response(br#"{"statusCode":200,"body":"aGk=","isBase64Encoded":true}"#).unwrap()).await;
        assert_eq!(body, b"hi");
    }

    #[tokio::test]
    async fn plain_values_are_json_or_bytes() {
        let (status, headers, body) = parts(response(br#"{"hello":"world"}"#).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body, br#"{"hello":"world"}"#);
        let (_, headers, _) = parts(response(b"\x00not json").unwrap()).await;
        assert_eq!(headers[header::CONTENT_TYPE], "application/octet-stream");
    }

    #[test]
    fn invalid_proxy_responses_say_what_is_wrong() {
        for (bad, why) in [
            (r#"{"statusCode":"nope"}"#, "invalid type"),
            (r#"{"statusCode":99}"#, "statusCode 99"),
            (r#"{"statusCode":1000}"#, "statusCode 1000"),
            (r#"{"statusCode":200,"headers":["x"]}"#, "invalid type"),
            (
                r#"{"statusCode":200,"headers":{"bad name":"x"}}"#,
                "\"bad name\" is not a header name",
            ),
            (r#"{"statusCode":200,"headers":{"x":"a\nb"}}"#, "is not a header value"),
            (r#"{"statusCode":200,"body":"@@","isBase64Encoded":true}"#, "not base64"),
        ] {
            let err = response(bad.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
