//! Results to their callers: a completion is handed first to any caller of
//! this process waiting for it (`LocalResults`), then announced on NATS
//! unless nobody elsewhere can be waiting.

use stoke_store::Completion;

use crate::ctx::Ctx;
use crate::envelope::Envelope;

/// Tell waiting synchronous callers (best effort: the store is the truth):
/// those in this process directly, then any on NATS — unless none can be
/// elsewhere. An event with its own key (no caller's idempotency key) is
/// waited for only by the caller that published it, if it is synchronous,
/// so once that caller is handed the result here, or when nobody waits
/// (an async one), the announcement would reach no one.
pub(crate) async fn announce(ctx: &Ctx, env: &Envelope, c: &Completion) {
    let invocation_id = &env.invocation_id;
    let info = stoke_bus::results::completion_info(c, None);
    let here = ctx.shared.local_results.deliver(invocation_id, &info);
    if here > 0 {
        ctx.shared.metrics.result_in_process(here);
    }
    if !announced_on_nats(env, here) {
        return;
    }
    if let Err(e) = stoke_bus::results::announce(&ctx.shared.nats, invocation_id, &info).await {
        tracing::warn!(%invocation_id, error = %e, "cannot announce result");
    }
}

/// Whether a result must go out on NATS, once `here` callers of this
/// process have been handed it: unless the event has its own key and its
/// one possible caller has it, or is async (nobody waits).
fn announced_on_nats(env: &Envelope, here: usize) -> bool {
    !(env.own_key && (here > 0 || !env.sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller elsewhere may wait for a caller-keyed event (its key reused
    /// at another gateway) or for any sync event not handed over here.
    #[test]
    fn results_skip_nats_only_when_nobody_elsewhere_can_wait() {
        let event = |own_key: bool, sync: bool| {
            let mut env = Envelope::for_test("f", "k", own_key, 1);
            env.sync = sync;
            env
        };
        assert!(
            !announced_on_nats(&event(true, false), 0),
            "own key, async: nobody waits"
        );
        assert!(
            !announced_on_nats(&event(true, true), 1),
            "own key, its caller here has it"
        );
        assert!(
            announced_on_nats(&event(true, true), 0),
            "own key, its caller is elsewhere"
        );
        assert!(
            announced_on_nats(&event(false, true), 1),
            "a caller's key: others may wait"
        );
        assert!(
            announced_on_nats(&event(false, false), 0),
            "a caller's key, async: a sync repeat may wait"
        );
    }
}
