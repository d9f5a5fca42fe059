//! Turning a request to run a function into a durable invocation event.
//!
//! Every entry point (HTTP gateway, admin API, later cron and subjects)
//! goes through [`Invoker::invoke`]: check the function exists, derive the
//! invocation id and idempotency key, publish onto JetStream with the key as
//! `Nats-Msg-Id`, and (for synchronous callers) wait for the result the
//! dispatcher announces on `stoke.result.<id>`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use stoke_core::catalog::CurrentVersions;
use stoke_core::routes::RouteMatch;
use stoke_core::trace::TraceContext;
use stoke_core::{HttpAuth, HttpEvent, Manifest, Retryable};
use stoke_proto::InvocationInfo;
use stoke_store::{Accepted, DeadLetter, Edge, FunctionVersion};
use tracing::Instrument as _;

use stoke_auth::{AuthError, Authenticator, Role};

use crate::envelope::Envelope;
use crate::http::HttpCall;
use crate::ids;
use crate::results::{self, LocalResults, completion_info, view_info};

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("function {0:?} not found")]
    NotFound(String),
    #[error("function {0:?} has no http trigger")]
    NoHttpTrigger(String),
    #[error("payload is {size} bytes, over the {limit}-byte limit")]
    PayloadTooLarge { size: usize, limit: usize },
    /// An HTTP request its function URL event cannot describe.
    #[error(transparent)]
    BadRequest(#[from] crate::http::HttpEventError),
    #[error(transparent)]
    InvalidKey(#[from] ids::InvalidKey),
    /// NATS or the store cannot take the event now; nothing was accepted.
    #[error("cannot accept the event now: {0}")]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    #[error("deployed manifest of {function:?} is unreadable: {cause}")]
    BadManifest {
        function: String,
        cause: stoke_core::manifest::ManifestError,
    },
    #[error("idempotency key {0:?} was already used with a different payload")]
    KeyConflict(String),
    /// A token-protected HTTP trigger called without a valid token.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token without the invoker role in the function's namespace.
    #[error("{0}")]
    Forbidden(String),
}

impl Retryable for InvokeError {
    fn is_retryable(&self) -> bool {
        matches!(self, InvokeError::Unavailable(_))
    }
}

impl From<stoke_store::StoreError> for InvokeError {
    fn from(e: stoke_store::StoreError) -> Self {
        InvokeError::Unavailable(e.into())
    }
}

/// One request to run a function.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub function: String,
    pub payload: Bytes,
    pub idempotency_key: Option<String>,
    /// `http`, `admin`, ...
    pub trigger: &'static str,
    /// Wait for the result (RequestResponse) or return once queued (Event).
    pub wait: bool,
    /// Who is asking, which decides the checks made here.
    pub via: Via,
    /// The caller's trace context (an HTTP `traceparent`); a fresh one
    /// when `None`.
    pub trace: Option<TraceContext>,
    /// The HTTP request, when it came to a function URL: the function then
    /// receives its function URL event (`crate::http`) unless its trigger
    /// asks for the body alone (`payload`).
    pub http: Option<HttpCall>,
    /// The caller reads a streamed answer as it comes
    /// ([`Invoked::Streaming`]): a waiting function URL caller whose
    /// trigger says `response = "stream"`, or the Invoke API's
    /// `InvokeWithResponseStream`.
    pub stream: bool,
}

/// What a synchronous wait heard first.
enum Heard {
    Result(Option<InvocationInfo>),
    Part(Result<Option<crate::stream::Part>, crate::stream::PartsError>),
}

/// Where a request to run a function comes from.
#[derive(Debug, Clone)]
pub enum Via {
    /// The admin API (its caller already authorized) or the platform itself
    /// (cron): any deployed function.
    Platform,
    /// The public gateway: only functions with an `http` trigger, and the
    /// trigger's token check (the request's `Authorization` header: a bearer
    /// token, or — with the request at hand, `signed` — an AWS SigV4
    /// signature by a token's secret access key).
    Http {
        authorization: Option<String>,
        signed: Option<Arc<stoke_auth::sigv4::Request>>,
    },
}

#[derive(Debug)]
// One per invoke call, moved once: boxing the big variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Invoked {
    /// The invocation finished (or its key already had a result).
    Completed(InvocationInfo),
    /// Durably queued; poll by id.
    Queued { invocation_id: String },
    /// A synchronous wait ran out before the result came; poll by id.
    StillRunning { invocation_id: String },
    /// The function streams its answer, which the caller reads as it
    /// comes (a function URL in stream mode).
    Streaming(Streamed),
}

