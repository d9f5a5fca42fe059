//! Results: their wire form ([`completion_info`], [`view_info`]), their
//! announcement on `stoke.result.<id>` ([`announce`], [`subscribe`]), and
//! their hand-over inside one process.
//!
//! A synchronous caller waits for its invocation's result on
//! `stoke.result.<id>`, which whichever dispatcher ran it publishes. When
//! that dispatcher lives in the caller's own process (`stoke up`, or the
//! admin API's invoke in a `stoke dispatcher`), the round trip through
//! nats-server is a detour: [`LocalResults`] lets the dispatcher hand the
//! result straight to the waiting caller first. The NATS announcement still
//! goes out whenever a caller in another process may wait for the same
//! invocation (a caller-given idempotency key reused at another gateway);
//! a caller here whose event another process's dispatcher ran hears only
//! that. The same hand-over carries streamed responses' parts
//! ([`LocalResults::streams`], `crate::stream`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use stoke_core::naming;
use stoke_proto::{ErrorInfo, InvocationInfo, InvocationStatus};
use stoke_store::{Completion, InvocationView, Status};
use tokio::sync::oneshot;

/// Announce `invocation_id`'s result `info` on NATS to callers anywhere
/// waiting for it (best effort: the store is the truth).
pub async fn announce(
    client: &async_nats::Client,
    invocation_id: &str,
    info: &InvocationInfo,
) -> Result<(), async_nats::PublishError> {
    let subject = naming::result_subject(invocation_id);
    client.publish(subject, info.encode_to_vec().into()).await
}

/// Listen for `invocation_id`'s announcement (subscribe before the event
/// is published, so the announcement cannot be missed).
pub async fn subscribe(
    client: &async_nats::Client,
    invocation_id: &str,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    client.subscribe(naming::result_subject(invocation_id)).await
}

/// Callers of this process waiting for results, by invocation id, and
/// reading streamed responses. Cheap to clone: clones share one table.
#[derive(Clone, Default)]
pub struct LocalResults {
    inner: Arc<Mutex<Table>>,
    streams: crate::stream::LocalStreams,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// By invocation id: each waiter's number and where its result goes.
    waiting: HashMap<String, Vec<(u64, oneshot::Sender<InvocationInfo>)>>,
}

/// One caller's wait; leaving it (dropping it) stops the wait.
pub struct Waiter {
    results: LocalResults,
    invocation_id: String,
    number: u64,
    rx: oneshot::Receiver<InvocationInfo>,
}

impl LocalResults {
    /// Wait for `invocation_id`'s result (register before the event is
    /// published, so a quick result cannot be missed).
    pub fn wait_for(&self, invocation_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let mut table = self.inner.lock().expect("not poisoned");
        table.next += 1;
        let number = table.next;
        table
            .waiting
            .entry(invocation_id.to_string())
            .or_default()
            .push((number, tx));
        Waiter {
            results: self.clone(),
            invocation_id: invocation_id.to_string(),
            number,
            rx,
        }
    }

    /// Hand `info` to every caller here waiting for `invocation_id`; how
    /// many there were.
    pub fn deliver(&self, invocation_id: &str, info: &InvocationInfo) -> usize {
        let waiters = self.inner.lock().expect("not poisoned").waiting.remove(invocation_id);
        waiters
            .into_iter()
            .flatten()
            .filter_map(|(_, tx)| tx.send(info.clone()).ok())
            .count()
    }

    /// Callers here reading streamed responses as they come.
    pub fn streams(&self) -> &crate::stream::LocalStreams {
        &self.streams
    }

    /// Callers waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.inner
            .lock()
            .expect("not poisoned")
            .waiting
            .values()
            .map(Vec::len)
            .sum()
    }
}

