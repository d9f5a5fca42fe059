//! Pulling an image from an OCI distribution registry into the store
//! (`PullImage`): the reference's tag resolved to a manifest digest (so a
//! version names an immutable image), an index narrowed to linux/amd64,
//! the config and every layer fetched and checked against its digest and
//! size, layers already stored skipped. Blobs are staged in a temporary
//! directory and stored only once the whole image checked out, then the
//! [`ImageSpec`]: a refused pull stores nothing.
//!
//! Registry API: `GET /v2/<name>/manifests/<ref>` and
//! `GET /v2/<name>/blobs/<digest>` (redirects followed). Auth: anonymous
//! first; on 401 a `Bearer` challenge is answered with a token from its
//! realm (asked with the kept credentials, if any), a `Basic` one with the
//! kept credentials. HTTPS, except for the dispatcher's
//! `insecure_registries`.

use std::sync::Arc;
use std::time::Duration;

use stoke_auth::sealed::SecretsKey;
use stoke_store::Admin;

use stoke_core::oci::{self, Config, ImageError, ImageLimits, ImageSpec, Index, LayerRef, Manifest, Reference, media};
use stoke_core::package;
use stoke_proto::PullImageProgress;
use tokio::sync::mpsc;

use crate::AdminApi;
use crate::error::ApiError;

/// The largest manifest, index or config fetched.
const MAX_JSON_BYTES: u64 = 8 << 20;

/// What a pull reports as it goes.
pub(crate) type Progress = mpsc::Sender<PullImageProgress>;

fn say(message: impl Into<String>) -> PullImageProgress {
    PullImageProgress {
        message: message.into(),
        ..Default::default()
    }
}

fn image_err(reference: &str, e: ImageError) -> ApiError {
    ApiError::invalid(format!("image {reference}: {e}"))
}

/// A registry's client for one repository: where it is, and the
/// Authorization header once a challenge was answered.
struct Registry {
    http: reqwest::Client,
    base: String,
    host: String,
    repository: String,
    credentials: Option<(String, String)>,
    auth: Option<String>,
}

impl Registry {
    fn unreachable(&self, e: reqwest::Error) -> ApiError {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        ApiError::unavailable(format!(
            "registry {} cannot be reached ({}): {cause}",
            self.host, self.base
        ))
    }

    async fn send(&self, url: &str, accept: &str) -> Result<reqwest::Response, ApiError> {
        let mut req = self.http.get(url).header(reqwest::header::ACCEPT, accept);
        if let Some(a) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        req.send().await.map_err(|e| self.unreachable(e))
    }

    /// GET `path` (under /v2/<name>/), answering an auth challenge once.
    async fn get(&mut self, path: &str, accept: &str) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        let resp = self.send(&url, accept).await?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED || self.auth.is_some() {
            return self.refused(resp);
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.auth = Some(self.answer(&challenge).await?);
        let resp = self.send(&url, accept).await?;
        self.refused(resp)
    }

