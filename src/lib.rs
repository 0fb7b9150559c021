//! secret-rotator: rotates Auth0 client secrets and keeps the live secret in Vault KV v2.
//!
//! # Layout
//!
//! Dependencies point one way, down this list: a module imports only modules listed above it
//! (`scripts/layout.py` checks this, and CI runs it).
//!
//! - [`audit`]: the audit trail's event record and where it is written; imports nothing.
//! - [`trace`]: W3C trace context: the caller's `traceparent`, the trace id audit events
//!   carry, `traceparent` on outgoing requests.
//! - [`metrics`]: the Prometheus registry and the functions that record into it; imports
//!   nothing.
//! - [`work`]: the piece of work an upstream request belongs to (who waits, until when), carried
//!   as a task-local; imports nothing.
//! - [`upstream`]: sends every request to Auth0 and Vault, timed (metrics) and traced (a client
//!   span, `traceparent`).
//! - [`rotation`]: the protocol. Owns its ports (`SecretIssuer`, `SecretStore`, `Ledger`), their
//!   errors (`IssuerError`, `StoreError`, each with one `kind()`), the ids, the records and
//!   Auth0's Client model. Imports no adapter, no transport, no configuration.
//! - [`auth0`]: the Management API adapter (`SecretIssuer`) and its `Settings`.
//! - [`vault`]: the KV v2 adapter (`SecretStore` and `Ledger`) and its `Settings`.
//! - [`webhook`]: delivers the protocol's notifications as signed CloudEvents; its `Settings`.
//! - [`auth`]: the front door: listener TLS, typed caller identities (mutual TLS, JWT), the
//!   policy, the rate limits and the refusal throttle, and one reload mechanism for their
//!   files; its `Settings`.
//! - [`listener`]: accepting connections within limits (count, first-request and idle timeouts,
//!   back-off when descriptors run out; `TCP_NODELAY` on each), and TLS handshakes.
//! - [`grpc`]: the tonic layer: request -> one domain call -> response; every `Status` is built
//!   in `grpc/status.rs`.
//! - [`telemetry`]: installs the log subscriber and, with an OTLP endpoint, the span exporter;
//!   its `Settings`.
//! - [`cli`]: the operator commands (a command per RPC, and health): a gRPC client.
//! - [`config`]: flags and environment, grouped and validated once into each part's settings.
//! - [`app`]: the composition root: builds the adapters, the service and the server; health,
//!   reflection, start-up checks, the reconciler, shutdown.
//! - `emulator` (feature `emulator`): a stateful Auth0 stand-in for tests and the local stack;
//!   imports nothing of the service.
//! - [`proto`]: code generated from `proto/secretrotator/v1`.

pub mod app;
pub mod audit;
pub mod auth;
pub mod auth0;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod listener;
pub mod metrics;
pub mod rotation;
pub mod telemetry;
pub mod trace;
pub mod upstream;
pub mod vault;
pub mod webhook;
pub mod work;

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
