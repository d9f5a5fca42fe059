//! Function output read back from the logs stream (`STOKE_LOGS`, where the
//! dispatcher stores the chunks workers send): one invocation's lines
//! (`GetLogs`) or a function's as they come (`TailLogs`).
//!
//! Reading uses short-lived ephemeral pull consumers with a single filter
//! subject (nats-server 2.9 ignores filter lists) and no acks.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use prost::Message as _;
use stoke_core::naming;
use stoke_proto::{LogChunk, LogLine};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::error::ApiError;

/// Most text one GetLogs answer carries.
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// An ephemeral consumer nobody pulls from goes away after this long.
const INACTIVE: Duration = Duration::from_secs(30);

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

fn unavailable(what: &str, e: impl Into<async_nats::Error>) -> ApiError {
    ApiError::Nats {
        what: what.to_string(),
        cause: e.into(),
        hint: " (is JetStream up, with the STOKE_LOGS stream?)",
    }
}

/// An ephemeral, unacknowledged consumer of the logs stream.
async fn reader(
    js: &jetstream::Context,
    filter: String,
    deliver_policy: consumer::DeliverPolicy,
) -> Result<(jetstream::stream::Stream, consumer::PullConsumer), ApiError> {
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

    async fn next(&mut self) -> Result<Option<LogChunk>, ApiError> {
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
) -> Result<(Vec<LogLine>, bool), ApiError> {
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
        Ok::<_, ApiError>(())
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
) -> Result<tokio_stream::wrappers::ReceiverStream<Result<LogLine, Status>>, ApiError> {
    let start = match t.since_ms {
        0 => consumer::DeliverPolicy::New,
        ms => consumer::DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000)
                .map_err(|e| ApiError::invalid(format!("since_unix_ms {ms}: {e}")))?,
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
            _ = stop.cancelled() => Err(Status::unavailable("the dispatcher is shutting down: tail again").into()),
            _ = tx.closed() => Ok(()),
        };
        if let Err(e) = ended {
            let _ = tx.send(Err(e.into())).await;
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
) -> Result<(), ApiError> {
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
