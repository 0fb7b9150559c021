//! What the benchmark runs against: a real OpenBao dev server with a file audit device (to count
//! Vault requests; `tests/support`, shared with the end-to-end tests), the Auth0 emulator in
//! this process, and the release `secret-rotator` binary as child processes whose CPU and memory
//! are read from /proc.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{Bao, eventually, free_port};
use secret_rotator::emulator::{
    Emulator, EmulatorConfig, RunningEmulator, m2m_client, random_client_id, regular_client,
};
use tokio::net::TcpListener;

pub const M2M_SECRET: &str = "m2m-secret-of-the-benchmark-0123456789abcdef";
pub const SCOPES: &[&str] = &["read:clients", "read:client_keys", "update:client_keys"];

/// The emulator with `clients` regular clients and the service's own M2M client.
pub async fn emulator(clients: usize) -> (RunningEmulator, String, Vec<String>) {
    let m2m = random_client_id();
    let mut emulator = Emulator::new(EmulatorConfig {
        rate_limit_burst: 1_000_000,
        rate_limit_per_second: 1_000_000,
        ..EmulatorConfig::default()
    })
    .with_client(m2m_client(&m2m, M2M_SECRET, SCOPES));
    let ids: Vec<String> = (0..clients).map(|_| random_client_id()).collect();
    for id in &ids {
        emulator = emulator.with_client(regular_client(id, "Bench"));
    }
    let running = emulator.start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    (running, m2m, ids)
}

/// The release binary, serving plaintext on loopback; killed on drop.
pub struct Service {
    child: Child,
    pub addr: String,
}

impl Service {
    pub async fn start(
        bao: &Bao,
        emulator: &RunningEmulator,
        m2m: &str,
        extra: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        // BENCH_SERVICE_BIN: another build of the service, e.g. one with frame pointers for
        // `--profile` call graphs.
        let bin = std::env::var("BENCH_SERVICE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_secret-rotator").to_owned());
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("AUTH0_DOMAIN", emulator.domain())
            .env("AUTH0_BASE_URL", emulator.base_url())
            .env("AUTH0_CLIENT_ID", m2m)
            .env("AUTH0_CLIENT_SECRET", M2M_SECRET)
            .env("VAULT_ADDR", &bao.addr)
            .env("VAULT_TOKEN", &bao.token)
            .env("ROTATOR_INSECURE", "true")
            .env("ROTATOR_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("ROTATOR_ADMIN_ADDR", "127.0.0.1:0")
            .env("ROTATOR_CALLER_ROTATIONS_PER_MINUTE", "1000000000")
            .env("ROTATOR_CALLER_ROTATION_BURST", "1000000000")
            .env("ROTATOR_MAX_CONCURRENT_ROTATIONS", "64")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (key, value) in extra {
            cmd.env(key, value);
        }
        let service = Self {
            child: cmd.spawn().expect("start secret-rotator"),
            addr: format!("http://127.0.0.1:{port}"),
        };
        eventually(
            "secret-rotator SERVING",
            Duration::from_secs(60),
            || async { service.serving().await.then_some(()) },
        )
        .await;
        service
    }

    async fn serving(&self) -> bool {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let Ok(channel) = tonic::transport::Channel::from_shared(self.addr.clone())
            .unwrap()
            .connect()
            .await
        else {
            return false;
        };
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.into_inner().status == 1)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Service {
    /// SIGTERM first, so that a wrapped service (valgrind, for a profile) writes its output;
    /// SIGKILL when it has not stopped after its grace.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `perf record` attached to a process until dropped.
pub struct Perf(Child);

impl Perf {
    pub fn attach(pid: u32, file: &Path) -> Self {
        let child = Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "4000",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf (Debian's linux-perf)");
        // perf needs a moment to attach before the run starts.
        std::thread::sleep(Duration::from_millis(500));
        Self(child)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Runs one RotateSecrets batch of `ids` on `service` to its end: how many failed (the batch
/// and fleet benchmarks').
#[allow(dead_code)]
pub async fn batch(service: &Service, ids: Vec<String>, reason: &str, max_concurrency: i32) -> i32 {
    use secret_rotator::proto::{
        RotateSecretsRequest, rotate_secrets_response::Event,
        secret_rotation_service_client::SecretRotationServiceClient,
    };
    use tokio_stream::StreamExt;

    let mut client = SecretRotationServiceClient::connect(service.addr.clone())
        .await
        .unwrap();
    let mut stream = client
        .rotate_secrets(RotateSecretsRequest {
            client_ids: ids,
            reason: reason.into(),
            max_concurrency,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(message) = stream.next().await {
        if let Some(Event::Summary(summary)) = message.unwrap().event {
            return summary.failed;
        }
    }
    panic!("no summary");
}
