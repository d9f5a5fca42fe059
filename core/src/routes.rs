//! Routes at the gateway's root, API Gateway HTTP API style: an `http`
//! trigger may claim `GET /users/{id}`, `POST /users`,
//! `ANY /static/{proxy+}` or `$default`, optionally on one `host`.
//!
//! - A route is `METHOD /path` (`METHOD` one of GET, HEAD, POST, PUT,
//!   PATCH, DELETE, OPTIONS or ANY) or `$default` (every request no other
//!   route matches). Path segments are literals, `{name}` (one segment) or,
//!   last only, `{name+}` (greedy: one segment or more).
//! - Matching is on the percent-decoded path; the most specific route wins:
//!   segment by segment a literal beats `{name}`, which beats `{name+}`;
//!   then a method beats `ANY`. Routes of the request's host are tried
//!   before routes for any host, `$default` last in each.
//! - Two routes are the same when they differ only in their parameters'
//!   names (`GET /u/{id}` and `GET /u/{uid}`): one function per route and
//!   host, which [`RouteTable::claim`] enforces.
//! - Paths the gateway serves itself (`/fn/...`, `/invocations/...`,
//!   `/healthz`, `/2015-03-31/...`) cannot be claimed.

use std::fmt;

/// First path segments the gateway keeps for itself.
pub const RESERVED: &[&str] = &["fn", "invocations", "healthz", "2015-03-31"];

/// The methods a route (or `ANY`, all of them) or CORS may name.
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

impl Segment {
    /// Literal 2, `{name}` 1, `{name+}` 0: higher is more specific.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 2,
            Segment::Param(_) => 1,
            Segment::Greedy(_) => 0,
        }
    }
}

/// One parsed route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// As the event's `routeKey` carries it: `GET /users/{id}`, `$default`.
    key: String,
    /// None: `ANY`.
    method: Option<String>,
    /// None: `$default`.
    segments: Option<Vec<Segment>>,
}

/// A route that does not parse, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {route:?}: {reason}")]
pub struct RouteError {
    pub route: String,
    pub reason: String,
}