/// A response being streamed.
pub struct Streamed {
    pub invocation_id: String,
    /// The version that runs.
    pub version: u32,
    /// Its first part's content type.
    pub content_type: String,
    /// The parts after it.
    pub parts: crate::stream::Parts,
    /// The stream must have ended by then (the function's timeout, and the
    /// wait's slack): a worker lost mid-stream sends no end.
    pub deadline: tokio::time::Instant,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed")
            .field("invocation_id", &self.invocation_id)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct Invoker {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    store: Arc<dyn Edge>,
    /// Checks tokens of token-protected HTTP triggers (always on).
    auth: Authenticator,
    max_payload: usize,
    /// Added to the function timeout for a synchronous wait (queueing, cold start).
    wait_slack: Duration,
    /// Parsed manifests by (function, version): a version never changes.
    manifests: std::sync::Mutex<std::collections::HashMap<(String, u32), Arc<Manifest>>>,
    /// Current versions by function name, remembered only when the admin
    /// API that changes them is in this process (`share_catalog`: then a
    /// call made after a change returns runs what it made current).
    current: std::sync::OnceLock<CurrentVersions<Arc<FunctionVersion>>>,
    /// Results a dispatcher of this same process hands over directly
    /// (`share_results`), ahead of their NATS announcement.
    local: std::sync::OnceLock<LocalResults>,
    /// The routes at the gateway's root.
    routes: crate::routes::Routes,
}

/// Parsed manifests kept at most (then the cache starts over).
const MANIFESTS_KEPT: usize = 4096;

impl Invoker {
    pub fn new(client: async_nats::Client, store: Arc<dyn Edge>, max_payload: usize, wait_slack: Duration) -> Invoker {
        Invoker {
            inner: Arc::new(Inner {
                js: jetstream::new(client.clone()),
                client,
                auth: Authenticator::new(store.clone(), true),
                store,
                max_payload,
                wait_slack,
                current: std::sync::OnceLock::new(),
                local: std::sync::OnceLock::new(),
                manifests: std::sync::Mutex::default(),
                routes: Default::default(),
            }),
        }
    }

    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    pub async fn invoke(&self, mut req: InvokeRequest) -> Result<Invoked, InvokeError> {
        let trace = *req.trace.get_or_insert_with(TraceContext::fresh);
        let span = tracing::info_span!(
            "invoke",
            function = %req.function,
            trigger = req.trigger,
            trace_id = %trace.trace_id()
        );
        self.invoke_traced(req, trace).instrument(span).await
    }

