//! secret-rotator: rotates Auth0 client secrets and keeps the live secret in Vault KV v2.

pub mod app;
pub mod audit;
pub mod auth;
pub mod auth0;
pub mod config;
pub mod grpc;
pub mod rotation;
pub mod telemetry;
pub mod vault;

#[cfg(feature = "emulator")]
pub mod emulator;

/// Generated from `proto/secretrotator/v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("secretrotator.v1");

    /// Encoded descriptor set of the API, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/secretrotator_descriptor.bin"));
}
