//! JetStream provisioning for the invocation stream. Idempotent: every role
//! calls it at start, whichever comes up first creates the stream.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use stoke_core::naming;

/// How the invocation stream is provisioned.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamOptions {
    /// Replicas (1 for a single server, 3 on a cluster).
    pub replicas: usize,
    /// JetStream de-duplication window for idempotency keys, in seconds.
    pub duplicate_window_secs: u64,
    /// Largest message the stream accepts (payload + headers), in bytes.
    pub max_message_bytes: i32,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            replicas: 1,
            duplicate_window_secs: 120,
            max_message_bytes: 8 << 20,
        }
    }
}

/// Create the invocation stream if missing; return it.
pub async fn ensure_invoke_stream(
    js: &jetstream::Context,
    opts: &StreamOptions,
) -> Result<stream::Stream, async_nats::Error> {
    let cfg = stream::Config {
        name: naming::INVOKE_STREAM.to_string(),
        subjects: vec![naming::INVOKE_SUBJECTS.to_string()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        duplicate_window: Duration::from_secs(opts.duplicate_window_secs),
        max_message_size: opts.max_message_bytes,
        ..Default::default()
    };
    Ok(js.get_or_create_stream(cfg).await?)
}