    async fn invoke_traced(&self, req: InvokeRequest, trace: TraceContext) -> Result<Invoked, InvokeError> {
        let me = &self.inner;
        if req.payload.len() > me.max_payload {
            return Err(InvokeError::PayloadTooLarge {
                size: req.payload.len(),
                limit: me.max_payload,
            });
        }
        // `name`, `name:7` or `name:alias`: from here on, the plain name.
        let version = self
            .resolve(&req.function)
            .await?
            .ok_or_else(|| InvokeError::NotFound(req.function.clone()))?;
        let function = version.function.clone();
        let manifest = self.manifest(&version)?;
        if let Via::Http { authorization, signed } = &req.via {
            self.check_http(&version, &manifest, authorization.as_deref(), signed.as_deref())
                .await?;
        }
        // A function URL's request becomes its event, unless the trigger
        // wants the body alone; what identifies it for a key is the
        // request, not the event (which carries the time).
        let (payload, digest_input, event_made) = match (&req.http, manifest.http_event()) {
            (Some(call), Some(HttpEvent::Url)) => {
                let request_id = uuid::Uuid::new_v4().to_string();
                let event = crate::http::url_event(call, &function, &request_id, stoke_core::now_ms())?;
                let event = Bytes::from(serde_json::to_vec(&event).expect("JSON values serialise"));
                if event.len() > me.max_payload {
                    return Err(InvokeError::PayloadTooLarge {
                        size: event.len(),
                        limit: me.max_payload,
                    });
                }
                (event, Bytes::from(call.digest_input()), true)
            }
            _ => (req.payload.clone(), req.payload.clone(), false),
        };
        let (invocation_id, key) = match &req.idempotency_key {
            Some(key) => {
                ids::validate_key(key)?;
                (ids::id_for_key(&function, key), key.clone())
            }
            None => {
                let id = stoke_core::new_invocation_id();
                (id.clone(), id)
            }
        };
        // A key that already completed gets the stored result without
        // running — if it is the same event: another payload is a conflict.
        // (Only events someone may repeat need the payload's digest.)
        let keyed = req.idempotency_key.is_some();
        let digest = (keyed || !req.wait).then(|| stoke_core::package::digest(&digest_input));
        let conflicts = |stored: &Option<String>| keyed && stored.is_some() && *stored != digest;
        if keyed && let Some(done) = me.store.completion_by_key(&function, &key).await? {
            if conflicts(&done.payload_digest) {
                return Err(InvokeError::KeyConflict(key));
            }
            return Ok(Invoked::Completed(completion_info(&done, None)));
        }
        // Record caller-keyed events (and every async one) before publishing;
        // the first record of a key wins, so a concurrent reuse of the key
        // with another payload is refused here.
        if let Some(digest) = &digest {
            let first = me
                .store
                .record_accepted(&Accepted {
                    invocation_id: invocation_id.clone(),
                    function: function.clone(),
                    idempotency_key: key.clone(),
                    trigger: req.trigger.to_string(),
                    created_ms: stoke_core::now_ms(),
                    payload_digest: Some(digest.clone()),
                })
                .await?;
            if !first
                && let Some(earlier) = me.store.accepted(&invocation_id).await?
                && conflicts(&earlier.payload_digest)
            {
                return Err(InvokeError::KeyConflict(key));
            }
        }

        // Subscribe before publishing so the announcement cannot be missed.
        let mut local = req
            .wait
            .then(|| me.local.get().map(|l| l.wait_for(&invocation_id)))
            .flatten();
        let mut results = if req.wait {
            Some(
                results::subscribe(&me.client, &invocation_id)
                    .await
                    .map_err(|e| InvokeError::Unavailable(e.into()))?,
            )
        } else {
            None
        };
        // A streamed answer is read as it comes (a function URL only when its
        // trigger says so).
        let mut parts = if req.wait && req.stream && (req.http.is_none() || manifest.http_streams()) {
            let here = me.local.get().map(|l| l.streams().read(&invocation_id, keyed));
            Some(
                crate::stream::subscribe(&me.client, &invocation_id, here)
                    .await
                    .map_err(|e| InvokeError::Unavailable(e.into()))?,
            )
        } else {
            None
        };
        let envelope = Envelope {
            msg_id: key.clone(),
            invocation_id: invocation_id.clone(),
            key,
            trigger: req.trigger.to_string(),
            sync: req.wait,
            version: Some(version.version),
            attempt_base: 0,
            trace: Some(trace),
            // The request's, where the event is not what a repeat repeats.
            digest: digest.clone().filter(|_| event_made),
            stream: parts.is_some(),
        };
        let ack = self.publish(&function, &envelope, payload).await?;
        tracing::debug!(%invocation_id, %function, seq = ack.sequence, duplicate = ack.duplicate, "event queued");

        let Some(sub) = results.as_mut() else {
            return Ok(Invoked::Queued { invocation_id });
        };
        let wait = Duration::from_millis(manifest.timeout_ms()) + me.wait_slack;
        let deadline = tokio::time::Instant::now() + wait;
        let local_waits = local.is_some();
        let here = async {
            match local.as_mut() {
                Some(waiter) => waiter.result().await,
                None => std::future::pending().await,
            }
        };
        let first_part = async {
            match parts.as_mut() {
                Some(p) => p.next().await,
                None => std::future::pending().await,
            }
        };
        let heard = tokio::time::timeout_at(deadline, async {
            tokio::pin!(here);
            tokio::select! {
                info = &mut here => Heard::Result(Some(info)),
                msg = sub.next() => Heard::Result(match msg {
                    Some(m) => InvocationInfo::decode(m.payload).ok(),
                    // The subscription ended (NATS went away): a dispatcher
                    // of this process may still hand the result over.
                    None if local_waits => Some(here.await),
                    None => None,
                }),
                part = first_part => Heard::Part(part),
            }
        });
        match heard.await {
            Ok(Heard::Result(Some(info))) => return Ok(Invoked::Completed(info)),
            Ok(Heard::Part(Ok(Some(crate::stream::Part::ContentType(content_type))))) => {
                return Ok(Invoked::Streaming(Streamed {
                    invocation_id,
                    version: version.version,
                    content_type,
                    parts: parts.expect("a part came from them"),
                    deadline,
                }));
            }
            Ok(Heard::Part(other)) => {
                tracing::warn!(%invocation_id, part = ?other, "a streamed response did not begin with its content type");
            }
            _ => {}
        }
        // The announcement is best effort; the store is the truth.
        match me.store.invocation(&invocation_id).await? {
            Some(view) if view.completion.is_some() => Ok(Invoked::Completed(view_info(&view))),
            _ => Ok(Invoked::StillRunning { invocation_id }),
        }
    }

