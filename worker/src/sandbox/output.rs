//! A sandbox's output: the pumps reading its stdout and stderr, the log
//! budget of each invocation, and the chunks of tagged lines shipped to the
//! dispatcher (`stoke logs`).
//!
//! Both pumps of a sandbox append to one buffer, so a chunk holds stdout and
//! stderr in the order the worker read them. The buffer carries the tag of
//! the invocation the sandbox is running (set by `begin`, cleared by
//! `finish`); a chunk goes out every [`FLUSH_EVERY`] while lines come, at
//! [`FLUSH_BYTES`], and when the tag changes. At the end of an invocation
//! each pump is asked to read what is in its pipe *now* (`FIONREAD`), so the
//! lines a function wrote before it answered are in that invocation's last
//! chunk, which the worker sends before the result.
//!
//! A line costs one timestamp, one short lock and a `Vec` push; the gRPC
//! message is per chunk, never per line.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::{FutureExt as _, StreamExt as _};
use stoke_proto::{LogChunk, LogStream, OutputLine, WorkerMessage, worker_message};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, FramedRead};

/// Longest line kept; the rest of a longer one is dropped.
pub const MAX_LINE: usize = 16 * 1024;
/// Lines kept for crash reports.
const TAIL_LINES: usize = 40;
/// A chunk waits at most this long for more lines.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A chunk goes out once its lines hold this many bytes.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// How long the end of an invocation waits for the pumps to read what the
/// function wrote.
const DRAIN_WITHIN: Duration = Duration::from_millis(500);

/// The invocation a sandbox is running, as its lines are labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub invocation_id: String,
    pub attempt: u32,
}

/// Where chunks go: the dispatcher stream the worker is attached to (none
/// while it is not). Shared by every sandbox of a worker.
#[derive(Default)]
pub struct Shipper {
    tx: Mutex<Option<mpsc::Sender<WorkerMessage>>>,
    /// Chunks dropped: no stream, or its queue was full.
    pub dropped: AtomicU64,
}

impl Shipper {
    pub fn attach(&self, tx: mpsc::Sender<WorkerMessage>) {
        *self.tx.lock().expect("not poisoned") = Some(tx);
    }

    pub fn detach(&self) {
        self.tx.lock().expect("not poisoned").take();
    }

    /// The stream to the dispatcher, for what must not be dropped (a
    /// streamed response's parts, which wait their turn); None while
    /// detached.
    pub fn stream(&self) -> Option<mpsc::Sender<WorkerMessage>> {
        self.tx.lock().expect("not poisoned").clone()
    }

    /// Queue a chunk on the stream without waiting: output is best effort
    /// and must never hold up a function (or the results behind it).
    fn send(&self, chunk: LogChunk) {
        let msg = WorkerMessage {
            msg: Some(worker_message::Msg::Logs(chunk)),
        };
        let sent = match &*self.tx.lock().expect("not poisoned") {
            Some(tx) => tx.try_send(msg).is_ok(),
            None => false,
        };
        if !sent && self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000) {
            tracing::warn!("function output dropped: no dispatcher stream, or its queue is full");
        }
    }
}

/// How one sandbox's output is handled.
pub struct OutputSpec {
    /// Function name and version, for the worker's log.
    pub label: String,
    pub function: String,
    pub sandbox: u64,
    /// Bytes of output per invocation that are kept.
    pub cap: u64,
    /// Also write every line to the worker's own log (`stoke::function`).
    pub to_worker_log: bool,
    /// Where chunks go; `None`: nowhere (only the worker's log).
    pub shipper: Option<Arc<Shipper>>,
    /// The invocation the sandbox starts for (its start-up output is that
    /// invocation's); `None` for a provisioned one.
    pub tag: Option<Tag>,
}

#[derive(Default)]
struct Buffer {
    tag: Option<Tag>,
    lines: Vec<OutputLine>,
    bytes: usize,
    since: Option<Instant>,
}

/// Shared by the pumps of one sandbox and the sandbox itself.
pub struct Output {
    spec: OutputSpec,
    budget: LogBudget,
    buffer: Mutex<Buffer>,
    tail: Mutex<VecDeque<String>>,
}

impl Output {
    pub fn new(mut spec: OutputSpec) -> Arc<Output> {
        let tag = spec.tag.take();
        Arc::new(Output {
            budget: LogBudget::new(spec.cap),
            spec,
            buffer: Mutex::new(Buffer {
                tag,
                ..Default::default()
            }),
            tail: Mutex::new(VecDeque::new()),
        })
    }

