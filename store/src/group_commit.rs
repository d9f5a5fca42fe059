//! Group commit of completions: [`crate::Store::record_completion`] calls
//! made at about the same time are written together, in one transaction.
//!
//! Every completion costs a transaction — on SQLite a WAL commit that
//! rewrites the same few B-tree pages (attempts, completions and their
//! indexes) for each row, on PostgreSQL a round trip and a WAL flush. One
//! writer task takes whatever calls are queued when it is free (at most
//! [`MAX_BATCH`]) and writes them in one transaction, so under load the
//! cost per completion falls with the batch. A call that finds nobody
//! writing and nothing queued writes itself, in its own task: a lone
//! completion does not pay the two hops to the writer task and back (on
//! SQLite, calls 0.5 ms apart: p50 172–211 → 141 µs), and calls arriving
//! while it writes queue for the writer task as before. (The SQL writers
//! hold one connection behind a lock, so the two never write at once.)
//!
//! Meaning is unchanged: each call still gets its own answer (recorded, or
//! the duplicate that holds the key), its attempt and completion still land
//! together, and nothing is answered before the transaction commits. A
//! batch that fails for a reason retrying will not fix is written again one
//! call at a time, so one bad row fails only its own call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use stoke_core::Retryable as _;
use tokio::sync::{mpsc, oneshot};

use crate::{AttemptRecord, Completion, CompletionWrite, Result, StoreError};

/// Most completions written in one transaction.
pub(crate) const MAX_BATCH: usize = 64;

/// One queued call.
pub(crate) type Item = (AttemptRecord, Completion);

/// Writes a batch in one transaction: one answer per item, in order, or the
/// error that rolled the transaction back.
pub(crate) type Writer = Arc<dyn Fn(Arc<[Item]>) -> BoxFuture<'static, Result<Vec<CompletionWrite>>> + Send + Sync>;

struct Pending {
    item: Item,
    reply: oneshot::Sender<Result<CompletionWrite>>,
    /// Counted in [`GroupCommit::busy`] until answered or dropped unwritten.
    counted: Done,
}

pub(crate) struct GroupCommit {
    write: Writer,
    /// The writer task's queue, started on first use in the caller's
    /// runtime (and again if that runtime has gone).
    queue: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
    /// Calls queued for the writer task or in its batch, plus one while a
    /// caller writes its own.
    busy: Arc<AtomicUsize>,
}

