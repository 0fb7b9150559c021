//! What the benchmark runs against: a real OpenBao dev server with a file audit device (to count
//! Vault requests), the Auth0 emulator in this process, and the release `secret-rotator` binary
//! as child processes whose CPU and memory are read from /proc.

use std::{
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use secret_rotator::emulator::{
    Emulator, EmulatorConfig, RunningEmulator, m2m_client, random_client_id, regular_client,
};
use tokio::net::TcpListener;

pub const M2M_SECRET: &str = "m2m-secret-of-the-benchmark-0123456789abcdef";
const VAULT_TOKEN: &str = "bench-root-token";
pub const SCOPES: &[&str] = &["read:clients", "read:client_keys", "update:client_keys"];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 20 ms until it is true; panics after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// OpenBao in dev mode with every request written to an audit file.
pub struct Bao {
    child: Child,
    pub addr: String,
    pub token: String,
    audit: PathBuf,
    _home: tempfile::TempDir,
}

impl Bao {
    pub async fn start() -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        let audit = home.path().join("audit.log");
        let config = home.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"bench\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(repo().join(".tools/bin/bao"))
            .args([
                "server".to_owned(),
                "-dev".to_owned(),
                format!("-dev-root-token-id={VAULT_TOKEN}"),
                format!("-dev-listen-address=127.0.0.1:{port}"),
                format!("-config={}", config.display()),
            ])
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start OpenBao: run scripts/tools.sh first");
        let bao = Self {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            token: VAULT_TOKEN.to_owned(),
            audit,
            _home: home,
        };
        let http = reqwest::Client::new();
        wait_until("OpenBao", Duration::from_secs(30), async || {
            http.get(format!("{}/v1/sys/health", bao.addr))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        bao
    }

    /// Requests Vault has received so far (one audit line each).
    pub fn requests(&self) -> u64 {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"type\":\"request\""))
            .count() as u64
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        wait_until(
            "secret-rotator SERVING",
            Duration::from_secs(60),
            async || service.serving().await,
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

/// CPU time (user + system) a process has used so far, from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let total = ticks(11) + ticks(12);
    let hz = clock_ticks_per_second();
    Duration::from_micros(total * 1_000_000 / hz)
}

/// Peak resident memory of a process, from /proc (VmHWM).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clock_ticks_per_second() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
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
