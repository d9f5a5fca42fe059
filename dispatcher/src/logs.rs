//! Function output: storing the chunks workers send (one JetStream message
//! per chunk on `stoke.logs.<function>.<invocation>`, stream `STOKE_LOGS`)
//! and reading them back for the admin API — one invocation's lines
//! (`GetLogs`) or a function's as they come (`TailLogs`).
//!
//! Storing never holds up the worker stream: chunks are queued to one
//! publishing task (in order, so an invocation's chunks are stored in the
//! order they were read) and dropped when that queue is full. Each chunk of
//! an invocation a dispatch waits for hands back a receiver that fires once
//! JetStream has stored it; the dispatch waits for those (briefly) before it
//! records the completion, so a caller that got its result can read its
//! output.
//!
//! Reading uses short-lived ephemeral pull consumers with a single filter
//! subject (nats-server 2.9 ignores filter lists) and no acks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use prost::Message as _;
use stoke_core::naming;
use stoke_proto::{LogChunk, LogLine};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Chunks waiting to be published, at most.
const QUEUE: usize = 4096;
/// How long a dispatch waits for its invocation's output to be stored.
pub(crate) const STORED_WITHIN: Duration = Duration::from_secs(2);
/// Most text one GetLogs answer carries.
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// An ephemeral consumer nobody pulls from goes away after this long.
const INACTIVE: Duration = Duration::from_secs(30);

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

/// A retention time for people: "7 days", "12 h", "90 s".
pub(crate) fn kept_for(secs: u64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" }),
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s => format!("{s} s"),
    }
}

/// The lines of a stored chunk.
fn lines_of(chunk: LogChunk) -> impl Iterator<Item = LogLine> {
    let LogChunk {
        function,
        invocation_id,
        attempt,
        lines,
    } = chunk;
    lines.into_iter().map(move |l| LogLine {
        unix_ms: l.unix_ms,
        function: function.clone(),
        invocation_id: invocation_id.clone(),
        attempt,
        stream: l.stream,
        text: l.text,
    })
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "{what}: {e} (is JetStream up, with the {} stream?)",
        naming::LOGS_STREAM
    ))
}

/// An ephemeral, unacknowledged consumer of the logs stream.
async fn reader(
    js: &jetstream::Context,
    filter: String,
    deliver_policy: consumer::DeliverPolicy,
) -> Result<(jetstream::stream::Stream, consumer::PullConsumer), Status> {
    let stream = js
        .get_stream(naming::LOGS_STREAM)
        .await
        .map_err(|e| unavailable("reading output", e))?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter,
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: INACTIVE,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable("reading output", e))?;
    Ok((stream, consumer))
}

/// Remove a reader's consumer (the server would after [`INACTIVE`] anyway).
fn close(stream: jetstream::stream::Stream, consumer: &consumer::PullConsumer) {
    let name = consumer.cached_info().name.clone();
    tokio::spawn(async move {
        let _ = stream.delete_consumer(&name).await;
    });
}

/// The chunks a consumer holds now, in stream order.
struct Stored<'a> {
    consumer: &'a consumer::PullConsumer,
    /// Chunks still to read, as the server last said.
    left: u64,
    batch: Option<consumer::pull::Batch>,
    /// The current batch gave something.
    got: bool,
}

impl Stored<'_> {
    fn of(consumer: &consumer::PullConsumer) -> Stored<'_> {
        Stored {
            left: consumer.cached_info().num_pending,
            consumer,
            batch: None,
            got: false,
        }
    }

    async fn next(&mut self) -> Result<Option<LogChunk>, Status> {
        loop {
            if let Some(batch) = &mut self.batch {
                match batch.next().await {
                    Some(m) => {
                        let m = m.map_err(|e| unavailable("reading output", e))?;
                        self.got = true;
                        if let Ok(info) = m.info() {
                            self.left = info.pending;
                        }
                        if let Ok(chunk) = LogChunk::decode(m.payload.as_ref()) {
                            return Ok(Some(chunk));
                        }
                        continue;
                    }
                    None if !self.got => return Ok(None),
                    None => self.batch = None,
                }
            }
            if self.left == 0 {
                return Ok(None);
            }
            let batch = self
                .consumer
                .fetch()
                .max_messages(self.left.min(1000) as usize)
                .messages()
                .await
                .map_err(|e| unavailable("reading output", e))?;
            self.batch = Some(batch);
            self.got = false;
        }
    }
}

