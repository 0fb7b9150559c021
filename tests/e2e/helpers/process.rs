//! The real `secret-rotator` binary as a child process.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use secret_rotator::{
    emulator::{Emulator, EmulatorConfig, RunningEmulator, m2m_client, random_client_id},
    proto::secret_rotation_service_client::SecretRotationServiceClient,
};
use tokio::net::TcpListener;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{ALL_SCOPES, Bao, M2M_SECRET, connect, eventually, free_port};

/// The real binary as a child process, logging to a file; killed on drop.
pub struct ServiceProcess {
    child: Child,
    pub addr: SocketAddr,
    pub log: tempfile::NamedTempFile,
    tls: Option<ClientTlsConfig>,
}

impl ServiceProcess {
    /// Starts `secret-rotator serve` with `env` (on top of a cleaned environment) and waits
    /// until it reports SERVING.
    pub async fn start(env: &[(&str, String)]) -> Self {
        Self::start_tls(env, None).await
    }

    /// Like [`Self::start`], for a process serving TLS.
    pub async fn start_tls(env: &[(&str, String)], tls: Option<ClientTlsConfig>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secret-rotator"));
        cmd.arg("serve");
        Self::start_command(cmd, env, tls).await
    }

    /// Like [`Self::start`], with the process's open file descriptors limited to `fds`.
    pub async fn start_with_fd_limit(env: &[(&str, String)], fds: u32) -> Self {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -n {fds} && exec \"$0\" serve"),
            env!("CARGO_BIN_EXE_secret-rotator"),
        ]);
        Self::start_command(cmd, env, None).await
    }

    async fn start_command(
        mut cmd: Command,
        env: &[(&str, String)],
        tls: Option<ClientTlsConfig>,
    ) -> Self {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        for (key, _) in std::env::vars() {
            if ["AUTH0_", "VAULT_", "ROTATOR_", "OTEL_"]
                .iter()
                .any(|prefix| key.starts_with(prefix))
            {
                cmd.env_remove(key);
            }
        }
        cmd.env("ROTATOR_LISTEN_ADDR", format!("127.0.0.1:{port}"));
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the binary");
        let mut process = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            tls,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut health = match connect(process.addr, process.tls.clone()).await {
                Ok(channel) => Some(HealthClient::new(channel)),
                Err(_) => None,
            };
            let serving = match health.as_mut() {
                Some(h) => h
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok_and(|s| s.into_inner().status == ServingStatus::Serving as i32),
                None => false,
            };
            if serving {
                break;
            }
            // A process that exited will never serve: say why at once.
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "the binary exited ({status}) instead of serving:\n{}",
                    process.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after 60s waiting for the binary to report SERVING:\n{}",
                process.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process
    }

    /// The settings that point a process at `bao` and `emulator` as the M2M client `m2m_id`.
    pub fn env_for(
        bao: &Bao,
        emulator: &RunningEmulator,
        m2m_id: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("AUTH0_DOMAIN", emulator.domain()),
            ("AUTH0_BASE_URL", emulator.base_url()),
            ("AUTH0_CLIENT_ID", m2m_id.to_owned()),
            ("AUTH0_CLIENT_SECRET", M2M_SECRET.to_owned()),
            ("VAULT_ADDR", bao.addr.clone()),
            ("VAULT_TOKEN", bao.token.clone()),
            ("ROTATOR_LOG_FORMAT", "json".to_owned()),
            ("ROTATOR_INSECURE", "true".to_owned()),
            ("ROTATOR_ADMIN_ADDR", "127.0.0.1:0".to_owned()),
            ("ROTATOR_CALLER_ROTATIONS_PER_MINUTE", "100000".to_owned()),
            ("ROTATOR_CALLER_ROTATION_BURST", "100000".to_owned()),
        ]
    }

    pub async fn client(&self) -> SecretRotationServiceClient<Channel> {
        SecretRotationServiceClient::new(
            connect(self.addr, self.tls.clone()).await.expect("connect"),
        )
    }

    /// CPU time the process has used so far (user and system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        crate::support::cpu_time(self.child.id())
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        eventually("the binary to exit", Duration::from_secs(30), || {
            let done = self.child.try_wait().unwrap();
            async move { done }
        })
        .await
    }

    /// Everything the process has logged so far (a line being written may be cut short).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log.path()).unwrap_or_default()).into_owned()
    }

    /// The audit events logged so far (JSON lines on target `audit`).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        self.output()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["target"] == "audit")
            .collect()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenBao and an emulator with the service's own M2M client, for tests that run the binary.
pub async fn bare_stack() -> (Bao, RunningEmulator, String) {
    let bao = Bao::start().await;
    let m2m = random_client_id();
    let emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_client(&m2m, M2M_SECRET, ALL_SCOPES))
        .start(
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind emulator"),
        );
    (bao, emulator, m2m)
}
