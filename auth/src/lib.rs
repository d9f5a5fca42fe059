//! stoke-auth owns who may call: bearer tokens with a role, scoped to a
//! namespace (or `*`), the [`Caller`] a token stands for, and the
//! [`Authenticator`] that turns an `Authorization` header into one. The
//! admin API, worker attachment and token-protected HTTP triggers all ask
//! it. Of a token's secret only its SHA-256 is stored, and the AWS secret
//! access key derived from it (`sigv4`: SigV4's check needs the key
//! itself); the secret is shown once. AWS Signature Version 4's checking
//! (`sigv4`: parse, canonical request, signature) lives here too, for the
//! Lambda Invoke API's SDK callers.
//!
//! It must not know any transport (no gRPC statuses, no HTTP codes: the
//! callers map [`AuthError`]) and must not decide which call needs which
//! role (the admin API's table does).
//!
//! Roles are ordered, each including the ones before it:
//! reader (list, get, logs, usage, dead letters) < invoker (+ invoke,
//! publish) < deployer (+ deploy, rollback, delete, schedules, redrive) <
//! admin (+ tokens of its namespace; with `*`, workers and every namespace).
//! `worker` is apart: it may only attach a worker and fetch packages (and
//! an admin of every namespace may do that too).

pub mod sealed;
pub mod sigv4;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use stoke_store::{NewToken, StoreError, TokenRecord, Tokens};

/// The namespace functions land in when none is named.
pub const DEFAULT_NAMESPACE: &str = "default";
/// A token scope that covers every namespace.
pub const ALL_NAMESPACES: &str = "*";
/// How long a verified token is trusted before it is looked up again (so a
/// revocation takes effect within this).
const CACHE_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Invoker,
    Deployer,
    Admin,
    Worker,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Reader, Role::Invoker, Role::Deployer, Role::Admin, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Invoker => "invoker",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }

    /// Does holding `self` grant `need`?
    fn grants(self, need: Role) -> bool {
        match (self, need) {
            (Role::Worker, Role::Worker) => true,
            (Role::Worker, _) | (_, Role::Worker) => false,
            (have, need) => have >= need,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Role, AuthError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            AuthError::Invalid(format!(
                "unknown role {s:?}: use admin, deployer, invoker, reader or worker"
            ))
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that is unknown or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token without the role or namespace the call needs.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot check the token: {0}")]
    Unavailable(StoreError),
}

/// Whether calls must carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Tokens are required unless the server listens on loopback only.
    #[default]
    Auto,
    /// Every call needs a token.
    Tokens,
    /// No checks: every caller is an admin of every namespace.
    None,
}

impl AuthMode {
    /// Resolve `auto` for a server listening on `addr`.
    pub fn enabled_for(self, addr: std::net::SocketAddr) -> bool {
        match self {
            AuthMode::Auto => !addr.ip().is_loopback(),
            AuthMode::Tokens => true,
            AuthMode::None => false,
        }
    }
}

/// The verified identity behind a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// None when auth is off.
    pub token_id: Option<String>,
    pub namespace: String,
    pub role: Role,
}

impl Caller {
    /// Everyone, when auth is off.
    pub fn unrestricted() -> Caller {
        Caller {
            token_id: None,
            namespace: ALL_NAMESPACES.into(),
            role: Role::Admin,
        }
    }

    pub fn sees_all_namespaces(&self) -> bool {
        self.namespace == ALL_NAMESPACES
    }

    pub fn covers(&self, namespace: &str) -> bool {
        self.sees_all_namespaces() || self.namespace == namespace
    }

    /// `need` in `namespace`, or a PERMISSION_DENIED that says what is missing.
    pub fn require(&self, need: Role, namespace: &str) -> Result<(), AuthError> {
        // An admin of every namespace may do anything, attaching workers too.
        let cluster_admin = self.role == Role::Admin && self.sees_all_namespaces();
        if !self.role.grants(need) && !cluster_admin {
            return Err(AuthError::PermissionDenied(format!(
                "this needs the {need} role; the token is a {}",
                self.role
            )));
        }
        if !self.covers(namespace) {
            return Err(AuthError::PermissionDenied(format!(
                "namespace {namespace:?} is outside the token's namespace {:?}",
                self.namespace
            )));
        }
        Ok(())
    }

