//! Function output for the admin API: one invocation's lines (`GetLogs`,
//! read by `stoke_bus::logs`) or a function's as they come (`TailLogs`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use prost::Message as _;
use stoke_core::naming;
use stoke_proto::{LogChunk, LogLine};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use stoke_bus::logs::{Stored, close, lines_of, reader, unavailable};

use crate::error::ApiError;

/// A retention time for people: "7 days", "12 h", "90 s".
pub(crate) fn kept_for(secs: u64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" }),
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s => format!("{s} s"),
    }
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
            .map_err(|e| ApiError::from(unavailable("following output", e)))?;
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