impl Route {
    pub fn parse(text: &str) -> Result<Route, RouteError> {
        let fail = |reason: String| RouteError {
            route: text.to_string(),
            reason,
        };
        if text == "$default" {
            return Ok(Route {
                key: text.into(),
                method: None,
                segments: None,
            });
        }
        let Some((method, path)) = text.split_once(' ') else {
            return Err(fail(
                "write `METHOD /path` (e.g. `GET /users/{id}`) or `$default`".into(),
            ));
        };
        if method != "ANY" && !METHODS.contains(&method) {
            return Err(fail(format!(
                "method {method:?} is not one of {} or ANY (upper case)",
                METHODS.join(", ")
            )));
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Err(fail(format!("the path {path:?} must start with `/`")));
        };
        let mut segments = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            vec![]
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let segment = parse_segment(part, last).map_err(&fail)?;
            if let Segment::Param(name) | Segment::Greedy(name) = &segment
                && segments
                    .iter()
                    .any(|s| matches!(s, Segment::Param(n) | Segment::Greedy(n) if n == name))
            {
                return Err(fail(format!("the parameter {{{name}}} appears twice")));
            }
            segments.push(segment);
        }
        if let Some(Segment::Literal(first)) = segments.first()
            && RESERVED.contains(&first.as_str())
        {
            return Err(fail(format!("paths under /{first} are the gateway's own")));
        }
        Ok(Route {
            key: format!("{method} {path}"),
            method: (method != "ANY").then(|| method.to_string()),
            segments: Some(segments),
        })
    }

    /// `GET /users/{id}`, `$default`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What makes two routes the same: the key with parameter names left
    /// out.
    fn shape(&self) -> String {
        let Some(segments) = &self.segments else {
            return "$default".into();
        };
        let mut s = self.method.clone().unwrap_or_else(|| "ANY".into());
        s.push(' ');
        if segments.is_empty() {
            s.push('/');
        }
        for seg in segments {
            s.push('/');
            match seg {
                Segment::Literal(l) => s.push_str(l),
                Segment::Param(_) => s.push_str("{}"),
                Segment::Greedy(_) => s.push_str("{+}"),
            }
        }
        s
    }

    /// The path parameters of a request with `method` and decoded path
    /// `segments` when this route matches it.
    fn matches(&self, method: &str, path: &[String]) -> Option<Vec<(String, String)>> {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return None;
        }
        let Some(segments) = &self.segments else {
            return Some(Vec::new());
        };
        let mut params = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if path.get(i) != Some(l) {
                        return None;
                    }
                }
                Segment::Param(name) => match path.get(i) {
                    Some(value) if !value.is_empty() => params.push((name.clone(), value.clone())),
                    _ => return None,
                },
                Segment::Greedy(name) => {
                    let rest = path.get(i..).unwrap_or_default().join("/");
                    if rest.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), rest));
                    return Some(params);
                }
            }
        }
        (path.len() == segments.len()).then_some(params)
    }

    /// Higher is more specific; `$default` is the least.
    fn specificity(&self) -> (bool, Vec<u8>, bool) {
        match &self.segments {
            None => (false, Vec::new(), false),
            Some(s) => (true, s.iter().map(Segment::rank).collect(), self.method.is_some()),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

fn parse_segment(part: &str, last: bool) -> Result<Segment, String> {
    if part.is_empty() {
        return Err("empty path segment (`//` or a trailing `/`)".into());
    }
    if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        let (name, greedy) = match inner.strip_suffix('+') {
            Some(n) => (n, true),
            None => (inner, false),
        };
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(format!(
                "{part:?}: a parameter is `{{name}}` or `{{name+}}`, name of A-Z a-z 0-9 _ -"
            ));
        }
        if greedy && !last {
            return Err(format!("{part:?}: a greedy parameter must be the last segment"));
        }
        return Ok(if greedy {
            Segment::Greedy(name.into())
        } else {
            Segment::Param(name.into())
        });
    }
    if let Some(c) = part
        .chars()
        .find(|c| matches!(c, '{' | '}' | '?' | '#' | '%') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{part:?}: {c:?} is not allowed in a literal segment"));
    }
    Ok(Segment::Literal(part.into()))
}

/// A host a route may be limited to: a lower-case DNS name.
pub fn validate_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} must be a lower-case DNS name without a port"))
    }
}

/// One claimed route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// None: any host.
    pub host: Option<String>,
    pub route: Route,
    pub function: String,
}

/// A route another function already claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {route:?}{} is already claimed by function {owner:?}", on_host(host))]
pub struct RouteConflict {
    pub route: String,
    pub host: Option<String>,
    pub owner: String,
}

fn on_host(host: &Option<String>) -> String {
    host.as_ref().map(|h| format!(" on host {h:?}")).unwrap_or_default()
}

/// A request path with a malformed percent-escape (or one that is not
/// UTF-8 once decoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed percent-encoding in the path {0:?}")]
pub struct BadPath(pub String);

/// The route a request matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub function: String,
    /// The event's `routeKey`.
    pub route_key: String,
    /// The event's `pathParameters` (decoded), in the route's order.
    pub path_parameters: Vec<(String, String)>,
}

/// Every claimed route, one function per route and host.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    entries: Vec<RouteEntry>,
}