impl Waiter {
    /// The result, once a dispatcher of this process delivers it; pending
    /// for ever otherwise (select it against the NATS subscription).
    pub async fn result(&mut self) -> InvocationInfo {
        match (&mut self.rx).await {
            Ok(info) => info,
            // Only dropping the table's sender, which `deliver` never does
            // without sending: wait on whatever else the caller waits for.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut table = self.results.inner.lock().expect("not poisoned");
        if let Some(list) = table.waiting.get_mut(&self.invocation_id) {
            list.retain(|(n, _)| *n != self.number);
            if list.is_empty() {
                table.waiting.remove(&self.invocation_id);
            }
        }
    }
}

/// The wire form of a stored invocation status.
pub fn proto_status(s: Status) -> InvocationStatus {
    match s {
        Status::Queued => InvocationStatus::Queued,
        Status::Running => InvocationStatus::Running,
        Status::Succeeded => InvocationStatus::Succeeded,
        Status::Failed => InvocationStatus::Failed,
        Status::TimedOut => InvocationStatus::TimedOut,
        Status::DeadLettered => InvocationStatus::DeadLettered,
    }
}

/// The wire form of a completion (what the dispatcher announces and the
/// admin API returns). `attempts` overrides the count kept in the row.
pub fn completion_info(c: &Completion, attempts: Option<u32>) -> InvocationInfo {
    InvocationInfo {
        invocation_id: c.invocation_id.clone(),
        function: c.function.clone(),
        version: c.version,
        status: proto_status(c.status) as i32,
        result: c.result.clone().unwrap_or_default(),
        error: c.error.as_ref().map(|e| ErrorInfo {
            error_type: e.error_type.clone(),
            error_message: e.error_message.clone(),
            raw: e.raw.clone().unwrap_or_default(),
        }),
        attempts: attempts.unwrap_or(c.attempts),
        idempotency_key: c.idempotency_key.clone(),
        trigger: c.trigger.clone(),
        created_unix_ms: c.created_ms,
        completed_unix_ms: c.completed_ms,
        attempt_history: Vec::new(),
    }
}

pub fn view_info(v: &InvocationView) -> InvocationInfo {
    match &v.completion {
        Some(c) => completion_info(c, Some(v.attempts.max(c.attempts))),
        None => InvocationInfo {
            invocation_id: v.invocation_id.clone(),
            function: v.function.clone(),
            version: v.dead_letter.as_ref().map_or(0, |d| d.version),
            error: v
                .dead_letter
                .as_ref()
                .and_then(|d| d.error.as_ref())
                .map(|e| ErrorInfo {
                    error_type: e.error_type.clone(),
                    error_message: e.error_message.clone(),
                    raw: Vec::new(),
                }),
            completed_unix_ms: v.dead_letter.as_ref().map_or(0, |d| d.dead_ms),
            status: proto_status(v.status) as i32,
            attempts: v.attempts,
            idempotency_key: v.idempotency_key.clone(),
            trigger: v.trigger.clone(),
            created_unix_ms: v.created_ms,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> InvocationInfo {
        InvocationInfo {
            invocation_id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_waiter_of_an_id_gets_its_result_and_only_its_own() {
        let results = LocalResults::default();
        let (mut a, mut b, c) = (results.wait_for("x"), results.wait_for("x"), results.wait_for("y"));
        assert_eq!(results.waiting(), 3);
        assert_eq!(results.deliver("x", &info("x")), 2);
        assert_eq!(a.result().await.invocation_id, "x");
        assert_eq!(b.result().await.invocation_id, "x");
        assert_eq!(results.deliver("x", &info("x")), 0, "delivered once");
        assert_eq!(results.waiting(), 1);
        drop(c);
        assert_eq!(
            results.waiting(),
            0,
            "a caller that stops waiting leaves nothing behind"
        );
        assert_eq!(results.deliver("y", &info("y")), 0);
    }

    #[tokio::test]
    async fn a_waiter_without_a_result_stays_pending() {
        let results = LocalResults::default();
        let mut w = results.wait_for("x");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), w.result()).await;
        assert!(waited.is_err());
        drop(w);
        assert_eq!(results.waiting(), 0);
    }
}