    /// `resp`, unless it is a refusal of the credentials.
    fn refused(&self, resp: reqwest::Response) -> Result<reqwest::Response, ApiError> {
        if matches!(resp.status().as_u16(), 401 | 403) {
            return Err(if self.credentials.is_some() {
                ApiError::denied(format!(
                    "registry {}: credentials refused ({}): check them with `stoke registry login {}`",
                    self.host,
                    resp.status(),
                    self.host
                ))
            } else {
                ApiError::denied(format!(
                    "registry {} needs credentials ({}): `stoke registry login {} --username U --password-stdin`",
                    self.host,
                    resp.status(),
                    self.host
                ))
            });
        }
        Ok(resp)
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine as _;
        self.credentials.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// The Authorization header that answers `challenge`.
    async fn answer(&self, challenge: &str) -> Result<String, ApiError> {
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => self.basic().ok_or_else(|| {
                ApiError::denied(format!(
                    "registry {} needs credentials: `stoke registry login {} --username U --password-stdin`",
                    self.host, self.host
                ))
            }),
            "bearer" => {
                let realm = param(&params, "realm").ok_or_else(|| {
                    ApiError::unavailable(format!("registry {}: a Bearer challenge without a realm", self.host))
                })?;
                let scope = param(&params, "scope")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let mut query = vec![("scope", scope)];
                if let Some(service) = param(&params, "service") {
                    query.push(("service", service.to_string()));
                }
                let mut req = self.http.get(realm).query(&query);
                if let Some(b) = self.basic() {
                    req = req.header(reqwest::header::AUTHORIZATION, b);
                }
                let resp = req.send().await.map_err(|e| self.unreachable(e))?;
                let resp = self.refused(resp)?;
                if !resp.status().is_success() {
                    return Err(ApiError::unavailable(format!(
                        "registry {}: its token service {realm} answered {}",
                        self.host,
                        resp.status()
                    )));
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Token = resp.json().await.map_err(|e| {
                    ApiError::unavailable(format!("registry {}: its token service's answer: {e}", self.host))
                })?;
                let token = t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or_else(|| {
                    ApiError::unavailable(format!("registry {}: its token service gave no token", self.host))
                })?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(ApiError::unavailable(format!(
                "registry {} asks for authentication stoke does not speak ({challenge:?})",
                self.host
            ))),
        }
    }

    /// The body of a successful answer, at most `limit` bytes (`what`:
    /// for messages).
    async fn body(&self, mut resp: reqwest::Response, what: &str, limit: u64) -> Result<Vec<u8>, ApiError> {
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ApiError::not_found(format!(
                "registry {} has no {what} in repository {} (unknown repository, tag or digest)",
                self.host, self.repository
            )));
        }
        if !status.is_success() {
            return Err(ApiError::unavailable(format!(
                "registry {} answered {status} for {what} of {}",
                self.host, self.repository
            )));
        }
        if let Some(len) = resp.content_length()
            && len > limit
        {
            return Err(ApiError::invalid(format!(
                "{what} is {len} bytes, over the {limit}-byte limit"
            )));
        }
        let mut data = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(e))? {
            if (data.len() + chunk.len()) as u64 > limit {
                return Err(ApiError::invalid(format!("{what} is over the {limit}-byte limit")));
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }

    /// The blob `digest` (`size` bytes by its descriptor), checked.
    async fn blob(&mut self, digest: &str, size: u64, what: &str) -> Result<Vec<u8>, ApiError> {
        let hex = oci::sha256_hex(digest).map_err(|e| ApiError::invalid(e.to_string()))?;
        let resp = self.get(&format!("blobs/{digest}"), "*/*").await?;
        let data = self.body(resp, &format!("{what} {digest}"), size).await?;
        check(digest, hex, size, &data)?;
        Ok(data)
    }
}

/// `data` is `size` bytes and hashes to `hex`.
fn check(digest: &str, hex: &str, size: u64, data: &[u8]) -> Result<(), ApiError> {
    if data.len() as u64 != size {
        return Err(ApiError::invalid(format!(
            "{}",
            ImageError::SizeMismatch {
                digest: digest.to_string(),
                expected: size,
                actual: data.len() as u64
            }
        )));
    }
    let actual = package::digest(data);
    if actual != hex {
        return Err(ApiError::invalid(format!(
            "{}",
            ImageError::DigestMismatch {
                digest: digest.to_string(),
                actual
            }
        )));
    }
    Ok(())
}

/// A `WWW-Authenticate` value: its scheme and `key=value` parameters
/// (quoted or not).
fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        params.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    (scheme.to_string(), params)
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What a pull needs of the API, owned (it runs in its own task).
pub(crate) struct Puller {
    store: Arc<dyn Admin>,
    secrets: Option<Arc<SecretsKey>>,
    insecure_registries: Vec<String>,
    limits: ImageLimits,
}

impl Puller {
    pub(crate) fn of(api: &AdminApi) -> Puller {
        Puller {
            store: api.store.clone(),
            secrets: api.secrets.clone(),
            insecure_registries: api.insecure_registries.clone(),
            limits: ImageLimits::default(),
        }
    }