    /// Label what comes next with `tag` (what was read before goes out with
    /// the previous label), and give it a full budget.
    pub fn begin(&self, tag: Tag) {
        self.flag_dropped();
        let mut b = self.buffer.lock().expect("not poisoned");
        if b.tag.as_ref() != Some(&tag) {
            self.flush_locked(&mut b);
            b.tag = Some(tag);
        }
    }

    /// Send what is buffered and stop labelling (call after `drain`).
    pub fn finish(&self) {
        let mut b = self.buffer.lock().expect("not poisoned");
        self.flush_locked(&mut b);
        b.tag = None;
        drop(b);
        self.flag_dropped();
    }

    /// The last lines (up to 10), for crash reports.
    pub fn tail_text(&self) -> String {
        let tail = self.tail.lock().expect("not poisoned");
        let lines: Vec<&str> = tail.iter().rev().take(10).rev().map(String::as_str).collect();
        lines.join("\n")
    }

    /// Say in the worker's log how much output the invocation had over the
    /// cap, and start a full budget.
    fn flag_dropped(&self) {
        let over = self.budget.reset();
        if over > 0 {
            tracing::warn!(
                target: "stoke::function",
                function = %self.spec.label,
                sandbox = self.spec.sandbox,
                dropped_bytes = over,
                cap = self.budget.cap,
                "[output over the log cap: the rest was dropped]"
            );
        }
    }

    fn line(&self, stream: LogStream, line: Line) {
        // Counted before it is turned into text: a flood over the cap costs
        // a newline search per line, nothing more.
        match self.budget.take(line.bytes.len() as u64) {
            Budget::Within => {}
            Budget::JustOver => {
                let marker = format!(
                    "[output over the log cap of {} bytes per invocation: the rest of it is dropped]",
                    self.budget.cap
                );
                return self.push(stream, marker);
            }
            Budget::Over => return,
        }
        let text = line.text();
        if self.spec.to_worker_log {
            let invocation = self.buffer.lock().expect("not poisoned").tag.clone();
            tracing::info!(
                target: "stoke::function",
                function = %self.spec.label,
                sandbox = self.spec.sandbox,
                invocation = invocation.as_ref().map_or("", |t| t.invocation_id.as_str()),
                "{text}"
            );
        }
        {
            let mut t = self.tail.lock().expect("not poisoned");
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(text.clone());
        }
        self.push(stream, text);
    }

    fn push(&self, stream: LogStream, text: String) {
        let mut b = self.buffer.lock().expect("not poisoned");
        b.bytes += text.len() + 16;
        b.lines.push(OutputLine {
            unix_ms: stoke_core::now_ms(),
            stream: stream as i32,
            text,
        });
        b.since.get_or_insert_with(Instant::now);
        if b.bytes >= FLUSH_BYTES {
            self.flush_locked(&mut b);
        }
    }

    /// When the buffered lines are due to go out.
    fn deadline(&self) -> Option<Instant> {
        self.buffer.lock().expect("not poisoned").since.map(|t| t + FLUSH_EVERY)
    }

    fn flush_if_due(&self) {
        let mut b = self.buffer.lock().expect("not poisoned");
        if b.since.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) {
            self.flush_locked(&mut b);
        }
    }

    /// Ship the buffer (under its lock, so chunks leave in order).
    fn flush_locked(&self, b: &mut Buffer) {
        b.since = None;
        b.bytes = 0;
        if b.lines.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut b.lines);
        let Some(shipper) = &self.spec.shipper else { return };
        let (invocation_id, attempt) = b
            .tag
            .as_ref()
            .map_or((String::new(), 0), |t| (t.invocation_id.clone(), t.attempt));
        shipper.send(LogChunk {
            function: self.spec.function.clone(),
            invocation_id,
            attempt,
            lines,
        });
    }
}

/// How much of one invocation's output is kept.
struct LogBudget {
    cap: u64,
    used: AtomicU64,
}

enum Budget {
    Within,
    /// This line crossed the cap (exactly one line does per invocation).
    JustOver,
    Over,
}

impl LogBudget {
    fn new(cap: u64) -> LogBudget {
        LogBudget {
            cap,
            used: AtomicU64::new(0),
        }
    }

