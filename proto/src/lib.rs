//! stoke-proto owns the wire contracts: the public admin API (`AdminService`)
//! and the internal dispatcher⇄worker protocol (`WorkerService`), generated
//! from `proto/stoke/v1/*.proto` at build time with protox + tonic-prost-build.
//! It holds no logic beyond [`BearerToken`], the interceptor clients use
//! to send their API token.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("stoke.v1");
}

/// The encoded `FileDescriptorSet` of every stoke proto (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stoke_descriptor.bin"));

pub use v1::*;

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
