//! AWS Signature Version 4, as the AWS SDKs and CLI sign a request, checked
//! against a secret both sides know: the `Authorization: AWS4-HMAC-SHA256
//! Credential=<key id>/<date>/<region>/<service>/aws4_request,
//! SignedHeaders=..., Signature=...` header is parsed ([`Authorization::parse`]),
//! the canonical request rebuilt from what arrived ([`Signed`]), and the
//! signature recomputed and compared in constant time ([`verify`]).
//!
//! Pure: no I/O, no clock of its own (the caller passes the time), so the
//! rules are unit-tested here, against AWS's published example among
//! others; which secret belongs to which key id is the caller's business.

use sha2::{Digest as _, Sha256};

/// The signing algorithm, the only one accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's `X-Amz-Date` may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// The secret access key that goes with a stoke token (its access key id is
/// the token's id): derived from the token's secret, so it is shown with
/// it, once, and stored as it is (SigV4's check needs the secret itself).
pub fn secret_access_key(token_secret: &str) -> String {
    hex::encode(hmac(token_secret.as_bytes(), b"stoke-sigv4"))
}

/// A request as it arrived, owned (what a caller hands the
/// `Authenticator` along with its `Authorization` header).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub raw_path: String,
    pub raw_query: String,
    pub headers: Vec<(String, String)>,
    /// The body's SHA-256, hex.
    pub body_sha256: String,
}

impl Request {
    pub fn signed(&self) -> Signed<'_> {
        Signed {
            method: &self.method,
            raw_path: &self.raw_path,
            raw_query: &self.raw_query,
            headers: &self.headers,
            body_sha256: &self.body_sha256,
        }
    }
}

/// Why a signed request is refused (said to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("malformed SigV4 Authorization header: {0}")]
    Malformed(String),
    #[error("the request's X-Amz-Date {0:?} is missing, malformed or more than 15 minutes from the server's time")]
    Date(String),
    #[error("the signature does not match: check the secret access key and that the request was not altered")]
    Mismatch,
}

/// What the `Authorization` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id (stoke: a token id).
    pub key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case, as listed.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    /// Parse a header value; `Ok(None)` when it is not a SigV4 one.
    pub fn parse(header: &str) -> Result<Option<Authorization>, SigV4Error> {
        let Some(rest) = header.trim().strip_prefix(ALGORITHM) else {
            return Ok(None);
        };
        let bad = |m: &str| SigV4Error::Malformed(m.to_string());
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            match part.trim().split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed = Some(v),
                Some(("Signature", v)) => signature = Some(v),
                _ => return Err(bad("expected Credential=, SignedHeaders= and Signature=")),
            }
        }
        let credential = credential.ok_or_else(|| bad("no Credential"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [key_id, date, region, service, "aws4_request"] = scope[..] else {
            return Err(bad(
                "Credential must be <key id>/<date>/<region>/<service>/aws4_request",
            ));
        };
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the Credential's date must be YYYYMMDD"));
        }
        let signed_headers: Vec<String> = signed
            .ok_or_else(|| bad("no SignedHeaders"))?
            .split(';')
            .map(str::to_ascii_lowercase)
            .collect();
        if !signed_headers.iter().any(|h| h == "host") {
            return Err(bad("SignedHeaders must include host"));
        }
        let signature = signature.ok_or_else(|| bad("no Signature"))?;
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("Signature must be 64 hex digits"));
        }
        Ok(Some(Authorization {
            key_id: key_id.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        }))
    }
}

/// A request as it arrived, for its canonical form.
#[derive(Debug, Clone)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded).
    pub raw_path: &'a str,
    /// The query string as sent, without `?`.
    pub raw_query: &'a str,
    /// Every header (names in any case).
    pub headers: &'a [(String, String)],
    /// The body's SHA-256, hex.
    pub body_sha256: &'a str,
}