/// Every stored line of invocation `id` (of attempt `attempt`, unless 0),
/// in order; true when cut at [`MAX_ANSWER_BYTES`].
pub(crate) async fn invocation_lines(
    js: &jetstream::Context,
    id: &str,
    attempt: u32,
) -> Result<(Vec<LogLine>, bool), Status> {
    let (stream, consumer) = reader(js, naming::invocation_logs_filter(id), consumer::DeliverPolicy::All).await?;
    let mut stored = Stored::of(&consumer);
    let mut lines = Vec::new();
    let (mut bytes, mut cut) = (0, false);
    let read = async {
        while let Some(chunk) = stored.next().await? {
            // A hashed token could, in theory, be shared: keep this id's only.
            if chunk.invocation_id != id || (attempt != 0 && chunk.attempt != attempt) {
                continue;
            }
            for line in lines_of(chunk) {
                bytes += line.text.len();
                if bytes > MAX_ANSWER_BYTES {
                    cut = true;
                    return Ok(());
                }
                lines.push(line);
            }
        }
        Ok::<_, Status>(())
    }
    .await;
    close(stream, &consumer);
    read?;
    Ok((lines, cut))
}

/// What a tail shows.
pub(crate) struct Tail {
    pub function: String,
    /// From this time (Unix ms); 0 = only new lines.
    pub since_ms: i64,
    /// Keep going after catching up.
    pub follow: bool,
}

/// Stream `t.function`'s lines until the caller goes, the dispatcher stops,
/// or (without `follow`) the stored ones are read. The consumer exists when
/// this returns, so every line stored from then on is in the stream.
pub(crate) async fn tail(
    js: jetstream::Context,
    t: Tail,
    stop: CancellationToken,
) -> Result<tokio_stream::wrappers::ReceiverStream<Result<LogLine, Status>>, Status> {
    let start = match t.since_ms {
        0 => consumer::DeliverPolicy::New,
        ms => consumer::DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000)
                .map_err(|e| Status::invalid_argument(format!("since_unix_ms {ms}: {e}")))?,
        },
    };
    let filter = naming::function_logs_filter(&t.function);
    let first = reader(&js, filter.clone(), start).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let run = run_tail(
            &js,
            first,
            Follow {
                filter,
                start,
                follow: t.follow,
            },
            &tx,
        );
        let ended = tokio::select! {
            ended = run => ended,
            _ = stop.cancelled() => Err(Status::unavailable("the dispatcher is shutting down: tail again")),
            _ = tx.closed() => Ok(()),
        };
        if let Err(status) = ended {
            let _ = tx.send(Err(status)).await;
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Hand a chunk's lines to the caller (waiting while its queue is full);
/// false once it has gone.
async fn send(tx: &mpsc::Sender<Result<LogLine, Status>>, chunk: LogChunk) -> bool {
    for line in lines_of(chunk) {
        if tx.send(Ok(line)).await.is_err() {
            return false;
        }
    }
    true
}

struct Follow {
    filter: String,
    start: consumer::DeliverPolicy,
    follow: bool,
}

async fn run_tail(
    js: &jetstream::Context,
    (mut stream, mut consumer): (jetstream::stream::Stream, consumer::PullConsumer),
    f: Follow,
    tx: &mpsc::Sender<Result<LogLine, Status>>,
) -> Result<(), Status> {
    if !f.follow {
        let mut stored = Stored::of(&consumer);
        let read = async {
            while let Some(chunk) = stored.next().await? {
                if !send(tx, chunk).await {
                    break;
                }
            }
            Ok(())
        }
        .await;
        close(stream, &consumer);
        return read;
    }
    let mut last = 0;
    loop {
        let mut messages = consumer
            .stream()
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| unavailable("following output", e))?;
        while let Some(m) = messages.next().await {
            let Ok(m) = m else { break };
            if let Ok(info) = m.info() {
                last = info.stream_sequence;
            }
            if let Ok(chunk) = LogChunk::decode(m.payload.as_ref())
                && !send(tx, chunk).await
            {
                close(stream, &consumer);
                return Ok(());
            }
        }
        // The consumer went away (a NATS restart, missed heartbeats): pick
        // up after the last chunk seen.
        close(stream, &consumer);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let from = match last {
            0 => f.start,
            seq => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
        };
        (stream, consumer) = reader(js, f.filter.clone(), from).await?;
    }
}
