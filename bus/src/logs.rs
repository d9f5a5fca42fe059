//! Function output as the logs stream (`STOKE_LOGS`) holds it: the
//! dispatcher stores the chunks workers send, one JetStream message per
//! chunk on `stoke.logs.<function>.<invocation>`, and stores an
//! invocation's chunks before it records the invocation's completion — so a
//! caller that has a result can read the output here (the admin API's
//! `GetLogs` and `TailLogs`, the Invoke API's `LogType: Tail`).
//!
//! Reading uses short-lived ephemeral pull consumers with a single filter
//! subject (nats-server 2.9 ignores filter lists) and no acks.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use prost::Message as _;
use stoke_core::naming;
use stoke_proto::{LogChunk, LogLine};

/// Most text one read of an invocation's output carries.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;
/// An ephemeral consumer nobody pulls from goes away after this long.
const INACTIVE: Duration = Duration::from_secs(30);

/// The lines of a stored chunk.
pub fn lines_of(chunk: LogChunk) -> impl Iterator<Item = LogLine> {
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

/// What to check when the logs stream cannot be read.
pub const HINT: &str = " (is JetStream up, with the STOKE_LOGS stream?)";

/// The logs stream could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {cause}{HINT}")]
pub struct LogsUnavailable {
    pub what: &'static str,
    #[source]
    pub cause: async_nats::Error,
}

pub fn unavailable(what: &'static str, e: impl Into<async_nats::Error>) -> LogsUnavailable {
    LogsUnavailable { what, cause: e.into() }
}

/// An ephemeral, unacknowledged consumer of the logs stream.
pub async fn reader(
    js: &jetstream::Context,
    filter: String,
    deliver_policy: consumer::DeliverPolicy,
) -> Result<(jetstream::stream::Stream, consumer::PullConsumer), LogsUnavailable> {
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
pub fn close(stream: jetstream::stream::Stream, consumer: &consumer::PullConsumer) {
    let name = consumer.cached_info().name.clone();
    tokio::spawn(async move {
        let _ = stream.delete_consumer(&name).await;
    });
}

/// The chunks a consumer holds now, in stream order.
pub struct Stored<'a> {
    consumer: &'a consumer::PullConsumer,
    /// Chunks still to read, as the server last said.
    left: u64,
    batch: Option<consumer::pull::Batch>,
    /// The current batch gave something.
    got: bool,
}

impl Stored<'_> {
    pub fn of(consumer: &consumer::PullConsumer) -> Stored<'_> {
        Stored {
            left: consumer.cached_info().num_pending,
            consumer,
            batch: None,
            got: false,
        }
    }

    pub async fn next(&mut self) -> Result<Option<LogChunk>, LogsUnavailable> {
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
pub async fn invocation_lines(
    js: &jetstream::Context,
    id: &str,
    attempt: u32,
) -> Result<(Vec<LogLine>, bool), LogsUnavailable> {
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
        Ok::<_, LogsUnavailable>(())
    }
    .await;
    close(stream, &consumer);
    read?;
    Ok((lines, cut))
}

/// The last `max` bytes of `lines`' text, one line per line (cut at a
/// character boundary): what Lambda's `LogType: Tail` returns, 4 KB of it.
pub fn last_bytes(lines: &[LogLine], max: usize) -> String {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.text);
        text.push('\n');
    }
    let mut from = text.len().saturating_sub(max);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    text.split_off(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_bytes_on_a_character_boundary() {
        let line = |t: &str| LogLine {
            text: t.into(),
            ..Default::default()
        };
        let lines = [line("first"), line("second é")];
        assert_eq!(last_bytes(&lines, 1000), "first\nsecond é\n");
        assert_eq!(last_bytes(&lines, 4), " é\n");
        assert_eq!(last_bytes(&lines, 3), "é\n");
        assert_eq!(last_bytes(&lines, 2), "\n", "not half of é");
        assert_eq!(last_bytes(&[], 10), "");
    }
}