/// `s` percent-encoded as SigV4 wants: everything but `A-Z a-z 0-9 - _ . ~`
/// (and `/` when `keep_slash`).
fn uri_encode(s: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decode (`+` stays); a malformed escape is kept as it is.
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        match (b[i], hex) {
            (b'%', Some(h)) => {
                out.push(u8::from_str_radix(std::str::from_utf8(h).unwrap_or("00"), 16).unwrap_or(0));
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The canonical request of `r` with `signed_headers`.
pub fn canonical_request(r: &Signed<'_>, signed_headers: &[String]) -> String {
    // Services other than S3 sign the path encoded once more (the SDKs
    // encode each segment, then the whole path again).
    let path = if r.raw_path.is_empty() { "/" } else { r.raw_path };
    let uri = uri_encode(path.as_bytes(), true);
    let mut query: Vec<(String, String)> = r
        .raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&decode(k), false), uri_encode(&decode(v), false))
        })
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{}\n{uri}\n{query}\n{headers}\n{}\n{}",
        r.method,
        signed_headers.join(";"),
        r.body_sha256
    )
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The signature of `r` by `secret` for `auth`'s scope at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`), hex.
pub fn signature(secret: &str, r: &Signed<'_>, auth: &Authorization, amz_date: &str) -> String {
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let canonical = canonical_request(r, &auth.signed_headers);
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, to_sign.as_bytes()))
}

/// Seconds since the epoch of `YYYYMMDDTHHMMSSZ`.
fn parse_amz_date(d: &str) -> Option<i64> {
    let t = chrono::NaiveDateTime::parse_from_str(d, "%Y%m%dT%H%M%SZ").ok()?;
    Some(t.and_utc().timestamp())
}

/// Check `r`, signed as `auth` says, against `secret`, at `now_secs`.
pub fn verify(secret: &str, r: &Signed<'_>, auth: &Authorization, now_secs: i64) -> Result<(), SigV4Error> {
    let amz_date = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-date"))
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    match parse_amz_date(amz_date) {
        Some(t) if (t - now_secs).abs() <= MAX_SKEW_SECS && amz_date.starts_with(&auth.date) => {}
        _ => return Err(SigV4Error::Date(amz_date.to_string())),
    }
    let expected = signature(secret, r, auth, amz_date);
    // Constant time: every byte is compared.
    let differs = expected
        .bytes()
        .zip(auth.signature.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 || expected.len() != auth.signature.len() {
        return Err(SigV4Error::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// AWS's published example ("get-vanilla" of the SigV4 test suite).
    #[test]
    fn aws_published_example_signs_the_same() {
        let h = headers(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]);
        let empty = hex::encode(Sha256::digest(b""));
        let r = Signed {
            method: "GET",
            raw_path: "/",
            raw_query: "",
            headers: &h,
            body_sha256: &empty,
        };
        let auth = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .unwrap()
        .unwrap();
        assert_eq!(auth.key_id, "AKIDEXAMPLE");
        assert_eq!(
            canonical_request(&r, &auth.signed_headers),
            format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{empty}")
        );
        let at = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(verify(SECRET, &r, &auth, at), Ok(()));
        assert_eq!(
            verify(SECRET, &r, &auth, at + 16 * 60),
            Err(SigV4Error::Date("20150830T123600Z".into()))
        );
        assert_eq!(verify("another secret", &r, &auth, at), Err(SigV4Error::Mismatch));
        let altered = Signed { method: "POST", ..r };
        assert_eq!(verify(SECRET, &altered, &auth, at), Err(SigV4Error::Mismatch));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn paths_and_queries_are_canonical() {
        let h = headers(&[("host", "h"), ("x-amz-date", "20250101T000000Z")]);
        let r = Signed {
            method: "POST",
            raw_path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A0%3Afunction%3Af/invocations",
            raw_query: "Qualifier=live&a=b%20c&A=1",
            headers: &h,
            body_sha256: "x",
        };
        let c = canonical_request(&r, &["host".into()]);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(
            lines[1], "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-east-1%253A0%253Afunction%253Af/invocations",
            "encoded once more"
        );
        assert_eq!(lines[2], "A=1&Qualifier=live&a=b%20c", "sorted, re-encoded");
    }

    #[test]
    fn bad_headers_are_refused_by_what_is_wrong() {
        assert_eq!(Authorization::parse("Bearer abc").unwrap(), None, "not SigV4");
        for (header, why) in [
            ("AWS4-HMAC-SHA256 Credential=a/b", "Credential must be"),
            (
                "AWS4-HMAC-SHA256 Credential=k/2025/r/s/aws4_request, SignedHeaders=host, Signature=00",
                "YYYYMMDD",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=k/20250101/r/s/aws4_request, SignedHeaders=x-amz-date, Signature=00",
                "host",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=k/20250101/r/s/aws4_request, SignedHeaders=host, Signature=zz",
                "64 hex",
            ),
            ("AWS4-HMAC-SHA256 Foo=bar", "expected Credential"),
        ] {
            let err = Authorization::parse(header).unwrap_err();
            assert!(err.to_string().contains(why), "{header}: {err}");
        }
    }
}
