//! stoke-api owns the admin gRPC service (`AdminService`) the `stoke` CLI
//! and any gRPC client drive: deploys (and image pulls from OCI registries, with the registry
//! credentials they use), versions and aliases, invocations
//! and their output, dead letters, schedules, tokens, usage, the queue and
//! worker views.
//!
//! Shape: [`access`] authenticates every call once and checks the role
//! [`access::ACCESS`] declares for it; [`service`] holds thin handlers that
//! call the domain functions of the other modules, which return
//! [`ApiError`]; [`error`] is the one place those become gRPC statuses.
//! What lives in the dispatcher it reaches only through the narrow
//! [`Handles`] (deployments changed, the queue view, the worker registry),
//! so it can be tested without a dispatcher.
//!
//! It must not deliver events, run functions, or hold delivery state: it
//! accepts invocations through `stoke_bus::Invoker` like any edge, and
//! reads the store and the streams.

pub mod access;
mod deploy;
mod dlq;
pub mod error;
mod invocations;
pub mod logs;
mod publish;
mod pull;
mod registries;
mod routes;
mod schedules;
mod service;
mod tokens;
mod versions;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use futures::future::BoxFuture;
use stoke_auth::Authenticator;
use stoke_auth::sealed::SecretsKey;
use stoke_bus::Invoker;
use stoke_proto::admin_service_server::AdminServiceServer;
use stoke_proto::{FunctionQueue, WorkerInfo};
use stoke_store::{Admin, FunctionVersion};
use tokio_util::sync::CancellationToken;

pub use access::{ACCESS, Access, Grant, Guarded};
pub use error::ApiError;

/// The dispatcher's deployments: told when a function changed.
pub trait Deployments: Send + Sync {
    /// A function was deployed, rolled back, reconfigured or deleted.
    fn changed(&self);
}

/// The dispatcher's view of a function's queue.
pub trait QueueView: Send + Sync {
    /// Queued, unacked, running, waiting, retrying and deferred events of
    /// version `v`'s function (per concurrency key with `by_key`).
    fn function_queue<'a>(
        &'a self,
        v: &'a FunctionVersion,
        by_key: bool,
    ) -> BoxFuture<'a, Result<FunctionQueue, async_nats::Error>>;
}

/// The workers attached to this dispatcher.
pub trait Workers: Send + Sync {
    fn snapshot(&self) -> Vec<WorkerInfo>;
    /// Stop giving `id` new work; None when no such worker is attached.
    fn cordon(&self, id: &str) -> Option<WorkerInfo>;
}

/// The API's handles into the dispatcher that serves it.
#[derive(Clone)]
pub struct Handles {
    pub deployments: Arc<dyn Deployments>,
    pub queue: Arc<dyn QueueView>,
    pub workers: Arc<dyn Workers>,
}

/// The admin gRPC service as served: [`AdminApi`] behind [`Guarded`].
pub type AdminService = Guarded<AdminServiceServer<AdminApi>>;

/// Everything the admin API works with.
pub struct AdminApi {
    pub store: Arc<dyn Admin>,
    pub js: async_nats::jetstream::Context,
    /// The `[streams]` settings (deploys make subject subscriptions).
    pub streams: stoke_bus::streams::StreamOptions,
    pub invoker: Invoker,
    pub limits: stoke_core::package::Limits,
    /// Seals secrets set through the API (none: stored as given).
    pub secrets: Option<Arc<SecretsKey>>,
    pub handles: Handles,
    /// Registry hosts (`host[:port]`) images are pulled from over plain
    /// HTTP (`[dispatcher] insecure_registries`); HTTPS for every other.
    pub insecure_registries: Vec<String>,
    /// Cancelled when the dispatcher stops: ends log tails.
    pub stop: CancellationToken,
}

impl AdminApi {
    /// The gRPC service: this API behind `auth` and [`ACCESS`].
    pub fn into_service(self, auth: Authenticator, max_message: usize) -> AdminService {
        Guarded::new(
            AdminServiceServer::new(self)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            auth,
            ACCESS,
        )
    }
}