    /// Pull `reference` into the store, reporting on `progress`; the
    /// spec's sha256 hex and the manifest digest.
    pub(crate) async fn pull(&self, reference: &str, progress: &Progress) -> Result<(String, String), ApiError> {
        pull(self, reference, progress).await
    }
}

async fn pull(api: &Puller, reference: &str, progress: &Progress) -> Result<(String, String), ApiError> {
    let r = Reference::parse(reference).map_err(|e| ApiError::invalid(e.to_string()))?;
    let limits = api.limits;
    // Plain HTTP only for the hosts the operator listed.
    let insecure = api.insecure_registries.contains(&r.host);
    let scheme = if insecure { "http" } else { "https" };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("stoke/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ApiError::internal(format!("an HTTP client: {e}")))?;
    let mut reg = Registry {
        http,
        base: format!("{scheme}://{}", r.api_host()),
        host: r.host.clone(),
        repository: r.repository.clone(),
        credentials: crate::registries::credentials(api.store.as_ref(), api.secrets.as_deref(), &r.host).await?,
        auth: None,
    };
    let _ = progress
        .send(say(format!("resolving {reference} ({}://{})", scheme, r.api_host())))
        .await;

    // The manifest the reference names: an index is narrowed to ours.
    let accept = [
        media::OCI_INDEX,
        media::OCI_MANIFEST,
        media::DOCKER_LIST,
        media::DOCKER_MANIFEST,
    ]
    .join(", ");
    let wanted = r.manifest_ref().to_string();
    let resp = reg.get(&format!("manifests/{wanted}"), &accept).await?;
    let data = reg.body(resp, &format!("manifest {wanted}"), MAX_JSON_BYTES).await?;
    let mut digest = format!("sha256:{}", package::digest(&data));
    if let Some(pinned) = &r.digest
        && *pinned != digest
    {
        return Err(ApiError::invalid(format!(
            "image {reference}: the registry's manifest hashes to {digest}, not the digest asked for"
        )));
    }
    let mut manifest_data = data;
    let kind: MediaType = serde_json::from_slice(&manifest_data)
        .map_err(|e| ApiError::invalid(format!("image {reference}: manifest {digest} is not JSON: {e}")))?;
    let is_index = matches!(kind.media_type.as_str(), media::OCI_INDEX | media::DOCKER_LIST)
        || (kind.media_type.is_empty() && kind.manifests.is_some());
    if is_index {
        let index: Index = serde_json::from_slice(&manifest_data)
            .map_err(|e| ApiError::invalid(format!("image {reference}: index {digest}: {e}")))?;
        let chosen = oci::choose_platform(&index)
            .map_err(|e| image_err(reference, e))?
            .clone();
        let hex = oci::sha256_hex(&chosen.digest).map_err(|e| image_err(reference, e))?;
        let resp = reg.get(&format!("manifests/{}", chosen.digest), &accept).await?;
        manifest_data = reg
            .body(
                resp,
                &format!("manifest {}", chosen.digest),
                MAX_JSON_BYTES.min(chosen.size),
            )
            .await?;
        check(&chosen.digest, hex, chosen.size, &manifest_data)?;
        digest = chosen.digest;
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_data)
        .map_err(|e| ApiError::invalid(format!("image {reference}: manifest {digest}: {e}")))?;
    if !manifest.media_type.is_empty()
        && !matches!(
            manifest.media_type.as_str(),
            media::OCI_MANIFEST | media::DOCKER_MANIFEST
        )
    {
        return Err(image_err(
            reference,
            ImageError::UnsupportedMediaType {
                what: format!("manifest {digest}"),
                media_type: manifest.media_type,
            },
        ));
    }
    let config_data = reg
        .blob(
            &manifest.config.digest,
            manifest.config.size.min(MAX_JSON_BYTES),
            "config",
        )
        .await?;
    let config: Config = serde_json::from_slice(&config_data)
        .map_err(|e| ApiError::invalid(format!("image {reference}: config {}: {e}", manifest.config.digest)))?;
    oci::check_platform(&config).map_err(|e| image_err(reference, e))?;
    oci::check_counts(&manifest.layers, &limits).map_err(|e| image_err(reference, e))?;
    for d in &manifest.layers {
        oci::check_layer_type(d).map_err(|e| image_err(reference, e))?;
        oci::sha256_hex(&d.digest).map_err(|e| image_err(reference, e))?;
    }
    let _ = progress
        .send(say(format!(
            "{reference} is {digest} ({} layers)",
            manifest.layers.len()
        )))
        .await;

    // Every layer fetched and checked before any is stored.
    let staging = tempfile::tempdir().map_err(|e| ApiError::internal(format!("a staging directory: {e}")))?;
    let n = manifest.layers.len() as u32;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    let mut fetched = Vec::new();
    for (i, d) in manifest.layers.iter().enumerate() {
        let hex = oci::sha256_hex(&d.digest).expect("checked above").to_string();
        let stored = api.store.package_size(&hex).await? == Some(d.size);
        let p = PullImageProgress {
            message: format!(
                "layer {}/{n} ({} bytes, {}){}",
                i + 1,
                d.size,
                &hex[..12],
                if stored { ": stored already" } else { "" }
            ),
            layer: i as u32 + 1,
            layers: n,
            size: d.size,
            stored_already: stored,
            ..Default::default()
        };
        if !stored {
            let data = reg.blob(&d.digest, d.size, "layer").await?;
            let path = staging.path().join(&hex);
            tokio::fs::write(&path, &data)
                .await
                .map_err(|e| ApiError::internal(format!("staging layer {hex}: {e}")))?;
            fetched.push((hex.clone(), path));
        }
        let _ = progress.send(p).await;
        layers.push(LayerRef {
            digest: hex,
            size: d.size,
        });
    }
    for (hex, path) in fetched {
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| ApiError::internal(format!("staged layer {hex}: {e}")))?;
        api.store.put_package(&hex, &data).await?;
    }
    let spec = ImageSpec::new(reference, &digest, &config, layers);
    let bytes = spec.to_bytes();
    let spec_digest = package::digest(&bytes);
    api.store.put_package(&spec_digest, &bytes).await?;
    tracing::info!(%reference, manifest = %digest, spec = %spec_digest, layers = n, "image pulled");
    Ok((spec_digest, digest))
}

/// Just enough of a manifest or index to tell which it is.
#[derive(serde::Deserialize)]
struct MediaType {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    manifests: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(param(&p, "realm"), Some("https://auth.example/token"));
        assert_eq!(param(&p, "service"), Some("registry.example"));
        assert_eq!(param(&p, "scope"), Some("repository:a/b:pull,push"));
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!((s.as_str(), param(&p, "realm")), ("Basic", Some("Registry Realm")));
        let (s, p) = parse_challenge("Bearer realm=https://a/t, service=x");
        assert_eq!(
            (s.as_str(), param(&p, "realm"), param(&p, "service")),
            ("Bearer", Some("https://a/t"), Some("x"))
        );
    }

    #[test]
    fn blobs_are_checked_by_size_and_digest() {
        let hex = package::digest(b"abc");
        let digest = format!("sha256:{hex}");
        assert!(check(&digest, &hex, 3, b"abc").is_ok());
        assert!(check(&digest, &hex, 4, b"abc").unwrap_err().to_string().contains("4"));
        assert!(
            check(&digest, &hex, 3, b"abd")
                .unwrap_err()
                .to_string()
                .contains("does not match")
        );
    }
}