    /// Lambda's DryRun: the function (version) `function` names exists and
    /// `via` may invoke it; nothing is published.
    pub async fn dry_run(&self, function: &str, via: &Via) -> Result<(), InvokeError> {
        let version = self
            .resolve(function)
            .await?
            .ok_or_else(|| InvokeError::NotFound(function.to_string()))?;
        let manifest = self.manifest(&version)?;
        if let Via::Http { authorization, signed } = via {
            self.check_http(&version, &manifest, authorization.as_deref(), signed.as_deref())
                .await?;
        }
        Ok(())
    }

    /// The last `max` bytes of what `invocation_id` wrote (stdout and
    /// stderr, a line each): stored before its completion was recorded, so
    /// readable as soon as its result is.
    pub async fn output_tail(&self, invocation_id: &str, max: usize) -> Result<String, crate::logs::LogsUnavailable> {
        let (lines, _) = crate::logs::invocation_lines(&self.inner.js, invocation_id, 0).await?;
        Ok(crate::logs::last_bytes(&lines, max))
    }

    /// The CORS of the version `function` (`name`, `name:7`, `name:alias`)
    /// names; None when it has none, or there is no such function (the
    /// call itself then says so).
    pub async fn cors(&self, function: &str) -> Option<stoke_core::Cors> {
        let version = self.resolve(function).await.ok()??;
        self.manifest(&version).ok()?.http_cors().cloned()
    }

    /// The route at the gateway's root a request matches (`host` its `Host`
    /// header, `raw_path` as sent), if any.
    pub async fn route(
        &self,
        host: Option<&str>,
        method: &str,
        raw_path: &str,
    ) -> Result<Option<RouteMatch>, InvokeError> {
        let me = &self.inner;
        let changes = me.current.get().map(|c| c.changes());
        let table = me
            .routes
            .table(
                changes,
                async || me.store.list_functions().await,
                |v| self.manifest(v).ok(),
            )
            .await?;
        Ok(table
            .lookup(host, method, raw_path)
            .map_err(crate::http::HttpEventError::from)?)
    }

    /// Cache current versions from now on, stale at every change counted
    /// in `changes` (the admin API of this same process bumps it). Once.
    pub fn share_catalog(&self, changes: stoke_core::catalog::CatalogChanges) {
        let _ = self.inner.current.set(CurrentVersions::new(changes));
    }

    /// Take results from this process's dispatcher directly as well as
    /// from NATS (see [`crate::results`]). Once.
    pub fn share_results(&self, results: LocalResults) {
        let _ = self.inner.local.set(results);
    }

    /// The version `qualified` (`name`, `name:7`, `name:alias`) names; a
    /// plain name's from the cache when there is one.
    async fn resolve(&self, qualified: &str) -> Result<Option<Arc<FunctionVersion>>, InvokeError> {
        let store = self.inner.store.as_ref();
        let cache = self.inner.current.get().filter(|_| !qualified.contains(':'));
        let Some(cache) = cache else {
            return Ok(stoke_store::resolve_version(store, qualified).await?.map(Arc::new));
        };
        if let Some(v) = cache.get(qualified) {
            return Ok(Some(v));
        }
        let at_change = cache.changes().get();
        let Some(v) = store.current_version(qualified).await?.map(Arc::new) else {
            return Ok(None);
        };
        cache.remember(qualified, v.clone(), at_change);
        Ok(Some(v))
    }

    /// The version's manifest, parsed once.
    fn manifest(&self, version: &FunctionVersion) -> Result<Arc<Manifest>, InvokeError> {
        let key = (version.function.clone(), version.version);
        if let Some(m) = self.inner.manifests.lock().expect("not poisoned").get(&key) {
            return Ok(m.clone());
        }
        let parsed = Manifest::parse(&version.manifest).map_err(|cause| InvokeError::BadManifest {
            function: version.function.clone(),
            cause,
        })?;
        let parsed = Arc::new(parsed);
        let mut cache = self.inner.manifests.lock().expect("not poisoned");
        if cache.len() >= MANIFESTS_KEPT {
            cache.clear();
        }
        cache.insert(key, parsed.clone());
        Ok(parsed)
    }