    /// The namespace a new function lands in: the one asked for, else the
    /// token's own (or `default` for an all-namespace token).
    pub fn target_namespace(&self, asked: &str) -> String {
        match (asked, self.sees_all_namespaces()) {
            ("", true) => DEFAULT_NAMESPACE.into(),
            ("", false) => self.namespace.clone(),
            (ns, _) => ns.into(),
        }
    }
}

/// Checks bearer tokens against the store, caching hits briefly.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Tokens>,
    enabled: bool,
    cache: Arc<Mutex<HashMap<String, (Caller, Instant)>>>,
    /// Hash of a secret that lives only in this process, for a worker in the
    /// same process (`stoke up`): never stored, gone on restart.
    local_worker: Option<String>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Tokens>, enabled: bool) -> Authenticator {
        Authenticator {
            store,
            enabled,
            cache: Arc::default(),
            local_worker: None,
        }
    }

    /// Accept a new in-process worker secret too; returns it.
    pub fn with_local_worker(mut self) -> (Authenticator, String) {
        let secret = format!("stoke_local_{}", random(40));
        self.local_worker = Some(hash_secret(&secret));
        (self, secret)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The caller behind an `Authorization` header value (`Bearer <token>`).
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        if !self.enabled {
            return Ok(Caller::unrestricted());
        }
        let Some(header) = authorization else {
            return Err(AuthError::Unauthenticated(
                "a token is required: send `authorization: Bearer <token>` (stoke CLI: --token or STOKE_TOKEN)".into(),
            ));
        };
        let secret = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| AuthError::Unauthenticated("the authorization header must be `Bearer <token>`".into()))?
            .trim();
        let hash = hash_secret(secret);
        if self.local_worker.as_ref() == Some(&hash) {
            return Ok(Caller {
                token_id: Some("local-worker".into()),
                namespace: ALL_NAMESPACES.into(),
                role: Role::Worker,
            });
        }
        if let Some((caller, at)) = self.cache.lock().expect("not poisoned").get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(caller.clone());
        }
        let record = self
            .store
            .token_by_hash(&hash)
            .await
            .map_err(AuthError::Unavailable)?
            .ok_or_else(|| AuthError::Unauthenticated("unknown or revoked token".into()))?;
        let caller = Caller {
            role: record.role.parse()?,
            token_id: Some(record.id),
            namespace: record.namespace,
        };
        let mut cache = self.cache.lock().expect("not poisoned");
        cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        cache.insert(hash, (caller.clone(), Instant::now()));
        Ok(caller)
    }
}

impl Authenticator {
    /// The caller behind a request: its `Authorization` header as
    /// [`Authenticator::authenticate`] takes it, or — when that header is
    /// an AWS Signature Version 4 one and the request is at hand — the
    /// token whose id is the access key id, once the signature checks out
    /// against its secret access key ([`sigv4::secret_access_key`]).
    pub async fn authenticate_request(
        &self,
        authorization: Option<&str>,
        request: Option<&sigv4::Request>,
    ) -> Result<Caller, AuthError> {
        let signed = match (authorization, request) {
            (Some(header), Some(r)) if self.enabled => sigv4::Authorization::parse(header)
                .map_err(|e| AuthError::Unauthenticated(e.to_string()))?
                .map(|a| (a, r)),
            _ => None,
        };
        let Some((auth, request)) = signed else {
            return self.authenticate(authorization).await;
        };
        let (record, secret) = self
            .store
            .sigv4_secret(&auth.key_id)
            .await
            .map_err(AuthError::Unavailable)?
            .ok_or_else(|| AuthError::Unauthenticated(format!("unknown or revoked access key id {:?}", auth.key_id)))?;
        let secret = secret.ok_or_else(|| {
            AuthError::Unauthenticated(format!(
                "token {} was made before SigV4 was supported and has no secret access key: create a new one",
                record.id
            ))
        })?;
        sigv4::verify(&secret, &request.signed(), &auth, stoke_core::now_ms() / 1000)
            .map_err(|e| AuthError::Unauthenticated(e.to_string()))?;
        Ok(Caller {
            role: record.role.parse()?,
            token_id: Some(record.id),
            namespace: record.namespace,
        })
    }
}

