//! A delivered message's lease: acks, NAKs and TERMs, and the in-progress
//! acks that keep a message held while its event waits or runs.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};

pub(crate) async fn ack(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        // The server will redeliver after ack_wait; dedupe catches a repeat.
        tracing::warn!(error = %e, "ack failed");
    }
}

/// Run `fut` while keeping the messages' leases alive.
pub(crate) async fn with_progress<F: std::future::Future>(
    fut: F,
    msgs: &[&jetstream::Message],
    every: Duration,
) -> F::Output {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => {
                for msg in msgs {
                    ack(msg, AckKind::Progress).await;
                }
            }
        }
    }
}
