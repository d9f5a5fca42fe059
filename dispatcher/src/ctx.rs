//! The delivery context every handler shares: the dispatcher's connections
//! and settings ([`Shared`]), its delivery state ([`Ctx`]: loaded versions,
//! admission gates, the queue board, in-flight handlers), and where a
//! message came from ([`Source`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use stoke_bus::streams::{self, Holding};
use stoke_core::{Batching, Manifest, naming};
use stoke_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gate::Gate;
use crate::versions::{LoadError, Loaded, Versions};
use crate::workers::Registry;

pub(crate) struct Shared {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub worker_wait: Duration,
    pub answer_slack: Duration,
    /// Longest time between in-progress acks (shorter for short leases).
    pub progress_every: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Synchronous callers in this process (handed results directly).
    pub local_results: stoke_bus::results::LocalResults,
    /// Opens the secrets of a function's configuration.
    pub secrets: Option<Arc<stoke_auth::sealed::SecretsKey>>,
}

pub(crate) struct Ctx {
    pub shared: Shared,
    /// Function versions as loaded for dispatch, and the current ones.
    pub versions: Versions,
    /// Handlers of in-flight messages.
    pub tracker: TaskTracker,
    /// Fired when the shutdown grace runs out: release what is still running.
    pub release_now: CancellationToken,
    /// Admission per function version (concurrency across sources,
    /// per-key limits): versions may differ in their limits.
    pub gates: Mutex<HashMap<(String, u32), Arc<Gate>>>,
    /// What runs, waits and comes back later, per function (queue view).
    pub board: crate::queue::Board,
}

impl Ctx {
    /// The function version an event names (or the current one), cached.
    pub async fn load(&self, function: &str, version: Option<u32>) -> Result<Option<Arc<Loaded>>, LoadError> {
        let secrets = self.shared.secrets.as_deref();
        self.versions
            .load(self.shared.store.as_ref(), secrets, function, version)
            .await
    }

    /// The admission gate of `function` `version`, as its `manifest` sets it up.
    pub fn gate(&self, function: &str, version: u32, manifest: &Manifest) -> Arc<Gate> {
        let mut gates = self.gates.lock().expect("not poisoned");
        gates
            .entry((function.to_string(), version))
            .or_insert_with(|| Gate::new(manifest.concurrency, manifest.per_key_limit()))
            .clone()
    }
}

/// Where a consumer loop pulls from, and how its consumer holds messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Source {
    pub function: String,
    pub origin: Origin,
    pub holding: Holding,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    /// `stoke.invoke.<function>` on the invocation stream.
    Invoke,
    /// A `subject` trigger, on the events stream.
    Subscription { subject: String, batch: Option<Batching> },
}

impl Source {
    /// Every source a deployed version needs; an error when its stored
    /// manifest does not parse (then nobody can say what it needs).
    pub(crate) fn all_of(v: &stoke_store::FunctionVersion) -> Result<Vec<Source>, stoke_core::manifest::ManifestError> {
        let manifest = Manifest::parse(&v.manifest)?;
        let mut sources = vec![Source {
            function: v.function.clone(),
            origin: Origin::Invoke,
            holding: Holding::of(&manifest, None),
        }];
        for t in manifest.triggers().unwrap_or_default() {
            if let stoke_core::Trigger::Subject { subject, batch } = t {
                sources.push(Source {
                    function: v.function.clone(),
                    origin: Origin::Subscription { subject, batch },
                    holding: Holding::of(&manifest, batch),
                });
            }
        }
        Ok(sources)
    }

    /// The invocation-stream source of a function whose stored manifest
    /// cannot be read, so its events reach `handle::unreadable`.
    pub(crate) fn unreadable(function: &str) -> Source {
        Source {
            function: function.to_string(),
            origin: Origin::Invoke,
            holding: Holding::unreadable(),
        }
    }

    /// Same durable consumer (perhaps held differently).
    pub(crate) fn same_consumer(&self, other: &Source) -> bool {
        self.durable() == other.durable()
    }

    pub(crate) fn durable(&self) -> String {
        match &self.origin {
            Origin::Invoke => naming::invoke_consumer(&self.function),
            Origin::Subscription { subject, .. } => naming::subscription_consumer(&self.function, subject),
        }
    }

    pub(crate) fn stream(&self) -> &'static str {
        match self.origin {
            Origin::Invoke => naming::INVOKE_STREAM,
            Origin::Subscription { .. } => naming::EVENTS_STREAM,
        }
    }

    pub(crate) fn config(&self) -> pull::Config {
        match &self.origin {
            Origin::Invoke => streams::invoke_consumer_config(&self.function, self.holding),
            Origin::Subscription { subject, .. } => {
                streams::subscription_consumer_config(&self.function, subject, self.holding)
            }
        }
    }

    pub(crate) fn batch(&self) -> Option<Batching> {
        match self.origin {
            Origin::Subscription { batch, .. } => batch,
            Origin::Invoke => None,
        }
    }
}
