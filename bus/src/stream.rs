//! Streamed responses. A function whose caller waits on its response as it
//! comes (a function URL in stream mode) streams it to the Runtime API; the
//! worker forwards each piece as a `ResponsePart` (the content type first,
//! then the data, then the end, numbered from 0), the dispatcher publishes
//! each on `stoke.stream.<invocation>` ([`publish`]), and the caller reads
//! them in order ([`subscribe`], [`Parts`]). Core NATS, not JetStream: the
//! parts are for the caller who is there, and what it is sent is also
//! recorded, buffered, as the invocation's result. A lost part (a gap in
//! the numbers) ends the read with an error rather than a silent hole.

use bytes::Bytes;
use futures::StreamExt as _;
use prost::Message as _;
use stoke_core::naming;
use stoke_proto::{ResponsePart, StreamEnd, response_part};

/// Publish one part for the caller waiting on its invocation.
pub async fn publish(client: &async_nats::Client, part: &ResponsePart) -> Result<(), async_nats::PublishError> {
    client
        .publish(naming::stream_subject(&part.invocation_id), part.encode_to_vec().into())
        .await
}

/// Listen for `invocation_id`'s parts (before its event is published, so
/// none can be missed).
pub async fn subscribe(client: &async_nats::Client, invocation_id: &str) -> Result<Parts, async_nats::SubscribeError> {
    Ok(Parts {
        sub: client.subscribe(naming::stream_subject(invocation_id)).await?,
        next_seq: 0,
        ended: false,
    })
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

/// The parts of one invocation's streamed response, in order.
pub struct Parts {
    sub: async_nats::Subscriber,
    next_seq: u64,
    ended: bool,
}

impl Parts {
    /// The next part; `Ok(None)` after the end.
    pub async fn next(&mut self) -> Result<Option<Part>, PartsError> {
        if self.ended {
            return Ok(None);
        }
        let msg = self.sub.next().await.ok_or(PartsError::Cut)?;
        let part = ResponsePart::decode(msg.payload).map_err(|_| PartsError::Garbled)?;
        let part = self.accept(part)?;
        self.ended = matches!(part, Part::End(_));
        Ok(Some(part))
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
