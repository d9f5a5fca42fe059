//! Streamed responses. A function whose caller waits on its response as it
//! comes (a function URL in stream mode) streams it to the Runtime API; the
//! worker forwards each piece as a `ResponsePart` (the content type first,
//! then the data, then the end, numbered from 0), the dispatcher publishes
//! each on `stoke.stream.<invocation>` ([`publish`]), and the caller reads
//! them in order ([`subscribe`], [`Parts`]). Core NATS, not JetStream: the
//! parts are for the caller who is there, and what it is sent is also
//! recorded, buffered, as the invocation's result. A lost part (a gap in
//! the numbers) ends the read with an error rather than a silent hole.
//!
//! When the dispatcher that runs the invocation lives in the caller's own
//! process (`stoke up`), the parts are handed over directly
//! ([`LocalStreams`]), as results are: through nats-server a megabyte's
//! later parts queued ahead of the first on the shared connection and held
//! the first byte back by milliseconds. They still go out on NATS when a
//! caller elsewhere may read the same invocation (a caller-given key reused
//! at another gateway); a reader takes its parts from one source, the one
//! its first part came from, so it never sees a part twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt as _;
use prost::Message as _;
use stoke_core::naming;
use stoke_proto::{ResponsePart, StreamEnd, response_part};
use tokio::sync::mpsc;

/// Publish one part for the caller waiting on its invocation.
pub async fn publish(client: &async_nats::Client, part: &ResponsePart) -> Result<(), async_nats::PublishError> {
    client
        .publish(naming::stream_subject(&part.invocation_id), part.encode_to_vec().into())
        .await
}

/// Listen for `invocation_id`'s parts (before its event is published, so
/// none can be missed): on NATS, and handed over by a dispatcher of this
/// process when `local` is given.
pub async fn subscribe(
    client: &async_nats::Client,
    invocation_id: &str,
    local: Option<LocalReader>,
) -> Result<Parts, async_nats::SubscribeError> {
    Ok(Parts {
        sub: Some(client.subscribe(naming::stream_subject(invocation_id)).await?),
        local,
        next_seq: 0,
        ended: false,
    })
}

/// Readers in this process of streamed responses, by invocation id. Cheap
/// to clone: clones share one table.
#[derive(Clone, Default)]
pub struct LocalStreams {
    inner: Arc<Mutex<Readers>>,
}

#[derive(Default)]
struct Readers {
    next: u64,
    /// By invocation id: each reader's number, whether a reader elsewhere
    /// may read the same invocation too, and where its parts go.
    reading: HashMap<String, Vec<Reading>>,
}

struct Reading {
    number: u64,
    shared: bool,
    tx: mpsc::UnboundedSender<ResponsePart>,
}

/// One caller's read of the parts handed over here; dropping it ends the
/// read. Unbounded, as a NATS subscription's buffer is in effect: the
/// worker caps what one stream may send (`max_stream_bytes`), and a slow
/// client must not stall the dispatcher's stream from its worker.
pub struct LocalReader {
    streams: LocalStreams,
    invocation_id: String,
    number: u64,
    rx: mpsc::UnboundedReceiver<ResponsePart>,
}

impl LocalStreams {
    /// Read `invocation_id`'s parts as a dispatcher here hands them over
    /// (register before its event is published). `shared`: the invocation
    /// id comes from a caller's key, so a caller elsewhere may read it too.
    pub fn read(&self, invocation_id: &str, shared: bool) -> LocalReader {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut table = self.inner.lock().expect("not poisoned");
        table.next += 1;
        let number = table.next;
        table
            .reading
            .entry(invocation_id.to_string())
            .or_default()
            .push(Reading { number, shared, tx });
        LocalReader {
            streams: self.clone(),
            invocation_id: invocation_id.to_string(),
            number,
            rx,
        }
    }

    /// Hand `part` to the readers here; it back when it must also be
    /// published on NATS (nobody here reads it, or somebody elsewhere may).
    pub fn deliver(&self, part: ResponsePart) -> Option<ResponsePart> {
        let table = self.inner.lock().expect("not poisoned");
        let Some(readers) = table.reading.get(&part.invocation_id) else {
            return Some(part);
        };
        if readers.iter().any(|r| r.shared) {
            for r in readers {
                let _ = r.tx.send(part.clone());
            }
            return Some(part);
        }
        let (last, rest) = readers.split_last()?;
        for r in rest {
            let _ = r.tx.send(part.clone());
        }
        let _ = last.tx.send(part);
        None
    }
}

impl Drop for LocalReader {
    fn drop(&mut self) {
        let mut table = self.streams.inner.lock().expect("not poisoned");
        if let Some(list) = table.reading.get_mut(&self.invocation_id) {
            list.retain(|r| r.number != self.number);
            if list.is_empty() {
                table.reading.remove(&self.invocation_id);
            }
        }
    }
}

/// One piece of a streamed response, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    ContentType(String),
    Data(Bytes),
    /// The last: `Ok` when the stream ended well, else the error (its type
    /// and JSON document) that ended it.
    End(Result<(), (String, Bytes)>),
}

