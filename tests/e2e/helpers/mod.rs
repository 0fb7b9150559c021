//! Test harness, split by job: the OpenBao server, free ports and polling shared with the
//! benchmarks (`tests/support`), `stack` (OpenBao, the Auth0 emulator and the service
//! in-process), `process` (the real binary as a child process) and
//! `requests` (request and fault builders) and `collector` (an OTLP trace receiver). Each part runs on free loopback ports, and
//! everything waits by polling with a bound.

mod collector;
mod process;
mod requests;
mod stack;

use std::net::SocketAddr;

use tonic::transport::{Channel, ClientTlsConfig};

pub use crate::support::{Bao, VAULT_TOKEN, eventually, free_port, tool};
pub use collector::{Collector, ExportedSpan};
pub use process::{ServiceProcess, bare_stack};
pub use requests::*;
pub use stack::{Stack, StackOptions, grpcurl_at};

pub const M2M_SECRET: &str = "m2m-secret-of-the-rotator-service-0123456789";
pub const ALL_SCOPES: &[&str] = &["read:clients", "read:client_keys", "update:client_keys"];

/// A channel to `addr`, over TLS when `tls` is given.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    match tls {
        Some(tls) => {
            Channel::from_shared(format!("https://{addr}"))
                .expect("valid URI")
                .tls_config(tls)?
                .connect()
                .await
        }
        None => {
            Channel::from_shared(format!("http://{addr}"))
                .expect("valid URI")
                .connect()
                .await
        }
    }
}

pub fn vault_path(client_id: &str) -> String {
    format!("auth0/clients/{client_id}")
}

/// A refusal with the expected code and a message that says what it should.
#[track_caller]
pub fn assert_status(status: &tonic::Status, code: tonic::Code, says: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(says), "{}", status.message());
}