/// One less call in [`GroupCommit::busy`] when dropped (also when the
/// caller writing its own is cancelled).
struct Done(Arc<AtomicUsize>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GroupCommit {
    pub fn new(write: Writer) -> GroupCommit {
        GroupCommit {
            write,
            queue: Mutex::new(None),
            busy: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Write `item` with whatever else is queued; its own answer.
    pub async fn submit(&self, item: Item) -> Result<CompletionWrite> {
        if self
            .busy
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let _done = Done(self.busy.clone());
            return write_batch(&self.write, Arc::from([item]))
                .await
                .pop()
                .unwrap_or_else(|| Err(StoreError::invalid("completion writer gave no answer")));
        }
        let (reply, answer) = oneshot::channel();
        self.busy.fetch_add(1, Ordering::AcqRel);
        let mut pending = Pending {
            item,
            reply,
            counted: Done(self.busy.clone()),
        };
        for _ in 0..2 {
            let queue = self.queue();
            match queue.send(pending) {
                Ok(()) => {
                    return answer
                        .await
                        .unwrap_or_else(|_| Err(StoreError::unavailable("completion writer stopped")));
                }
                // The runtime that ran the writer has gone: start another.
                Err(mpsc::error::SendError(back)) => {
                    pending = back;
                    *self.queue.lock().expect("not poisoned") = None;
                }
            }
        }
        Err(StoreError::unavailable("completion writer cannot start"))
    }

    fn queue(&self) -> mpsc::UnboundedSender<Pending> {
        let mut queue = self.queue.lock().expect("not poisoned");
        if let Some(q) = queue.as_ref().filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(self.write.clone(), rx));
        *queue = Some(tx.clone());
        tx
    }
}

/// The writer task: take what is queued, write it, answer; until every
/// sender is gone.
async fn run(write: Writer, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, replies): (Vec<Item>, Vec<_>) = batch.drain(..).map(|p| (p.item, (p.reply, p.counted))).unzip();
        let answers = write_batch(&write, items.into()).await;
        for ((reply, _counted), answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// One answer per item: the batch's, or — when the batch failed for good —
/// each item's own, written alone.
async fn write_batch(write: &Writer, items: Arc<[Item]>) -> Vec<Result<CompletionWrite>> {
    let n = items.len();
    match write(items.clone()).await {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(e) if e.is_retryable() => (0..n).map(|_| Err(StoreError::unavailable(e.to_string()))).collect(),
        Err(e) => match n {
            1 => vec![Err(e)],
            _ => {
                tracing::warn!(error = %e, items = n, "completion batch refused; writing each alone");
                let mut answers = Vec::with_capacity(n);
                for item in items.iter() {
                    answers.push(write(Arc::from([item.clone()])).await.and_then(|mut a| {
                        a.pop()
                            .ok_or_else(|| StoreError::invalid("completion writer gave no answer"))
                    }));
                }
                answers
            }
        },
    }
}

#[cfg(test)]
mod tests {
    //! The batching logic over a writer that keeps its batches in memory;
    //! the SQL writers are covered by the store contract (`tests/contract.rs`).

    use super::*;
    use crate::{AttemptOutcome, Status};

    fn item(id: &str) -> Item {
        let attempt = AttemptRecord {
            invocation_id: id.into(),
            function: "f".into(),
            version: 1,
            idempotency_key: id.into(),
            attempt: 1,
            epoch: 0,
            trigger: "nats".into(),
            worker: "w".into(),
            started_ms: 0,
            ended_ms: 0,
            duration_us: 0,
            memory_mb: 128,
            max_memory_used_kb: 0,
            cold: false,
            init_duration_us: 0,
            outcome: AttemptOutcome::Success,
            error_type: None,
            error_message: None,
        };
        let completion = Completion {
            function: "f".into(),
            idempotency_key: id.into(),
            invocation_id: id.into(),
            version: 1,
            status: Status::Succeeded,
            result: None,
            error: None,
            attempts: 1,
            trigger: "nats".into(),
            created_ms: 0,
            completed_ms: 0,
            payload_digest: None,
        };
        (attempt, completion)
    }

    /// A writer that notes each batch's ids, yields as a real write would
    /// (so calls made meanwhile queue), and refuses a batch holding "bad"
    /// (for good) or "busy" (retryably).
    fn noting(batches: Arc<Mutex<Vec<Vec<String>>>>) -> Writer {
        Arc::new(move |items: Arc<[Item]>| {
            let batches = batches.clone();
            Box::pin(async move {
                let ids: Vec<String> = items.iter().map(|(a, _)| a.invocation_id.clone()).collect();
                batches.lock().unwrap().push(ids.clone());
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                if ids.iter().any(|id| id == "bad") {
                    return Err(StoreError::invalid("bad row"));
                }
                if ids.iter().any(|id| id == "busy") {
                    return Err(StoreError::unavailable("locked"));
                }
                Ok(ids.iter().map(|_| CompletionWrite::Recorded).collect())
            })
        })
    }

    async fn submit_all(commits: &Arc<GroupCommit>, ids: &[&str]) -> Vec<Result<CompletionWrite>> {
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (commits, id) = (commits.clone(), id.to_string());
                tokio::spawn(async move { commits.submit(item(&id)).await })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn calls_made_while_one_writes_share_one_batch() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let commits = Arc::new(GroupCommit::new(noting(batches.clone())));
        let ids: Vec<String> = (0..10).map(|i| format!("i{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let answers = submit_all(&commits, &refs).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(CompletionWrite::Recorded))));
        let seen = batches.lock().unwrap().clone();
        assert_eq!(
            seen,
            [ids[..1].to_vec(), ids[1..].to_vec()],
            "the first alone, then one batch, in order"
        );
        assert_eq!(commits.busy.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_lone_call_is_written_by_its_caller() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let commits = GroupCommit::new(noting(batches.clone()));
        for id in ["a", "b"] {
            assert!(matches!(commits.submit(item(id)).await, Ok(CompletionWrite::Recorded)));
        }
        assert_eq!(*batches.lock().unwrap(), [vec!["a"], vec!["b"]]);
        assert!(commits.queue.lock().unwrap().is_none(), "no writer task was needed");
        // A refused lone write is its caller's error, and leaves nothing busy.
        assert!(commits.submit(item("bad")).await.is_err());
        assert_eq!(commits.busy.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_refused_batch_is_written_again_item_by_item() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let commits = Arc::new(GroupCommit::new(noting(batches.clone())));
        // "first" writes alone; the three made meanwhile share a batch.
        let answers = submit_all(&commits, &["first", "a", "bad", "c"]).await;
        assert!(matches!(answers[1], Ok(CompletionWrite::Recorded)));
        assert!(matches!(&answers[2], Err(StoreError::Invalid(m)) if m.to_string() == "bad row"));
        assert!(matches!(answers[3], Ok(CompletionWrite::Recorded)));
        let seen = batches.lock().unwrap().clone();
        assert_eq!(
            seen,
            [vec!["first"], vec!["a", "bad", "c"], vec!["a"], vec!["bad"], vec!["c"]]
        );
    }

    #[tokio::test]
    async fn a_busy_store_fails_the_whole_batch_retryably() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let commits = Arc::new(GroupCommit::new(noting(batches.clone())));
        let answers = submit_all(&commits, &["first", "a", "busy"]).await;
        for a in &answers[1..] {
            assert!(a.as_ref().is_err_and(|e| e.is_retryable()), "{a:?}");
        }
        assert_eq!(batches.lock().unwrap().len(), 2, "not split: the callers retry");
    }

    #[test]
    fn a_writer_outlives_the_runtime_that_started_it() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let commits = Arc::new(GroupCommit::new(noting(batches.clone())));
        for round in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            // The second call is made while the first writes: it goes to
            // the writer task, started in this round's runtime.
            let (first, second) = rt.block_on(async {
                tokio::join!(
                    commits.submit(item(&format!("r{round}a"))),
                    commits.submit(item(&format!("r{round}b")))
                )
            });
            for answer in [first, second] {
                assert!(
                    matches!(answer, Ok(CompletionWrite::Recorded)),
                    "round {round}: {answer:?}"
                );
            }
        }
        assert_eq!(batches.lock().unwrap().len(), 4);
    }
}
