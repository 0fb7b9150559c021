//! Test harness: a real OpenBao dev server (child process), the Auth0 emulator and the service
//! (in-process), each on a free loopback port. Everything waits by polling with a bound.

use std::{
    future::Future,
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use clap::Parser;
use secret_rotator::{
    app,
    config::{Cli, Command as CliCommand},
    emulator::{
        Emulator, EmulatorConfig, RunningEmulator, SeedClient, m2m_client, random_client_id,
    },
    proto::secret_rotation_service_client::SecretRotationServiceClient,
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

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

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A real OpenBao dev server with KV v2 at `secret/`. Killed on drop.
pub struct Bao {
    child: Child,
    pub addr: String,
    _home: tempfile::TempDir,
    http: reqwest::Client,
}

impl Bao {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let home = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let child = Command::new(tool("bao"))
                .args([
                    "server",
                    "-dev",
                    &format!("-dev-root-token-id={VAULT_TOKEN}"),
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                ])
                .env("HOME", home.path())
                .env_remove("VAULT_ADDR")
                .env_remove("BAO_ADDR")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn bao");
            let mut bao = Self {
                child,
                addr: format!("http://127.0.0.1:{port}"),
                _home: home,
                http: reqwest::Client::new(),
            };
            if bao.wait_ready().await {
                return bao;
            }
            // Lost the port to someone else: try another.
        }
        panic!("OpenBao did not start");
    }

    async fn wait_ready(&mut self) -> bool {
        let start = tokio::time::Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let health = self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", VAULT_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("OpenBao answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The key's current data, or None when it does not exist.
    pub async fn kv_data(&self, path: &str) -> Option<Value> {
        let (status, body) = self
            .api(reqwest::Method::GET, &format!("secret/data/{path}"), None)
            .await;
        (status == 200).then(|| body["data"]["data"].clone())
    }

    /// The key's metadata (current_version, custom_metadata, ...).
    pub async fn kv_metadata(&self, path: &str) -> Option<Value> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("secret/metadata/{path}"),
                None,
            )
            .await;
        (status == 200).then(|| body["data"].clone())
    }

    /// Every key under `secret/` (recursively), to prove nothing was written.
    pub async fn kv_keys(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![String::new()];
        while let Some(dir) = dirs.pop() {
            let (status, body) = self
                .api(
                    reqwest::Method::from_bytes(b"LIST").unwrap(),
                    &format!("secret/metadata/{dir}"),
                    None,
                )
                .await;
            if status != 200 {
                continue;
            }
            for key in body["data"]["keys"].as_array().into_iter().flatten() {
                let key = format!("{dir}{}", key.as_str().unwrap_or_default());
                if key.ends_with('/') {
                    dirs.push(key);
                } else {
                    found.push(key);
                }
            }
        }
        found
    }

    /// Every secret key the service wrote (its own ledger records aside).
    pub async fn secret_keys(&self) -> Vec<String> {
        let mut keys = self.kv_keys().await;
        keys.retain(|k| k.starts_with("auth0/"));
        keys
    }

    /// A token limited to `policy` (HCL).
    pub async fn token_with_policy(&self, name: &str, policy: &str) -> String {
        let (status, _) = self
            .api(
                reqwest::Method::PUT,
                &format!("sys/policies/acl/{name}"),
                Some(serde_json::json!({ "policy": policy })),
            )
            .await;
        assert!(status < 300, "policy {name} not written: {status}");
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                "auth/token/create",
                Some(serde_json::json!({ "policies": [name], "no_default_policy": false })),
            )
            .await;
        assert!(status < 300, "token not created: {status}");
        body["auth"]["client_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn connect_health(endpoint: &str) -> Option<HealthClient<Channel>> {
    let channel = Channel::from_shared(endpoint.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    Some(HealthClient::new(channel))
}

pub fn vault_path(client_id: &str) -> String {
    format!("auth0/clients/{client_id}")
}

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
        }
    }
}

/// OpenBao + emulator + the service, wired together.
pub struct Stack {
    pub bao: Bao,
    pub emulator: RunningEmulator,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), app::AppError>>>,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Self {
        let bao = Bao::start().await;
        let vault_token = match options.vault_policy {
            Some(policy) => bao.token_with_policy("limited", policy).await,
            None => VAULT_TOKEN.to_owned(),
        };
        let m2m_client_id = random_client_id();
        let emulator = Emulator::new(options.emulator.clone())
            .with_client(m2m_client(&m2m_client_id, M2M_SECRET, &options.m2m_scopes))
            .start(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind emulator"),
            );

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
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(options.extra_args.iter().cloned());
        let CliCommand::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command;
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
            emulator,
            addr,
            shutdown: Some(tx),
            server: Some(server),
        };
        if options.wait_serving {
            stack.wait_for_health(ServingStatus::Serving).await;
        }
        stack
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> SecretRotationServiceClient<Channel> {
        SecretRotationServiceClient::connect(self.endpoint())
            .await
            .expect("connect to the service")
    }

    pub async fn health(&self) -> HealthClient<Channel> {
        connect_health(&self.endpoint())
            .await
            .expect("connect to health")
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