impl RouteTable {
    /// The table of `functions` (name and validated manifest, in the order
    /// they count: the first claim of a route keeps it), and the claims
    /// refused because another function had made them.
    pub fn of<'a>(
        functions: impl IntoIterator<Item = (&'a str, &'a crate::Manifest)>,
    ) -> (RouteTable, Vec<RouteConflict>) {
        let mut table = RouteTable::default();
        let mut refused = Vec::new();
        for (function, manifest) in functions {
            for (host, route) in manifest.http_routes() {
                if let Err(c) = table.claim(host.as_deref(), route, function) {
                    refused.push(c);
                }
            }
        }
        (table, refused)
    }

    /// Claim `route` on `host` (None: any) for `function`. Claiming a route
    /// the same function has is no change.
    pub fn claim(&mut self, host: Option<&str>, route: Route, function: &str) -> Result<(), RouteConflict> {
        let shape = route.shape();
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.host.as_deref() == host && e.route.shape() == shape)
        {
            if e.function == function {
                return Ok(());
            }
            return Err(RouteConflict {
                route: route.key,
                host: host.map(str::to_string),
                owner: e.function.clone(),
            });
        }
        self.entries.push(RouteEntry {
            host: host.map(str::to_string),
            route,
            function: function.to_string(),
        });
        Ok(())
    }

    /// Every route, by host (any-host first), then key.
    pub fn entries(&self) -> Vec<&RouteEntry> {
        let mut all: Vec<&RouteEntry> = self.entries.iter().collect();
        all.sort_by(|a, b| (&a.host, a.route.key()).cmp(&(&b.host, b.route.key())));
        all
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The route a request matches: `host` from its `Host` header (any case,
    /// a port ignored), `raw_path` percent-encoded as sent.
    pub fn lookup(&self, host: Option<&str>, method: &str, raw_path: &str) -> Result<Option<RouteMatch>, BadPath> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let host = host.map(|h| {
            let h = h
                .rsplit_once(':')
                .filter(|(_, p)| p.parse::<u16>().is_ok())
                .map_or(h, |(n, _)| n);
            h.to_ascii_lowercase()
        });
        let rest = raw_path.strip_prefix('/').unwrap_or(raw_path);
        let path: Vec<String> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/')
                .map(|s| crate::percent::decode(s).ok_or_else(|| BadPath(raw_path.to_string())))
                .collect::<Result<_, _>>()?
        };
        let best_of = |on: Option<&str>| {
            self.entries
                .iter()
                .filter(|e| e.host.as_deref() == on)
                .filter_map(|e| e.route.matches(method, &path).map(|p| (e, p)))
                .max_by(|(a, _), (b, _)| a.route.specificity().cmp(&b.route.specificity()))
        };
        let found = host.as_deref().and_then(|h| best_of(Some(h))).or_else(|| best_of(None));
        Ok(found.map(|(e, params)| RouteMatch {
            function: e.function.clone(),
            route_key: e.route.key.clone(),
            path_parameters: params,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(Option<&str>, &str, &str)]) -> RouteTable {
        let mut t = RouteTable::default();
        for (host, route, function) in routes {
            t.claim(*host, Route::parse(route).unwrap(), function).unwrap();
        }
        t
    }

    fn hit(t: &RouteTable, host: Option<&str>, method: &str, path: &str) -> Option<RouteMatch> {
        t.lookup(host, method, path).unwrap()
    }

    fn m(function: &str, route_key: &str, params: &[(&str, &str)]) -> Option<RouteMatch> {
        Some(RouteMatch {
            function: function.into(),
            route_key: route_key.into(),
            path_parameters: p(params),
        })
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_most_specific_route_wins() {
        let t = table(&[
            (None, "GET /users/{id}", "users"),
            (None, "GET /users/me", "me"),
            (None, "POST /users", "create"),
            (None, "ANY /users/{id}", "any-user"),
            (None, "ANY /static/{proxy+}", "files"),
            (None, "GET /static/{dir}/index.html", "index"),
            (None, "$default", "fallback"),
        ]);
        assert_eq!(
            hit(&t, None, "GET", "/users/42"),
            m("users", "GET /users/{id}", &[("id", "42")])
        );
        assert_eq!(
            hit(&t, None, "GET", "/users/me").unwrap().function,
            "me",
            "literal beats parameter"
        );
        assert_eq!(
            hit(&t, None, "DELETE", "/users/42").unwrap().function,
            "any-user",
            "ANY when no method"
        );
        assert_eq!(hit(&t, None, "POST", "/users").unwrap().function, "create");
        assert_eq!(
            hit(&t, None, "GET", "/static/css/a%20b.css"),
            m("files", "ANY /static/{proxy+}", &[("proxy", "css/a b.css")]),
            "greedy, decoded"
        );
        assert_eq!(
            hit(&t, None, "GET", "/static/docs/index.html").unwrap().function,
            "index"
        );
        assert_eq!(
            hit(&t, None, "GET", "/static"),
            m("fallback", "$default", &[]),
            "greedy needs a segment"
        );
        assert_eq!(
            hit(&t, None, "GET", "/users/").unwrap().function,
            "fallback",
            "an empty {{id}} is no match"
        );
        assert_eq!(hit(&t, None, "GET", "/nothing/here").unwrap().function, "fallback");
        assert!(t.lookup(None, "GET", "/users/%zz").is_err());
    }

    #[test]
    fn no_default_means_no_match() {
        let t = table(&[(None, "GET /", "root")]);
        assert_eq!(hit(&t, None, "GET", "/").unwrap().function, "root");
        assert_eq!(hit(&t, None, "GET", "/x"), None);
        assert_eq!(hit(&t, None, "POST", "/"), None);
        assert_eq!(hit(&RouteTable::default(), None, "GET", "/"), None);
    }

    #[test]
    fn a_host_has_its_own_table_before_any_host() {
        let t = table(&[
            (Some("shop.example.com"), "GET /items", "shop"),
            (Some("shop.example.com"), "$default", "shop-default"),
            (Some("blog.example.com"), "GET /items", "blog"),
            (None, "GET /items", "anyhost"),
            (None, "GET /health", "health"),
        ]);
        assert_eq!(
            hit(&t, Some("Shop.Example.com:8080"), "GET", "/items")
                .unwrap()
                .function,
            "shop"
        );
        assert_eq!(
            hit(&t, Some("blog.example.com"), "GET", "/items").unwrap().function,
            "blog"
        );
        assert_eq!(
            hit(&t, Some("other.example.com"), "GET", "/items").unwrap().function,
            "anyhost"
        );
        assert_eq!(hit(&t, None, "GET", "/items").unwrap().function, "anyhost");
        assert_eq!(
            hit(&t, Some("shop.example.com"), "GET", "/health").unwrap().function,
            "shop-default",
            "a host's $default takes everything on that host"
        );
        assert_eq!(
            hit(&t, Some("blog.example.com"), "GET", "/health").unwrap().function,
            "health"
        );
    }

    #[test]
    fn one_function_per_route_and_host() {
        let mut t = table(&[(None, "GET /users/{id}", "users")]);
        let err = t
            .claim(None, Route::parse("GET /users/{uid}").unwrap(), "other")
            .unwrap_err();
        assert_eq!(err.owner, "users");
        assert_eq!(
            err.to_string(),
            "route \"GET /users/{uid}\" is already claimed by function \"users\""
        );
        t.claim(None, Route::parse("GET /users/{id}").unwrap(), "users")
            .expect("the owner again is no change");
        t.claim(None, Route::parse("ANY /users/{id}").unwrap(), "other")
            .expect("ANY is another route");
        t.claim(Some("a.example"), Route::parse("GET /users/{id}").unwrap(), "other")
            .expect("another host is another table");
        let err = t
            .claim(Some("a.example"), Route::parse("GET /users/{x}").unwrap(), "third")
            .unwrap_err();
        assert!(err.to_string().contains("on host \"a.example\""), "{err}");
        assert_eq!(t.entries().len(), 3);
    }

    #[test]
    fn bad_routes_are_refused_by_name() {
        for (text, why) in [
            ("GET", "METHOD /path"),
            ("get /x", "upper case"),
            ("FETCH /x", "is not one of"),
            ("GET x", "must start with `/`"),
            ("GET /a//b", "empty path segment"),
            ("GET /a/", "empty path segment"),
            ("GET /{a+}/b", "must be the last"),
            ("GET /{}", "a parameter is"),
            ("GET /{a b}", "a parameter is"),
            ("GET /a{b}", "not allowed"),
            ("GET /a?b", "not allowed"),
            ("GET /{id}/{id}", "appears twice"),
            ("GET /fn/x", "the gateway's own"),
            ("ANY /2015-03-31/{p+}", "the gateway's own"),
        ] {
            let err = Route::parse(text).unwrap_err();
            assert_eq!(err.route, text);
            assert!(err.reason.contains(why), "{text}: {err}");
        }
        assert!(validate_host("api.example.com").is_ok());
        for bad in ["", "API.example.com", "a.example:80", "a..b", "-a.b"] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
    }
}
