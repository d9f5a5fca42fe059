//! stoke-proto owns the wire contracts: the public admin API (`AdminService`)
//! and the internal dispatcher⇄worker protocol (`WorkerService`), generated
//! from `proto/stoke/v1/*.proto` at build time with protox + tonic-prost-build.
//! It holds no logic beyond [`BearerToken`], the interceptor clients use
//! to send their API token, [`InProcessAttach`], the `Attach` stream without
//! a network under it (a worker in its dispatcher's process), [`tls`] (the
//! gRPC port's certificates and the clients' trust), and `Debug` for
//! the messages that carry secret values (names only, so no log line can hold
//! a secret).

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("stoke.v1");
}

/// The encoded `FileDescriptorSet` of every stoke proto (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stoke_descriptor.bin"));

pub use v1::*;

pub mod tls;

/// Adds `authorization: Bearer <token>` to every call (nothing when the
/// token is empty).
#[derive(Clone, Default)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// Fails when the token is not valid header text.
    pub fn new(token: &str) -> Result<BearerToken, tonic::metadata::errors::InvalidMetadataValue> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(BearerToken(None));
        }
        Ok(BearerToken(Some(format!("Bearer {token}").parse()?)))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A stream of one side's messages on `WorkerService.Attach`.
pub type MessageStream<T> = tonic::codegen::BoxStream<T>;

/// `WorkerService` for a worker in the dispatcher's own process (`stoke
/// up`): the same messages and the same session on both ends, moved
/// through channels instead of encoded over loopback HTTP/2. Saves the two
/// encode, syscall and connection-task hops each way of every invocation,
/// and needs no network at all (so nothing to set up when the gRPC port
/// has TLS).
#[tonic::async_trait]
pub trait InProcessAttach: Send + Sync {
    /// Start a worker session: `from_worker` opens with its `WorkerHello`.
    async fn attach(
        &self,
        from_worker: MessageStream<WorkerMessage>,
    ) -> Result<MessageStream<DispatcherMessage>, tonic::Status>;

    /// `WorkerService.FetchPackage`: the package with this digest.
    async fn fetch_package(&self, digest: String) -> Result<MessageStream<PackageChunk>, tonic::Status>;
}

/// Variable names, not values: a function's env holds its secrets.
struct Names<'a>(&'a std::collections::HashMap<String, String>);

impl std::fmt::Debug for Names<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_list().entries(names).finish()
    }
}

impl std::fmt::Debug for FunctionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionSpec")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("command", &self.command)
            .field("env", &Names(&self.env))
            .field("memory_mb", &self.memory_mb)
            .field("timeout_ms", &self.timeout_ms)
            .field("handler", &self.handler)
            .field("mode", &self.mode)
            .field("image", &self.image)
            .finish()
    }
}

impl std::fmt::Debug for SetEnvRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetEnvRequest")
            .field("function", &self.function)
            .field("set", &self.set)
            .field("set_secrets", &Names(&self.set_secrets))
            .field("unset", &self.unset)
            .finish()
    }
}

/// Never the password.
impl std::fmt::Debug for RegistryLoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLoginRequest")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_of_messages_with_secrets_shows_names_only() {
        let spec = super::FunctionSpec {
            name: "f".into(),
            env: [("API_KEY".to_string(), "hunter2".to_string())].into(),
            ..Default::default()
        };
        let req = super::SetEnvRequest {
            function: "f".into(),
            set_secrets: [("API_KEY".to_string(), "hunter2".to_string())].into(),
            ..Default::default()
        };
        let shown = format!("{spec:?} {req:?}");
        assert!(shown.contains("API_KEY"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
