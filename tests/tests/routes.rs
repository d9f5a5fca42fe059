//! HTTP functions at the gateway's root and across origins: routes claimed
//! API Gateway style (specificity, greedy parameters, hosts, `$default`,
//! conflicts, `stoke routes`) and CORS answered by the gateway.

use stoke_tests::{Nats, Platform, echo_function};

/// Routes at the gateway's root, API Gateway HTTP API style: the most
/// specific route wins, greedy parameters, a host's own routes first,
/// `$default`; a route another function has is refused at deploy naming
/// it; an unmatched request is a JSON 404; `stoke routes` lists the table.
#[tokio::test]
async fn routes_at_the_gateway_root_reach_the_function_that_claims_them() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(
        echo_function(
            "users",
            r#"routes = ["GET /users/{id}", "POST /users", "ANY /files/{path+}"]"#,
        )
        .path(),
    );
    p.deploy(echo_function("me", r#"routes = ["GET /users/me"]"#).path());
    p.deploy(echo_function("shop", "routes = [\"GET /users/{id}\"]\nhost = \"shop.example\"").path());
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(p.url(path)).send();

    let r = get("/users/42?x=1").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["function"], "users");
    let e = &v["event"];
    assert_eq!(e["routeKey"], "GET /users/{id}");
    assert_eq!(e["requestContext"]["routeKey"], "GET /users/{id}");
    assert_eq!(e["rawPath"], "/users/42", "the whole path");
    assert_eq!(e["rawQueryString"], "x=1");
    assert_eq!(e["pathParameters"], serde_json::json!({"id": "42"}));
    assert_eq!(e["requestContext"]["http"]["method"], "GET");

    let r: serde_json::Value = get("/users/me").await.unwrap().json().await.unwrap();
    assert_eq!(r["function"], "me", "a literal beats a parameter");
    let r = http
        .post(p.url("/users"))
        .body(r#"{"name":"Ada"}"#)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["function"].as_str(), v["event"]["body"].as_str()),
        (Some("users"), Some(r#"{"name":"Ada"}"#))
    );
    let v: serde_json::Value = http
        .delete(p.url("/files/a/b%20c.txt"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["event"]["routeKey"], "ANY /files/{path+}");
    assert_eq!(v["event"]["pathParameters"]["path"], "a/b c.txt", "greedy, decoded");
    let v: serde_json::Value = http
        .get(p.url("/users/7"))
        .header("host", "shop.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["function"], "shop", "the host's own route first");

    // Unmatched: a JSON 404 naming the request; a bad escape: 400.
    let r = http.delete(p.url("/users/42")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errorType"], "Stoke.RouteNotFound");
    assert!(v["errorMessage"].as_str().unwrap().contains("DELETE /users/42"), "{v}");
    let r = get("/files/%zz").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["errorType"],
        "Stoke.BadRequest"
    );

    // One function per route: refused at deploy, naming the owner;
    // nothing is deployed.
    let thief = echo_function("thief", r#"routes = ["GET /users/{uid}"]"#);
    let err = p.cli_err(&["deploy", thief.path().to_str().unwrap()]);
    assert!(
        err.contains("route \"GET /users/{uid}\" is already claimed by function \"users\""),
        "{err}"
    );
    assert!(!p.cli_ok(&["functions"]).contains("thief"));
    // A route that does not parse is refused, named.
    let bad = echo_function("bad", r#"routes = ["GET /ok", "GET /a//b"]"#);
    let err = p.cli_err(&["deploy", bad.path().to_str().unwrap()]);
    assert!(
        err.contains("triggers[0].routes[1]") && err.contains("GET /a//b"),
        "{err}"
    );

    // $default takes the rest; the gateway's own paths stay its own.
    p.deploy(echo_function("site", r#"routes = ["$default"]"#).path());
    let v: serde_json::Value = http
        .delete(p.url("/users/42"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["function"].as_str(), v["event"]["routeKey"].as_str()),
        (Some("site"), Some("$default"))
    );
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");
    let r = get("/fn/nobody").await.unwrap();
    assert_eq!(r.status(), 404, "function URLs are not routes");

    let table = p.cli_ok(&["routes"]);
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0][..3], ["ROUTE", "HOST", "FUNCTION"], "{table}");
    for (route, host, function) in [
        ("$default", "*", "site"),
        ("/users/{id}", "*", "users"),
        ("/users/me", "*", "me"),
        ("/users/{id}", "shop.example", "shop"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&route) && l.contains(&host) && l.contains(&function)),
            "{route} {host} {function} in\n{table}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&p.cli_ok(&["routes", "-o", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 6, "{json}");
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|r| r["route_key"] == "ANY /files/{path+}")
    );

    // A deleted function's routes are free again.
    p.cli_ok(&["delete", "users"]);
    p.deploy(thief.path());
    let v: serde_json::Value = get("/users/42").await.unwrap().json().await.unwrap();
    assert_eq!(v["function"], "thief");
}

/// CORS per function, as Lambda function URLs have it: the gateway answers
/// preflights (the function does not run), and sets the CORS headers of
/// answers, replacing the function's own; a function without `cors` gets
/// `OPTIONS` like any request.
#[tokio::test]
async fn cors_preflights_are_answered_by_the_gateway_and_answers_carry_its_headers() {
    let f = echo_function(
        "web",
        "routes = [\"POST /api/things\"]\n\
         cors = { allow_origins = [\"https://app.example.com\"], allow_methods = [\"GET\", \"POST\"], \
         allow_headers = [\"content-type\"], expose_headers = [\"x-request-id\"], max_age = 600, allow_credentials = true }",
    );
    std::fs::write(
        f.path().join("echo.py"),
        "import json\n\ndef handler(event, context):\n    return {\"statusCode\": 200, \"headers\": \
         {\"access-control-allow-origin\": \"*\", \"x-request-id\": \"r1\"}, \"body\": json.dumps(event)}\n",
    )
    .unwrap();
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());
    p.deploy(echo_function("plain", "").path());
    let http = reqwest::Client::new();
    let app = "https://app.example.com";
    let preflight = |path: &str, origin: &str, method: &str, headers: &str| {
        http.request(reqwest::Method::OPTIONS, p.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };

    for path in ["/fn/web/x", "/api/things"] {
        let r = preflight(path, app, "POST", "content-type").await.unwrap();
        assert_eq!(r.status(), 204, "{path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], app);
        assert_eq!(h["access-control-allow-methods"], "POST");
        assert_eq!(h["access-control-allow-headers"], "content-type");
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["vary"], "Origin");
    }
    for (origin, method, headers, why) in [
        ("https://evil.example", "POST", "", "origin"),
        (app, "DELETE", "", "method"),
        (app, "POST", "x-secret", "header"),
    ] {
        let r = preflight("/fn/web", origin, method, headers).await.unwrap();
        assert_eq!(r.status(), 403, "{why}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["errorType"], "Stoke.CorsRefused");
        assert!(v["errorMessage"].as_str().unwrap().contains(why), "{v}");
    }
    let ran = p.cli_ok(&["invocations", "web", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ran)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        0,
        "preflights never run the function: {ran}"
    );

    // An answer: the gateway's CORS headers, not the function's `*`.
    let r = http
        .post(p.url("/api/things"))
        .header("origin", app)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], app);
    assert_eq!(r.headers()["access-control-expose-headers"], "x-request-id");
    assert_eq!(r.headers()["x-request-id"], "r1");
    let r = http
        .get(p.url("/fn/web"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the browser, not the gateway, withholds the answer");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Without cors, OPTIONS is the function's.
    let r = preflight("/fn/plain", app, "POST", "").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["event"]["requestContext"]["http"]["method"], "OPTIONS");
}