/// When auth is on and the store holds no live token, create an admin token
/// for every namespace and write its secret to `file` (mode 0600), so the
/// first operator can log in. Returns whether it did.
pub async fn bootstrap(store: &dyn Tokens, file: &std::path::Path) -> Result<bool, AuthError> {
    let live = store
        .tokens()
        .await
        .map_err(AuthError::Unavailable)?
        .iter()
        .any(|t| t.revoked_ms.is_none());
    if live {
        return Ok(false);
    }
    let (record, secret) = mint(store, "bootstrap-admin", ALL_NAMESPACES, Role::Admin).await?;
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(file)?;
        writeln!(f, "{secret}")
    };
    write().map_err(|e| {
        AuthError::Invalid(format!(
            "cannot write the bootstrap admin token to {}: {e} (token {} was created; revoke it)",
            file.display(),
            record.id
        ))
    })?;
    tracing::warn!(token = %record.id, file = %file.display(), "no API token existed: created an admin token for every namespace; its secret is in the file");
    Ok(true)
}

/// Validate a namespace name: `[a-z0-9][a-z0-9-]*`, at most 63 bytes.
pub fn validate_namespace(ns: &str) -> Result<(), AuthError> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "namespace {ns:?} is invalid: use lowercase letters, digits and '-', at most 63"
        )))
    }
}

/// Create a token; returns its record and the secret (shown only now).
pub async fn mint(
    store: &dyn Tokens,
    name: &str,
    namespace: &str,
    role: Role,
) -> Result<(TokenRecord, String), AuthError> {
    if namespace != ALL_NAMESPACES {
        validate_namespace(namespace)?;
    }
    let id = format!("tok_{}", random(10));
    let secret = format!("stoke_{}", random(40));
    let now_ms = stoke_core::now_ms();
    store
        .create_token(&NewToken {
            id: &id,
            name,
            namespace,
            role: role.as_str(),
            hash: &hash_secret(&secret),
            sigv4_secret: &sigv4::secret_access_key(&secret),
            now_ms,
        })
        .await
        .map_err(AuthError::Unavailable)?;
    let record = TokenRecord {
        id,
        name: name.into(),
        namespace: namespace.into(),
        role: role.as_str().into(),
        created_ms: now_ms,
        revoked_ms: None,
    };
    Ok((record, secret))
}

fn random(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn hash_secret(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(ns: &str, role: Role) -> Caller {
        Caller {
            token_id: Some("t".into()),
            namespace: ns.into(),
            role,
        }
    }

    #[test]
    fn roles_include_the_lesser_ones_and_workers_stand_apart() {
        let deployer = caller("a", Role::Deployer);
        assert!(deployer.require(Role::Reader, "a").is_ok());
        assert!(deployer.require(Role::Invoker, "a").is_ok());
        assert!(deployer.require(Role::Deployer, "a").is_ok());
        assert!(matches!(
            deployer.require(Role::Admin, "a"),
            Err(AuthError::PermissionDenied(_))
        ));
        assert!(matches!(
            deployer.require(Role::Worker, "a"),
            Err(AuthError::PermissionDenied(_))
        ));
        let worker = caller("*", Role::Worker);
        assert!(worker.require(Role::Worker, "x").is_ok());
        assert!(worker.require(Role::Reader, "x").is_err());
        assert!(caller("a", Role::Admin).require(Role::Worker, "a").is_err());
        assert!(caller("*", Role::Admin).require(Role::Worker, "x").is_ok());
    }

    #[test]
    fn namespaces_fence_everything_but_the_star() {
        let a = caller("a", Role::Admin);
        assert!(a.require(Role::Reader, "a").is_ok());
        let Err(AuthError::PermissionDenied(msg)) = a.require(Role::Reader, "b") else {
            panic!("crossed namespaces")
        };
        assert!(msg.contains("\"b\""), "{msg}");
        assert!(caller("*", Role::Reader).require(Role::Reader, "b").is_ok());
        assert_eq!(a.target_namespace(""), "a");
        assert_eq!(caller("*", Role::Admin).target_namespace(""), "default");
    }

    #[test]
    fn namespace_names_are_checked() {
        assert!(validate_namespace("team-a").is_ok());
        for bad in ["", "Team", "a/b", "-a", "*", &"x".repeat(64)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_mode_requires_tokens_off_loopback() {
        assert!(!AuthMode::Auto.enabled_for("127.0.0.1:1".parse().unwrap()));
        assert!(!AuthMode::Auto.enabled_for("[::1]:1".parse().unwrap()));
        assert!(AuthMode::Auto.enabled_for("0.0.0.0:1".parse().unwrap()));
        assert!(AuthMode::Tokens.enabled_for("127.0.0.1:1".parse().unwrap()));
        assert!(!AuthMode::None.enabled_for("0.0.0.0:1".parse().unwrap()));
    }
}
