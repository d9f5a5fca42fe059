//! stoke-bus owns what the roles say to each other through NATS: the
//! streams and consumers (one [`streams::StreamOptions`], read by every
//! role from the `[streams]` table), the invocation event's envelope with
//! its one encode and one decode ([`envelope`]), invocation ids and
//! idempotency keys ([`ids`]), result announcements and their in-process
//! hand-over ([`results`]), reading function output back from the logs
//! stream ([`logs`]), streamed responses on their way to the caller
//! ([`stream`]), the function URL event an HTTP request
//! becomes ([`http`]), the gateway's route table as the catalog changes
//! (`routes`), and accepting an invocation onto the stream
//! ([`invoke::Invoker`]: the gateway, cron and the admin API all go
//! through it).
//!
//! It must not run user code, pull or acknowledge deliveries (that is the
//! dispatcher's), write completions or attempts, or know any transport
//! other than NATS: callers map [`InvokeError`] to HTTP or gRPC.

pub mod envelope;
pub mod http;
pub mod ids;
pub mod invoke;
pub mod logs;
pub mod results;
mod routes;
pub mod stream;
pub mod streams;

pub use envelope::Envelope;
pub use invoke::{InvokeError, InvokeRequest, Invoked, Invoker, Streamed, Via};
