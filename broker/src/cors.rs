//! CORS of a function URL or route, as Lambda function URLs do it: a
//! function whose http trigger has `cors` gets its preflights answered by
//! the gateway (the function does not run for them), and the CORS headers
//! of its answers set by the gateway (what the function set itself is
//! replaced). Without `cors`, nothing here applies: an `OPTIONS` request
//! reaches the function like any other.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use stoke_core::Cors;

/// A browser's preflight: `OPTIONS` asking for a method.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The `Access-Control-Allow-Origin` for `origin`, None when it is not
/// allowed.
fn allow_origin(cors: &Cors, origin: &str) -> Option<HeaderValue> {
    let any = cors.allow_origins.iter().any(|o| o == "*");
    if any && !cors.allow_credentials {
        return Some(HeaderValue::from_static("*"));
    }
    let listed = cors.allow_origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
    (any || listed).then(|| HeaderValue::from_str(origin).ok()).flatten()
}

fn refused(message: String) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({"errorType": "Stoke.CorsRefused", "errorMessage": message})),
    )
        .into_response()
}

fn allows(list: &[String], item: &str) -> bool {
    list.iter().any(|l| l == "*" || l.eq_ignore_ascii_case(item))
}

/// The gateway's answer to a preflight from `origin`: 204 with what the
/// browser asked for when `cors` allows it, else 403 saying what is not
/// allowed.
pub(crate) fn preflight(cors: &Cors, origin: &str, headers: &HeaderMap) -> Response {
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(allowed_origin) = allow_origin(cors, origin) else {
        return refused(format!("origin {origin:?} is not in the function's cors.allow_origins"));
    };
    let method = text(header::ACCESS_CONTROL_REQUEST_METHOD).trim().to_string();
    if !cors.allow_methods.is_empty() && !allows(&cors.allow_methods, &method) {
        return refused(format!("method {method:?} is not in the function's cors.allow_methods"));
    }
    let asked: Vec<&str> = text(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if let Some(h) = asked.iter().find(|h| !allows(&cors.allow_headers, h)) {
        return refused(format!("header {h:?} is not in the function's cors.allow_headers"));
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed_origin);
    // What was asked, once it is allowed: a `*` list answers for itself.
    set(h, header::ACCESS_CONTROL_ALLOW_METHODS, &method);
    if !asked.is_empty() {
        set(h, header::ACCESS_CONTROL_ALLOW_HEADERS, &asked.join(", "));
    }
    if let Some(age) = cors.max_age {
        set(h, header::ACCESS_CONTROL_MAX_AGE, &age.to_string());
    }
    common(cors, h);
    resp
}

/// Set the CORS headers of an answer to a request from `origin`.
pub(crate) fn decorate(cors: &Cors, origin: &str, h: &mut HeaderMap) {
    let own: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for k in own {
        h.remove(k);
    }
    let Some(allowed_origin) = allow_origin(cors, origin) else {
        return;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed_origin);
    if !cors.expose_headers.is_empty() {
        set(
            h,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &cors.expose_headers.join(", "),
        );
    }
    common(cors, h);
}

/// What preflights and answers share: credentials, and `Vary: Origin`
/// when the answer depends on the origin.
fn common(cors: &Cors, h: &mut HeaderMap) {
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_some_and(|o| o != "*") {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors {
            allow_origins: vec!["https://app.example.com".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["content-type".into(), "x-token".into()],
            expose_headers: vec!["x-request-id".into()],
            max_age: Some(600),
            allow_credentials: true,
        }
    }

    fn asking(method: &str, headers: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCESS_CONTROL_REQUEST_METHOD, method.parse().unwrap());
        if !headers.is_empty() {
            h.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, headers.parse().unwrap());
        }
        h
    }

    #[test]
    fn an_allowed_preflight_gets_what_it_asked_for() {
        let r = preflight(
            &cors(),
            "https://app.example.com",
            &asking("POST", "Content-Type, X-Token"),
        );
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "Content-Type, X-Token");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::VARY], "Origin");
    }

    #[test]
    fn what_is_not_allowed_is_refused_by_name() {
        for (origin, asked, why) in [
            (
                "https://evil.example",
                asking("GET", ""),
                "origin \"https://evil.example\"",
            ),
            ("https://app.example.com", asking("DELETE", ""), "method \"DELETE\""),
            (
                "https://app.example.com",
                asking("GET", "x-other"),
                "header \"x-other\"",
            ),
        ] {
            let r = preflight(&cors(), origin, &asked);
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{why}");
            assert!(r.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        }
    }

    #[test]
    fn answers_get_the_gateways_cors_headers_not_the_functions() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        decorate(&cors(), "https://app.example.com", &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
        assert_eq!(h[header::CONTENT_TYPE], "text/plain");
        let mut h = HeaderMap::new();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".parse().unwrap());
        decorate(&cors(), "https://evil.example", &mut h);
        assert!(h.is_empty(), "another origin gets no CORS headers: {h:?}");
        let any = Cors {
            allow_origins: vec!["*".into()],
            ..Cors::default()
        };
        let mut h = HeaderMap::new();
        decorate(&any, "https://whoever.example", &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get(header::VARY).is_none());
    }
}