    /// A new invocation starts with the whole budget; returns how many
    /// bytes the previous one had over it.
    fn reset(&self) -> u64 {
        self.used.swap(0, Ordering::Relaxed).saturating_sub(self.cap)
    }

    fn take(&self, n: u64) -> Budget {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        match (before + n <= self.cap, before <= self.cap) {
            (true, _) => Budget::Within,
            (false, true) => Budget::JustOver,
            (false, false) => Budget::Over,
        }
    }
}

/// Asks a pump to read everything its pipe holds now, and answers when done.
pub type Drain = mpsc::UnboundedSender<oneshot::Sender<()>>;

/// Ask every pump to read what its pipe holds now (so the lines written
/// before this call are buffered), waiting at most [`DRAIN_WITHIN`].
pub async fn drain(pumps: &[Drain]) {
    let answers: Vec<_> = pumps
        .iter()
        .filter_map(|p| {
            let (tx, rx) = oneshot::channel();
            // A pump that ended (end of file) has read everything already.
            p.send(tx).ok().map(|()| rx)
        })
        .collect();
    let _ = tokio::time::timeout(DRAIN_WITHIN, futures::future::join_all(answers)).await;
}

/// Read one of the function's output pipes into `output` until it closes:
/// up to the invocation's budget (the rest is read and dropped), lines cut
/// at [`MAX_LINE`], invalid UTF-8 replaced. Never stops reading early, so a
/// function can never block on a full pipe.
pub async fn pump(
    pipe: tokio::net::unix::pipe::Receiver,
    stream: LogStream,
    output: Arc<Output>,
    mut drains: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut lines = FramedRead::new(Counted { inner: pipe, read: 0 }, Lines::default());
    let mut drains_open = true;
    loop {
        let deadline = output.deadline();
        tokio::select! {
            biased;
            asked = drains.recv(), if drains_open => match asked {
                Some(done) => {
                    drain_now(&mut lines, stream, &output).await;
                    let _ = done.send(());
                }
                None => drains_open = false,
            },
            line = lines.next() => match line {
                Some(Ok(line)) => {
                    output.line(stream, line);
                    // Lines already read go without another round of the
                    // select (a flood is a million of them).
                    if !take_ready(&mut lines, stream, &output) {
                        break;
                    }
                }
                Some(Err(_)) | None => break,
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                output.flush_if_due();
            }
        }
    }
    output.flush_if_due();
}

/// Handle up to 1024 lines that need no waiting; false at the end of the
/// pipe.
fn take_ready(lines: &mut FramedRead<Counted, Lines>, stream: LogStream, output: &Output) -> bool {
    for _ in 0..1024 {
        match lines.next().now_or_never() {
            Some(Some(Ok(line))) => output.line(stream, line),
            Some(_) => return false,
            None => break,
        }
    }
    true
}

/// Read the bytes the pipe holds at this moment (and the complete lines
/// already buffered); a partial last line is taken as a line of its own.
async fn drain_now(lines: &mut FramedRead<Counted, Lines>, stream: LogStream, output: &Output) {
    let target = lines.get_ref().read + pending_bytes(&lines.get_ref().inner);
    let until = tokio::time::Instant::now() + DRAIN_WITHIN;
    loop {
        // A line, or nothing more to wait for once the target is read.
        let next = futures::future::poll_fn(|cx| match lines.poll_next_unpin(cx) {
            Poll::Ready(l) => Poll::Ready(Some(l)),
            Poll::Pending if lines.get_ref().read >= target => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        match tokio::time::timeout_at(until, next).await {
            Ok(Some(Some(Ok(line)))) => output.line(stream, line),
            _ => break,
        }
    }
    while let Some(Some(Ok(line))) = lines.next().now_or_never() {
        output.line(stream, line);
    }
    // A partial last line (no newline yet) is this invocation's too.
    if !lines.read_buffer().is_empty() && !lines.decoder().discarding {
        let bytes = lines.read_buffer_mut().split();
        lines.decoder_mut().searched = 0;
        output.line(
            stream,
            Line {
                bytes,
                truncated: false,
            },
        );
    }
}

/// Bytes waiting in a pipe.
#[allow(unsafe_code)]
fn pending_bytes(fd: &impl AsFd) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the pointer, which points
    // at `n` for the duration of the call; the fd is borrowed, hence open.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::FIONREAD, &mut n) };
    if r < 0 { 0 } else { n.max(0) as u64 }
}

/// A pipe that counts the bytes read from it.
struct Counted {
    inner: tokio::net::unix::pipe::Receiver,
    read: u64,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.read += (buf.filled().len() - before) as u64;
        }
        polled
    }
}