/// Reading the stream went wrong: the response is incomplete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartsError {
    #[error("part {got} of the streamed response came where {expected} was due: a part was lost")]
    Gap { expected: u64, got: u64 },
    #[error("a part of the streamed response could not be decoded")]
    Garbled,
    #[error("the streamed response's subscription ended before its last part")]
    Cut,
}

/// The parts of one invocation's streamed response, in order, from NATS
/// or handed over here: from whichever the first came from (a dispatcher
/// here hands a part over before it publishes it, so a part handed over
/// is always there first).
pub struct Parts {
    /// None once the parts come from here.
    sub: Option<async_nats::Subscriber>,
    /// None without a dispatcher here, or once the parts come from NATS.
    local: Option<LocalReader>,
    next_seq: u64,
    ended: bool,
}

impl Parts {
    /// The next part; `Ok(None)` after the end.
    pub async fn next(&mut self) -> Result<Option<Part>, PartsError> {
        if self.ended {
            return Ok(None);
        }
        let part = self.receive().await?;
        let part = self.accept(part)?;
        self.ended = matches!(part, Part::End(_));
        Ok(Some(part))
    }

    /// The next part as it came, from the source the first came from.
    async fn receive(&mut self) -> Result<ResponsePart, PartsError> {
        let (local, sub) = (&mut self.local, &mut self.sub);
        let here = async {
            match local.as_mut() {
                // Senders leave the table only with this reader.
                Some(l) => l.rx.recv().await,
                None => None,
            }
        };
        let nats = async {
            match sub.as_mut() {
                Some(s) => Some(s.next().await),
                None => std::future::pending().await,
            }
        };
        let heard = tokio::select! {
            biased;
            Some(part) = here => Ok(part),
            Some(msg) = nats => Err(msg),
            else => Err(None),
        };
        match heard {
            Ok(part) => {
                // From here on, here only: NATS would repeat them.
                if let Some(mut sub) = self.sub.take() {
                    let _ = sub.unsubscribe().await;
                }
                Ok(part)
            }
            Err(msg) => {
                self.local = None;
                let msg = msg.ok_or(PartsError::Cut)?;
                ResponsePart::decode(msg.payload).map_err(|_| PartsError::Garbled)
            }
        }
    }

    /// Check `part` comes in order, and unwrap it.
    fn accept(&mut self, part: ResponsePart) -> Result<Part, PartsError> {
        if part.seq != self.next_seq {
            return Err(PartsError::Gap {
                expected: self.next_seq,
                got: part.seq,
            });
        }
        self.next_seq += 1;
        Ok(match part.part.ok_or(PartsError::Garbled)? {
            response_part::Part::ContentType(t) => Part::ContentType(t),
            response_part::Part::Data(d) => Part::Data(d.into()),
            response_part::Part::End(StreamEnd { error_type, .. }) if error_type.is_empty() => Part::End(Ok(())),
            response_part::Part::End(StreamEnd { error_type, error }) => Part::End(Err((error_type, error.into()))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(id: &str, seq: u64) -> ResponsePart {
        ResponsePart {
            invocation_id: id.into(),
            seq,
            part: Some(response_part::Part::Data(vec![seq as u8])),
        }
    }

    #[test]
    fn a_part_nobody_here_reads_goes_out_on_nats() {
        let streams = LocalStreams::default();
        let _other = streams.read("b", false);
        assert_eq!(streams.deliver(data("a", 0)), Some(data("a", 0)));
    }

    #[test]
    fn a_part_read_only_here_is_handed_over_and_not_published() {
        let streams = LocalStreams::default();
        let mut reader = streams.read("a", false);
        assert_eq!(streams.deliver(data("a", 0)), None);
        assert_eq!(streams.deliver(data("a", 1)), None);
        assert_eq!(reader.rx.try_recv().unwrap(), data("a", 0));
        assert_eq!(reader.rx.try_recv().unwrap(), data("a", 1));
    }

    #[test]
    fn a_part_others_may_read_is_handed_over_and_published() {
        let streams = LocalStreams::default();
        let mut mine = streams.read("a", false);
        let mut keyed = streams.read("a", true);
        assert_eq!(streams.deliver(data("a", 0)), Some(data("a", 0)));
        assert_eq!(mine.rx.try_recv().unwrap(), data("a", 0));
        assert_eq!(keyed.rx.try_recv().unwrap(), data("a", 0));
    }

    #[test]
    fn a_reader_gone_reads_nothing_more() {
        let streams = LocalStreams::default();
        let first = streams.read("a", false);
        let mut second = streams.read("a", false);
        drop(first);
        assert_eq!(streams.deliver(data("a", 0)), None);
        assert_eq!(second.rx.try_recv().unwrap(), data("a", 0));
        drop(second);
        assert!(streams.inner.lock().unwrap().reading.is_empty());
        assert_eq!(streams.deliver(data("a", 1)), Some(data("a", 1)));
    }
}
