//! OpenBao, the Auth0 emulator and the service (in-process), wired together.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use secret_rotator::{
    app,
    config::{Cli, Command as CliCommand},
    emulator::{
        Emulator, EmulatorConfig, RunningEmulator, SeedClient, m2m_client, random_client_id,
    },
    proto::{
        GetRotationStatusRequest, GetRotationStatusResponse, RotateSecretResponse,
        secret_rotation_service_client::SecretRotationServiceClient,
    },
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{ALL_SCOPES, Bao, M2M_SECRET, connect, eventually, rotate};

/// How to set up a [`Stack`].
pub struct StackOptions {
    pub emulator: EmulatorConfig,
    pub m2m_scopes: Vec<&'static str>,
    /// Extra `serve` flags, after the defaults (a later flag wins).
    pub extra_args: Vec<String>,
    pub m2m_secret_presented: String,
    /// Run the service with a token limited to this policy (HCL) instead of the root token.
    pub vault_policy: Option<&'static str>,
    pub wait_serving: bool,
    /// How the test connects, when the service serves TLS.
    pub tls: Option<ClientTlsConfig>,
    /// Serve the emulator over HTTPS with this configuration.
    pub emulator_tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            emulator: EmulatorConfig::default(),
            m2m_scopes: ALL_SCOPES.to_vec(),
            extra_args: Vec::new(),
            m2m_secret_presented: M2M_SECRET.to_owned(),
            vault_policy: None,
            wait_serving: true,
            tls: None,
            emulator_tls: None,
        }
    }
}

