//! Anyone who can reach the port can open connections. With fewer file descriptors than the
//! connections opened against it, the service stays near idle and still serves a legitimate
//! caller within its deadline.

use std::time::Duration;

use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::secret_rotation_service_client::SecretRotationServiceClient,
};
use tokio::net::TcpStream;
use tonic::Request;

use crate::helpers::{ServiceProcess, bare_stack, connect, rotate};

const DESCRIPTORS: u32 = 256;
const IDLE_CONNECTIONS: usize = 400;

#[tokio::test]
async fn idle_connections_beyond_the_descriptor_limit_neither_spin_nor_lock_out_callers() {
    let (bao, emulator, m2m) = bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "Served app"));
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.push(("ROTATOR_FIRST_REQUEST_TIMEOUT", "2s".to_owned()));
    let service = ServiceProcess::start_with_fd_limit(&env, DESCRIPTORS).await;
    let log = service.output();
    assert!(
        log.contains("ROTATOR_MAX_CONNECTIONS lowered to stay under the file descriptor limit"),
        "{log}"
    );

    // Connections that never send a byte, more than the process has descriptors.
    let mut idle = Vec::new();
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(service.addr).await.expect("connect"));
    }
    let before = service.cpu_time();
    let held = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cpu = service.cpu_time() - before;
    let wall = held.elapsed();

    // A legitimate caller, behind all of them in the accept queue.
    let started = tokio::time::Instant::now();
    let mut client = SecretRotationServiceClient::new(
        connect(service.addr, None)
            .await
            .expect("the TCP handshake completes in the backlog"),
    );
    let mut call = Request::new(rotate(&id));
    call.set_timeout(Duration::from_secs(15));
    client
        .rotate_secret(call)
        .await
        .expect("served within its deadline");
    let served_after = started.elapsed();
    eprintln!(
        "exhaustion: {IDLE_CONNECTIONS} idle connections against a {DESCRIPTORS}-descriptor process; \
         service CPU {cpu:?} over {wall:?} while they were held; a legitimate rotation answered after {served_after:?}"
    );
    // Spinning on EMFILE used one core and more; waiting uses next to nothing.
    assert!(
        cpu < wall / 4,
        "the service used {cpu:?} of CPU in {wall:?} with idle connections open"
    );
    assert!(
        !service.output().contains("out of file descriptors"),
        "the accept loop ran out of descriptors"
    );
    drop(idle);
}