/// Where the first `\n` is: libc's `memchr` (a flood is a newline search
/// per line, and a plain loop is ten times slower in a debug build).
#[allow(unsafe_code)]
fn find_newline(haystack: &[u8]) -> Option<usize> {
    // SAFETY: the pointer and length describe `haystack`, borrowed for the
    // call; memchr reads at most that many bytes and returns null or a
    // pointer into them.
    let at = unsafe { libc::memchr(haystack.as_ptr().cast(), i32::from(b'\n'), haystack.len()) };
    (!at.is_null()).then(|| at as usize - haystack.as_ptr() as usize)
}

/// Splits on `\n` (dropping a `\r` before it), never fails: a line over
/// [`MAX_LINE`] is cut there and the rest of it skipped; invalid UTF-8 is
/// replaced. (tokio-util's `LinesCodec` ends the stream on both.)
#[derive(Default)]
struct Lines {
    /// Skipping the rest of a line that was cut.
    discarding: bool,
    /// Bytes of the buffer already searched for a newline.
    searched: usize,
}

/// One line as read, with its newline (if any).
struct Line {
    bytes: BytesMut,
    /// Cut at [`MAX_LINE`].
    truncated: bool,
}

impl Line {
    fn text(&self) -> String {
        let bytes = self.bytes.strip_suffix(b"\n").unwrap_or(&self.bytes);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if self.truncated {
            text.push_str(" [line truncated]");
        }
        text
    }
}

impl Decoder for Lines {
    type Item = Line;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Line>> {
        loop {
            let newline = find_newline(&buf[self.searched..]);
            match newline {
                Some(i) => {
                    let line = buf.split_to(self.searched + i + 1);
                    self.searched = 0;
                    if std::mem::take(&mut self.discarding) {
                        continue;
                    }
                    return Ok(Some(Line {
                        bytes: line,
                        truncated: false,
                    }));
                }
                None if self.discarding => {
                    buf.clear();
                    self.searched = 0;
                    return Ok(None);
                }
                None if buf.len() > MAX_LINE => {
                    let bytes = buf.split_to(MAX_LINE);
                    self.searched = 0;
                    self.discarding = true;
                    return Ok(Some(Line { bytes, truncated: true }));
                }
                None => {
                    self.searched = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Line>> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.searched = 0;
        if buf.is_empty() || std::mem::take(&mut self.discarding) {
            buf.clear();
            return Ok(None);
        }
        Ok(Some(Line {
            bytes: buf.split(),
            truncated: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[&[u8]]) -> Vec<String> {
        let mut codec = Lines::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in input {
            buf.extend_from_slice(part);
            while let Some(l) = codec.decode(&mut buf).unwrap() {
                out.push(l.text());
            }
        }
        while let Some(l) = codec.decode_eof(&mut buf).unwrap() {
            out.push(l.text());
        }
        out
    }

    #[test]
    fn lines_survive_long_lines_bad_utf8_and_pieces() {
        let long = vec![b'x'; MAX_LINE * 3];
        let out = decode_all(&[b"one\r\ntw", b"o\n", &long, b"\nbad \xff\n", b"last"]);
        assert_eq!(out.len(), 5, "{:?}", out.iter().map(|l| l.len()).collect::<Vec<_>>());
        assert_eq!(out[0], "one");
        assert_eq!(out[1], "two");
        assert!(out[2].starts_with("xxx") && out[2].ends_with(" [line truncated]"));
        assert_eq!(out[2].len(), MAX_LINE + " [line truncated]".len());
        assert_eq!(out[3], "bad \u{fffd}");
        assert_eq!(out[4], "last");
    }

    #[test]
    fn the_budget_marks_the_one_line_that_crosses_it() {
        let b = LogBudget::new(10);
        assert!(matches!(b.take(6), Budget::Within));
        assert!(matches!(b.take(4), Budget::Within));
        assert!(matches!(b.take(1), Budget::JustOver));
        assert!(matches!(b.take(1), Budget::Over));
        assert_eq!(b.reset(), 2);
        assert!(matches!(b.take(10), Budget::Within));
    }
}
