//! The admin API's handles into this dispatcher (`stoke_api::Handles`):
//! deployments changed, the queue view (JetStream's counts with this
//! dispatcher's board and gates), the worker registry.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;

use stoke_proto::{FunctionQueue, KeyQueue, WorkerInfo};
use stoke_store::FunctionVersion;

use crate::ctx::{Ctx, Source};
use crate::current::Deployments;
use crate::pull::Pullers;
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
        Box::pin(function_queue(&self.ctx, &self.js, v, by_key))
    }
}

/// Stored and unacked events of every consumer `version`'s function has
/// (the ones its pullers consume: `Source::all_of`).
async fn jetstream_counts(
    js: &async_nats::jetstream::Context,
    version: &FunctionVersion,
) -> Result<(u64, u64), async_nats::Error> {
    let (mut queued, mut unacked) = (0, 0);
    for source in Source::all_of(version)? {
        let durable = source.durable();
        let stream = js.get_stream(source.stream()).await?;
        // A consumer not created yet (no dispatcher pulled it) holds nothing.
        let Ok(mut consumer) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&durable)
            .await
        else {
            continue;
        };
        let info = consumer.info().await?;
        queued += info.num_pending;
        unacked += info.num_ack_pending as u64;
    }
    Ok((queued, unacked))
}

/// The queue view of one deployed function.
async fn function_queue(
    ctx: &Ctx,
    js: &async_nats::jetstream::Context,
    version: &FunctionVersion,
    by_key: bool,
) -> Result<FunctionQueue, async_nats::Error> {
    let function = version.function.as_str();
    let (queued, unacked) = jetstream_counts(js, version).await?;
    let (running, waiting, retrying, deferred) = ctx.board.counts(function);
    let mut keys: HashMap<String, (u32, u32)> = HashMap::new();
    if by_key {
        let gates: Vec<_> = ctx
            .gates
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|((f, _), _)| f == function)
            .map(|(_, g)| g.clone())
            .collect();
        for gate in gates {
            for (key, r, w) in gate.keys() {
                let e = keys.entry(key).or_default();
                e.0 += r;
                e.1 += w;
            }
        }
    }
    let mut keys: Vec<KeyQueue> = keys
        .into_iter()
        .map(|(key, (running, waiting))| KeyQueue { key, running, waiting })
        .collect();
    keys.sort_by(|a, b| {
        (b.running + b.waiting)
            .cmp(&(a.running + a.waiting))
            .then(a.key.cmp(&b.key))
    });
    Ok(FunctionQueue {
        function: function.to_string(),
        queued,
        unacked,
        running,
        waiting,
        retrying,
        deferred,
        keys,
    })
}
