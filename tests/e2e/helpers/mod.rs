//! Test harness, split by job: `bao` (a real OpenBao server), `stack` (OpenBao, the Auth0
//! emulator and the service in-process), `process` (the real binary as a child process) and
//! `requests` (request and fault builders) and `collector` (an OTLP trace receiver). Each part runs on free loopback ports, and
//! everything waits by polling with a bound.

mod bao;
mod collector;
mod process;
mod requests;
mod stack;

use std::{
    future::Future,
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    time::Duration,
};

use tonic::transport::{Channel, ClientTlsConfig};

pub use bao::Bao;
pub use collector::{Collector, ExportedSpan};
pub use process::{ServiceProcess, bare_stack};
pub use requests::*;
pub use stack::{Stack, StackOptions, grpcurl_at};

pub const VAULT_TOKEN: &str = "root-token-for-tests";
pub const M2M_SECRET: &str = "m2m-secret-of-the-rotator-service-0123456789";
pub const ALL_SCOPES: &[&str] = &["read:clients", "read:client_keys", "update:client_keys"];

/// Polls `check` until it yields a value, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn tool(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_ascii_uppercase());
    if let Ok(path) = std::env::var(&var) {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} not found: run scripts/tools.sh (or set {var})",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

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