/// OpenBao + emulator + the service, wired together.
pub struct Stack {
    pub bao: Bao,
    pub emulator: RunningEmulator,
    pub addr: SocketAddr,
    /// The service's own Auth0 application.
    pub m2m_client_id: String,
    tls: Option<ClientTlsConfig>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), app::AppError>>>,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Self {
        Self::start_on(Bao::start().await, options).await
    }

    /// Runs the stack on a given OpenBao (e.g. a file-backed one).
    pub async fn start_on(bao: Bao, options: StackOptions) -> Self {
        let vault_token = match options.vault_policy {
            Some(policy) => bao.token_with_policy("limited", policy).await,
            None => bao.token.clone(),
        };
        let m2m_client_id = random_client_id();
        let emulator = Emulator::new(options.emulator.clone()).with_client(m2m_client(
            &m2m_client_id,
            M2M_SECRET,
            &options.m2m_scopes,
        ));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind emulator");
        let emulator = match options.emulator_tls.clone() {
            Some(tls) => emulator.start_tls(listener, tls),
            None => emulator.start(listener),
        };

        let mut argv: Vec<String> = [
            "secret-rotator",
            "serve",
            "--auth0-domain",
            &emulator.domain(),
            "--auth0-base-url",
            &emulator.base_url(),
            "--auth0-client-id",
            &m2m_client_id,
            "--auth0-client-secret",
            &options.m2m_secret_presented,
            "--vault-addr",
            &bao.addr,
            "--vault-token",
            &vault_token,
            "--deadline",
            "10s",
            "--shutdown-grace",
            "5s",
            "--insecure",
            "true",
            "--listen-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            // Bulk tests rotate far faster than a real caller; the rate-limit test lowers these.
            "--caller-rotations-per-minute",
            "100000",
            "--caller-rotation-burst",
            "100000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Extra flags come in pairs and replace a default of the same name.
        for pair in options.extra_args.chunks(2) {
            if let Some(at) = argv.iter().position(|a| *a == pair[0]) {
                argv.drain(at..at + 2);
            }
            argv.extend(pair.iter().cloned());
        }
        let CliCommand::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command
        else {
            panic!("serve");
        };
        let config = args.into_config().expect("valid config");

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind service");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app::serve(config, listener, async {
            rx.await.ok();
        }));
        let stack = Self {
            bao,
            m2m_client_id: m2m_client_id.clone(),
            emulator,
            addr,
            tls: options.tls.clone(),
            shutdown: Some(tx),
            server: Some(server),
        };
        if options.wait_serving {
            stack.wait_for_health(ServingStatus::Serving).await;
        }
        stack
    }

    /// A connection with the given TLS settings (or plaintext); fails as the handshake does.
    pub async fn channel(
        &self,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Channel, tonic::transport::Error> {
        connect(self.addr, tls).await
    }

    pub async fn client(&self) -> SecretRotationServiceClient<Channel> {
        SecretRotationServiceClient::new(
            self.channel(self.tls.clone())
                .await
                .expect("connect to the service"),
        )
    }

    /// Rotates `client_id`, expecting success.
    pub async fn rotate_ok(&self, client_id: &str) -> RotateSecretResponse {
        self.client()
            .await
            .rotate_secret(rotate(client_id))
            .await
            .expect("the rotation succeeds")
            .into_inner()
    }

    /// `grpcurl -plaintext -d <body>` of `rpc` of the rotation service (see [`grpcurl_at`]).
    pub async fn grpcurl(&self, rpc: &str, body: &str) -> Result<serde_json::Value, String> {
        grpcurl_at(self.addr, rpc, body).await
    }

    /// Rotates `client_id`, expecting a refusal.
    pub async fn rotate_refused(&self, client_id: &str) -> tonic::Status {
        self.client()
            .await
            .rotate_secret(rotate(client_id))
            .await
            .unwrap_err()
    }

    /// GetRotationStatus of `client_id`, expecting an answer.
    pub async fn status(&self, client_id: &str) -> GetRotationStatusResponse {
        self.status_of(client_id, false).await
    }

    /// GetRotationStatus of `client_id`, with a drift check when `check_drift`.
    pub async fn status_of(&self, client_id: &str, check_drift: bool) -> GetRotationStatusResponse {
        self.client()
            .await
            .get_rotation_status(GetRotationStatusRequest {
                client_id: client_id.to_owned(),
                check_drift,
            })
            .await
            .expect("a status")
            .into_inner()
    }

    pub async fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(
            self.channel(self.tls.clone())
                .await
                .expect("connect to health"),
        )
    }

    pub async fn wait_for_health(&self, want: ServingStatus) {
        let mut health = self.health().await;
        eventually("health status", Duration::from_secs(30), || {
            let mut health = health.clone();
            async move {
                let status = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status;
                (status == want as i32).then_some(())
            }
        })
        .await;
        let _ = &mut health;
    }

    /// Writes the client's ledger record as another replica mid-rotation would leave it: a
    /// lease held for ten minutes (the record must not exist yet).
    pub async fn hold_lease_elsewhere(&self, client_id: &str) {
        let record = format!("secret/data/secret-rotator/clients/{client_id}");
        let far = std::time::SystemTime::now() + Duration::from_secs(600);
        let held = serde_json::json!({
            "options": {"cas": 0},
            "data": {"lease": {"holder": "another-replica",
                "expires_at_ms": secret_rotator::rotation::millis(far)}, "intent": null}
        });
        let (status, _) = self
            .bao
            .api(reqwest::Method::POST, &record, Some(held))
            .await;
        assert_eq!(status, 200, "the lease record is written");
    }

    /// Seeds a client at the emulator and returns its id.
    pub fn seed(&self, seed: SeedClient) -> String {
        let id = seed.doc["client_id"]
            .as_str()
            .expect("client_id")
            .to_owned();
        self.emulator.add_client(seed);
        id
    }

    /// Asks the service to shut down and waits for it to stop.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), server)
                .await
                .expect("service stops within its grace period");
            result.expect("server task").expect("server ran cleanly");
        }
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `grpcurl -plaintext -d <body>` of `rpc` of the rotation service at `addr`, through the real
/// grpcurl and reflection: the answer as JSON, or grpcurl's error output.
pub async fn grpcurl_at(
    addr: SocketAddr,
    rpc: &str,
    body: &str,
) -> Result<serde_json::Value, String> {
    let out = tokio::process::Command::new(super::tool("grpcurl"))
        .args(["-plaintext", "-d", body, &addr.to_string()])
        .arg(format!("secretrotator.v1.SecretRotationService/{rpc}"))
        .output()
        .await
        .expect("run grpcurl");
    match out.status.success() {
        true => Ok(serde_json::from_slice(&out.stdout).expect("JSON answer")),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}
