//! The admin API's handles into this dispatcher (`stoke_api::Handles`):
//! deployments changed, the queue view, the worker registry.

use std::sync::Arc;

use futures::future::BoxFuture;
use stoke_proto::{FunctionQueue, WorkerInfo};
use stoke_store::FunctionVersion;

use crate::current::Deployments;
use crate::pull::{Ctx, Pullers};
use crate::workers::Registry;

/// The handles over `pullers` and `registry`.
pub(crate) fn of(
    pullers: &Pullers,
    registry: &Arc<Registry>,
    js: async_nats::jetstream::Context,
) -> stoke_api::Handles {
    stoke_api::Handles {
        deployments: pullers.deployments(),
        queue: Arc::new(Queue { ctx: pullers.ctx(), js }),
        workers: registry.clone(),
    }
}

impl stoke_api::Deployments for Deployments {
    fn changed(&self) {
        Deployments::changed(self);
    }
}

impl stoke_api::Workers for Registry {
    fn snapshot(&self) -> Vec<WorkerInfo> {
        Registry::snapshot(self)
    }

    fn cordon(&self, id: &str) -> Option<WorkerInfo> {
        Registry::cordon(self, id)
    }
}

/// The queue view: JetStream's counts and this dispatcher's delivery state.
struct Queue {
    ctx: Arc<Ctx>,
    js: async_nats::jetstream::Context,
}

impl stoke_api::QueueView for Queue {
    fn function_queue<'a>(
        &'a self,
        v: &'a FunctionVersion,
        by_key: bool,
    ) -> BoxFuture<'a, Result<FunctionQueue, async_nats::Error>> {
        Box::pin(crate::queue::function_queue(&self.ctx, &self.js, v, by_key))
    }
}
