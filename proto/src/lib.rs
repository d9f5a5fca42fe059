//! stoke-proto owns the wire contracts: the public admin API (`AdminService`)
//! and the internal dispatcher⇄worker protocol (`WorkerService`), generated
//! from `proto/stoke/v1/*.proto` at build time with protox + tonic-prost-build.
//! It holds no logic.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("stoke.v1");
}

/// The encoded `FileDescriptorSet` of every stoke proto (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stoke_descriptor.bin"));

pub use v1::*;
