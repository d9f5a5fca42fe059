//! Exec mode (`mode = "exec"` in the manifest): one process per event, the
//! CGI model, in the same sandbox as a runtime-mode function. The event is
//! written to the process's stdin (then closed), the response is what it
//! writes to stdout, exit status 0 means success; stderr goes to the log.
//! Request context comes in the environment ([`event_env`]). A non-zero
//! exit is a function error (`Function.ExitStatus`) carrying the last lines
//! of stderr; more than the response cap on stdout ends the process.

use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Event, Outcome, Sandbox, Timing};

/// The variables that carry one event's context to an exec-mode process.
pub fn event_env(ev: &Event) -> Vec<(String, String)> {
    vec![
        ("STOKE_REQUEST_ID".into(), ev.request_id.clone()),
        ("STOKE_DEADLINE_MS".into(), ev.deadline_unix_ms.to_string()),
        ("STOKE_FUNCTION_ARN".into(), ev.function_arn.clone()),
        ("STOKE_ATTEMPT".into(), ev.attempt.to_string()),
        ("STOKE_IDEMPOTENCY_KEY".into(), ev.idempotency_key.clone()),
        ("_X_AMZN_TRACE_ID".into(), ev.trace_id.clone()),
        ("TRACEPARENT".into(), ev.traceparent.clone()),
    ]
}

/// What the reader of stdout found.
enum Stdout {
    Complete(Vec<u8>),
    TooLarge(usize),
}

impl Sandbox {
    /// Run the one event of an exec-mode sandbox (started with
    /// `exec_env` and the event's output tag): feed it, wait for the exit or
    /// the deadline, and read the answer. The sandbox is spent afterwards.
    pub async fn exec(&mut self, ev: Event) -> (Outcome, Timing) {
        let ended = self.exec_event(ev).await;
        self.end_output().await;
        ended
    }

    async fn exec_event(&mut self, ev: Event) -> (Outcome, Timing) {
        let sent = Instant::now();
        self.served += 1;
        let timing = |sent: Instant| Timing {
            duration: sent.elapsed(),
            init: None,
        };
        let (Some(mut stdin), Some(mut stdout)) = (self.stdin.take(), self.stdout.take()) else {
            let message = "not an exec-mode sandbox, or already used".to_string();
            return (Outcome::Crashed { message }, timing(sent));
        };
        // A process that never reads stdin must not block the writer: it
        // is a task of its own, and EPIPE just ends it.
        let payload: Bytes = ev.payload;
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
        let cap = self.max_response;
        let mut reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut limited = (&mut stdout).take(cap as u64 + 1);
            if limited.read_to_end(&mut out).await.is_err() || out.len() <= cap {
                return Stdout::Complete(out);
            }
            Stdout::TooLarge(out.len())
        });
        let mut exited = self.exited.clone();
        let mut read = None;
        let outcome = tokio::select! {
            _ = exited.wait_for(Option::is_some) => None,
            r = &mut reader => match r {
                Ok(Stdout::TooLarge(size)) => Some(Outcome::ResponseTooLarge { size }),
                // stdout closed before the exit: wait for the exit below.
                r => {
                    read = Some(r.unwrap_or(Stdout::Complete(Vec::new())));
                    None
                }
            },
            _ = tokio::time::sleep_until(ev.deadline.into()) => Some(Outcome::Timeout),
        };
        writer.abort();
        if let Some(early) = outcome {
            // Billed up to the outcome; answered once the process is gone.
            let took = timing(sent);
            self.kill_and_wait().await;
            return (early, took);
        }
        // Exited (or stdout closed): whatever is left in the sandbox goes
        // too, which closes any copy of stdout a child still held.
        let ended = tokio::select! {
            e = exited.wait_for(Option::is_some) => e.ok().and_then(|e| e.clone()),
            _ = tokio::time::sleep_until(ev.deadline.into()) => None,
        };
        let Some(ended) = ended else {
            let took = timing(sent);
            self.kill_and_wait().await;
            return (Outcome::Timeout, took);
        };
        self.kill();
        let duration = timing(sent);
        // Let the log pumps reach the end of stderr for the tail below.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            futures::future::join_all(self.tasks.iter_mut()),
        )
        .await;
        let read = match read {
            Some(r) => r,
            None => match tokio::time::timeout(std::time::Duration::from_secs(1), reader).await {
                Ok(Ok(r)) => r,
                _ => Stdout::Complete(Vec::new()),
            },
        };
        let out = match read {
            Stdout::Complete(out) => out,
            Stdout::TooLarge(size) => return (Outcome::ResponseTooLarge { size }, duration),
        };
        if self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0) {
            let message = format!(
                "RequestId: {} Error: {}: out of memory (the function's memory limit is {} MB)\n{}",
                ev.request_id,
                ended.desc,
                self.memory_mb,
                self.tail_text()
            );
            return (Outcome::OutOfMemory { message }, duration);
        }
        if ended.success {
            return (Outcome::Response(out.into()), duration);
        }
        let body = serde_json::json!({
            "errorType": "Function.ExitStatus",
            "errorMessage": format!("{}. stderr:\n{}", ended.desc, self.tail_text()),
        });
        (
            Outcome::FunctionError {
                error_type: "Function.ExitStatus".into(),
                body: serde_json::to_vec(&body).unwrap_or_default().into(),
            },
            duration,
        )
    }
}
