//! Function output: storing the chunks workers send (one JetStream message
//! per chunk on `stoke.logs.<function>.<invocation>`, stream `STOKE_LOGS`).
//! The admin API reads them back (`stoke_api::logs`).
//!
//! Storing never holds up the worker stream: chunks are queued to one
//! publishing task (in order, so an invocation's chunks are stored in the
//! order they were read) and dropped when that queue is full. Each chunk of
//! an invocation a dispatch waits for hands back a receiver that fires once
//! JetStream has stored it; the dispatch waits for those (briefly) before it
//! records the completion, so a caller that got its result can read its
//! output.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use prost::Message as _;
use stoke_core::naming;
use stoke_proto::LogChunk;
use tokio::sync::{mpsc, oneshot};

/// Chunks waiting to be published, at most.
const QUEUE: usize = 4096;
/// How long a dispatch waits for its invocation's output to be stored.
pub(crate) const STORED_WITHIN: Duration = Duration::from_secs(2);

struct Job {
    subject: String,
    payload: bytes::Bytes,
    stored: oneshot::Sender<()>,
}

/// Publishes chunks of output to the logs stream, in the order submitted.
pub struct Publisher {
    queue: mpsc::Sender<Job>,
}

impl Publisher {
    /// Start the publishing task (it ends when the publisher is dropped).
    pub(crate) fn start(js: jetstream::Context) -> Publisher {
        let (queue, mut jobs) = mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                match js.publish(job.subject, job.payload).await {
                    Ok(ack) => {
                        tokio::spawn(async move {
                            if let Err(e) = ack.await {
                                warn_now_and_then(&format!("function output not stored: {e}"));
                            }
                            let _ = job.stored.send(());
                        });
                    }
                    Err(e) => warn_now_and_then(&format!("function output not published: {e}")),
                }
            }
        });
        Publisher { queue }
    }

    /// Queue a worker's chunk. The receiver fires once it is stored (or
    /// storing it failed); `None` when it was refused (a name that is not a
    /// function's) or dropped (queue full).
    pub(crate) fn submit(&self, chunk: &LogChunk) -> Option<oneshot::Receiver<()>> {
        if stoke_core::manifest::validate_name(&chunk.function).is_err() {
            warn_now_and_then(&format!(
                "output chunk for an invalid function name {:?} dropped",
                chunk.function
            ));
            return None;
        }
        let (stored, done) = oneshot::channel();
        let job = Job {
            subject: naming::log_subject(&chunk.function, &chunk.invocation_id),
            payload: chunk.encode_to_vec().into(),
            stored,
        };
        match self.queue.try_send(job) {
            Ok(()) => Some(done),
            Err(_) => {
                warn_now_and_then("function output dropped: the publishing queue is full");
                None
            }
        }
    }
}

/// Wait (at most [`STORED_WITHIN`]) until these chunks are stored.
pub(crate) async fn wait_stored(chunks: Vec<oneshot::Receiver<()>>) {
    if chunks.is_empty() {
        return;
    }
    if tokio::time::timeout(STORED_WITHIN, futures::future::join_all(chunks))
        .await
        .is_err()
    {
        warn_now_and_then("function output not stored in time; completing without waiting");
    }
}

/// A warning at most every 10 s (a missing stream would warn per chunk).
fn warn_now_and_then(what: &str) {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = stoke_core::now_ms();
    let last = LAST.load(Ordering::Relaxed);
    if now - last >= 10_000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!("{what}");
    }
}