    /// The gateway's checks: an `http` trigger, and its token if it wants one.
    async fn check_http(
        &self,
        version: &FunctionVersion,
        manifest: &Manifest,
        authorization: Option<&str>,
        signed: Option<&stoke_auth::sigv4::Request>,
    ) -> Result<(), InvokeError> {
        match manifest.http_auth() {
            None => Err(InvokeError::NoHttpTrigger(version.function.clone())),
            Some(HttpAuth::None) => Ok(()),
            Some(HttpAuth::Token) => {
                let checked = self.inner.auth.authenticate_request(authorization, signed).await;
                let caller = checked.map_err(|e| match e {
                    AuthError::Unavailable(e) => InvokeError::Unavailable(e.into()),
                    AuthError::PermissionDenied(m) => InvokeError::Forbidden(m),
                    AuthError::Unauthenticated(m) | AuthError::Invalid(m) => {
                        InvokeError::Unauthenticated(format!("function {:?} requires a token: {m}", version.function))
                    }
                })?;
                caller
                    .require(Role::Invoker, &version.namespace)
                    .map_err(|e| InvokeError::Forbidden(e.to_string()))
            }
        }
    }

    /// `GET /invocations/{id}` for the gateway: what [`Invoker::status`]
    /// gives, once the caller passes the HTTP checks of the version it ran
    /// (a version whose trigger wants a token shows its results to token
    /// holders only, whatever became of the function since: a later
    /// version, a rollback, a delete). An invocation with no version yet is
    /// judged by the current one, or the last one of a deleted function.
    pub async fn http_status(
        &self,
        invocation_id: &str,
        authorization: Option<&str>,
    ) -> Result<Option<InvocationInfo>, InvokeError> {
        let Some(info) = self.status(invocation_id).await? else {
            return Ok(None);
        };
        let store = &self.inner.store;
        let ran = match info.version {
            0 => None,
            v => store.get_version(&info.function, v).await?,
        };
        let judged = match ran {
            Some(v) => Some(v),
            None => match store.current_version(&info.function).await? {
                Some(v) => Some(v),
                None => store.list_versions(&info.function).await?.pop(),
            },
        };
        if let Some(v) = judged
            && let Ok(manifest) = self.manifest(&v)
            && manifest.http_auth() == Some(HttpAuth::Token)
        {
            self.check_http(&v, &manifest, authorization, None).await?;
        }
        Ok(Some(info))
    }

    /// Publish a dead letter again, with its original invocation id and
    /// idempotency key, for `version`. The message id is new (the original
    /// is still inside the duplicate window) and the attempt count carries
    /// on from where it stopped.
    pub async fn redrive(&self, dead: &DeadLetter, version: u32) -> Result<(), InvokeError> {
        let envelope = Envelope {
            msg_id: format!("{}:redrive:{}", dead.idempotency_key, dead.redrive_count + 1),
            invocation_id: dead.invocation_id.clone(),
            key: dead.idempotency_key.clone(),
            trigger: dead.trigger.clone(),
            sync: false,
            version: Some(version),
            attempt_base: dead.attempts,
            trace: Some(TraceContext::fresh()),
            // What its key was accepted with (a function URL's request),
            // so a repeat after the redrive is still the same event.
            digest: self
                .inner
                .store
                .accepted(&dead.invocation_id)
                .await?
                .and_then(|a| a.payload_digest),
            stream: false,
        };
        self.publish(&dead.function, &envelope, dead.payload.clone().into())
            .await?;
        Ok(())
    }

    /// Publish an invocation event and wait for JetStream to store it.
    async fn publish(
        &self,
        function: &str,
        envelope: &Envelope,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck, InvokeError> {
        envelope
            .publish(&self.inner.js, function, payload)
            .await
            .map_err(|e| InvokeError::Unavailable(e.into()))
    }

    /// Status and result of an invocation, or None if the id is unknown.
    pub async fn status(&self, invocation_id: &str) -> Result<Option<InvocationInfo>, InvokeError> {
        Ok(self.inner.store.invocation(invocation_id).await?.map(|v| view_info(&v)))
    }
}
