//! CORS of an http trigger (`cors = { ... }` in `stoke.toml`), as Lambda
//! function URLs configure it: the settings and their validation. The
//! gateway answers preflights and sets the headers (`broker/src/cors.rs`).

use serde::{Deserialize, Serialize};

/// CORS of an http trigger, as Lambda function URLs configure it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// `https://app.example.com` (scheme, host, optional port) or `*`.
    pub allow_origins: Vec<String>,
    /// Methods a cross-origin request may use (`*`: any); default any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Request headers it may send (`*`: any); default none beyond the
    /// CORS-safelisted ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers a page's script may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Seconds a browser may cache a preflight's answer (at most 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
    /// Whether cookies and `Authorization` may come along (not with `*`).
    #[serde(default)]
    pub allow_credentials: bool,
}

impl Cors {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.allow_origins.is_empty() {
            return Err(("allow_origins", "list at least one origin, or \"*\"".into()));
        }
        for o in &self.allow_origins {
            if o != "*" {
                validate_origin(o).map_err(|r| ("allow_origins", r))?;
            }
        }
        if self.allow_credentials && self.allow_origins.iter().any(|o| o == "*") {
            return Err((
                "allow_credentials",
                "cannot be combined with allow_origins \"*\" (browsers refuse it): list the origins".into(),
            ));
        }
        for m in &self.allow_methods {
            if m != "*" && !crate::routes::METHODS.contains(&m.as_str()) {
                return Err((
                    "allow_methods",
                    format!("{m:?} is not one of {} or \"*\"", crate::routes::METHODS.join(", ")),
                ));
            }
        }
        for (field, names) in [
            ("allow_headers", &self.allow_headers),
            ("expose_headers", &self.expose_headers),
        ] {
            for h in names {
                let token = !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !token {
                    return Err((field, format!("{h:?} is not a header name")));
                }
            }
        }
        if self.max_age.is_some_and(|a| a > 86400) {
            return Err(("max_age", "must be at most 86400 seconds".into()));
        }
        Ok(())
    }
}

/// `scheme://host[:port]`, nothing after.
fn validate_origin(o: &str) -> Result<(), String> {
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(|| format!("{o:?} must be \"*\" or scheme://host[:port]"))?;
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "0"));
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(format!(
            "{o:?} must be \"*\" or scheme://host[:port] (lower case, no path)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Manifest;
    use crate::manifest::ManifestError;

    fn field_of(text: &str) -> String {
        match Manifest::parse(text).unwrap_err() {
            ManifestError::Invalid { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn cors_is_validated_field_by_field() {
        let base = "name = \"a\"\ncommand = [\"x\"]\n[[triggers]]\nhttp = true\n";
        let m = Manifest::parse(&format!(
            "{base}cors = {{ allow_origins = [\"https://app.example.com:8443\"], allow_methods = [\"GET\"], max_age = 60, allow_credentials = true }}"
        ))
        .unwrap();
        assert_eq!(m.http_cors().unwrap().allow_origins, ["https://app.example.com:8443"]);
        for (cors, field) in [
            ("allow_origins = []", "allow_origins"),
            ("allow_origins = [\"app.example.com\"]", "allow_origins"),
            ("allow_origins = [\"https://a.example/path\"]", "allow_origins"),
            ("allow_origins = [\"*\"], allow_credentials = true", "allow_credentials"),
            ("allow_origins = [\"*\"], allow_methods = [\"FETCH\"]", "allow_methods"),
            ("allow_origins = [\"*\"], allow_headers = [\"a b\"]", "allow_headers"),
            ("allow_origins = [\"*\"], expose_headers = [\"\"]", "expose_headers"),
            ("allow_origins = [\"*\"], max_age = 90000", "max_age"),
        ] {
            assert_eq!(
                field_of(&format!("{base}cors = {{ {cors} }}")),
                format!("triggers[0].cors.{field}"),
                "{cors}"
            );
        }
        assert_eq!(
            field_of(
                "name = \"a\"\ncommand = [\"x\"]\n[[triggers]]\nsubject = \"s\"\ncors = { allow_origins = [\"*\"] }"
            ),
            "triggers[0].cors"
        );
    }
}
