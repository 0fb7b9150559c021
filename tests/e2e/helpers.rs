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
        Emulator, EmulatorConfig, Faults, RotateFault, RunningEmulator, SeedClient, m2m_client,
        random_client_id,
    },
    proto::{RotateSecretRequest, secret_rotation_service_client::SecretRotationServiceClient},
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, ClientTlsConfig};
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
    pub token: String,
    home: tempfile::TempDir,
    http: reqwest::Client,
    /// File-backed servers: the config to restart with and the unseal key.
    persistent: Option<(PathBuf, String)>,
}

impl Bao {
    pub async fn start() -> Self {
        Self::start_dev(false).await
    }

    /// A dev server on HTTPS with a CA of its own ([`Bao::ca_file`]).
    pub async fn start_tls() -> Self {
        Self::start_dev(true).await
    }

    async fn start_dev(tls: bool) -> Self {
        for _ in 0..5 {
            let home = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let certs = home.path().join("certs");
            let mut args = vec![
                "server".to_owned(),
                "-dev".to_owned(),
                format!("-dev-root-token-id={VAULT_TOKEN}"),
                format!("-dev-listen-address=127.0.0.1:{port}"),
            ];
            if tls {
                std::fs::create_dir_all(&certs).unwrap();
                args.push("-dev-tls".to_owned());
                args.push(format!("-dev-tls-cert-dir={}", certs.display()));
            }
            let child = Command::new(tool("bao"))
                .args(args)
                .env("HOME", home.path())
                .env_remove("VAULT_ADDR")
                .env_remove("BAO_ADDR")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn bao");
            let scheme = if tls { "https" } else { "http" };
            let mut bao = Self {
                child,
                addr: format!("{scheme}://127.0.0.1:{port}"),
                token: VAULT_TOKEN.to_owned(),
                home,
                http: reqwest::Client::new(),
                persistent: None,
            };
            if tls {
                let ca = bao.ca_file();
                eventually("OpenBao's CA file", Duration::from_secs(30), || async {
                    std::fs::read(&ca).ok().filter(|pem| !pem.is_empty())
                })
                .await;
                let pem = std::fs::read(&ca).unwrap();
                bao.http = reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                    .build()
                    .unwrap();
            }
            if bao.wait_ready().await {
                return bao;
            }
            // Lost the port to someone else: try another.
        }
        panic!("OpenBao did not start");
    }

    /// The CA of a [`Bao::start_tls`] server.
    pub fn ca_file(&self) -> PathBuf {
        self.home.path().join("certs").join("vault-ca.pem")
    }

    /// A raft-backed OpenBao (not -dev): its data survives a [`Bao::restart`].
    pub async fn start_persistent() -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = home.path().join("bao.hcl");
        let data = home.path().join("raft");
        std::fs::create_dir_all(&data).unwrap();
        let cluster_port = free_port();
        // OpenBao has no "file" storage; single-node raft persists just as well.
        std::fs::write(
            &config,
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"test\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  \
                 cluster_address = \"127.0.0.1:{cluster_port}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\n\
                 cluster_addr = \"http://127.0.0.1:{cluster_port}\"\n",
                data.display()
            ),
        )
        .unwrap();
        let child = spawn_bao_with_config(&config, home.path());
        let mut bao = Self {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            home,
            http: reqwest::Client::new(),
            persistent: Some((config, String::new())),
        };
        bao.wait_answering().await;
        let (status, init) = bao
            .api(
                reqwest::Method::PUT,
                "sys/init",
                Some(serde_json::json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await;
        assert_eq!(status, 200, "init: {init}");
        bao.token = init["root_token"].as_str().unwrap().to_owned();
        let key = init["keys_base64"][0].as_str().unwrap().to_owned();
        bao.persistent.as_mut().unwrap().1 = key;
        bao.unseal().await;
        let (status, body) = bao
            .api(
                reqwest::Method::POST,
                "sys/mounts/secret",
                Some(serde_json::json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await;
        assert!(status < 300, "mount: {status} {body}");
        // KV v2 finishes setting itself up in the background.
        eventually(
            "KV v2 to accept writes",
            Duration::from_secs(30),
            || async {
                let probe = Some(serde_json::json!({"data": {"ready": "yes"}}));
                let (status, _) = bao
                    .api(reqwest::Method::POST, "secret/data/_probe", probe)
                    .await;
                (status == 200).then_some(())
            },
        )
        .await;
        bao
    }

    /// Restarts a file-backed server on the same address and storage, and unseals it.
    pub async fn restart(&mut self) {
        let (config, _) = self.persistent.clone().expect("a persistent OpenBao");
        self.stop();
        self.child = spawn_bao_with_config(&config, self.home.path());
        self.wait_answering().await;
        self.unseal().await;
    }

    async fn unseal(&self) {
        let key = self.persistent.as_ref().unwrap().1.clone();
        let (status, body) = self
            .api(
                reqwest::Method::PUT,
                "sys/unseal",
                Some(serde_json::json!({"key": key})),
            )
            .await;
        assert_eq!(status, 200, "unseal: {body}");
        assert_eq!(body["sealed"], false, "still sealed: {body}");
        eventually(
            "OpenBao to become active",
            Duration::from_secs(30),
            || async {
                let r = self
                    .http
                    .get(format!("{}/v1/sys/health", self.addr))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// Until the server answers HTTP at all (initialised or not).
    async fn wait_answering(&self) {
        eventually("OpenBao to answer", Duration::from_secs(30), || async {
            self.http
                .get(format!("{}/v1/sys/health", self.addr))
                .send()
                .await
                .ok()
                .map(|_| ())
        })
        .await;
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
            .header("X-Vault-Token", &self.token);
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

    /// The data of one version of the key.
    pub async fn kv_version(&self, path: &str, version: i64) -> Option<Value> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("secret/data/{path}?version={version}"),
                None,
            )
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

fn spawn_bao_with_config(config: &std::path::Path, home: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("bao.log"))
        .expect("bao log");
    Command::new(tool("bao"))
        .args(["server", &format!("-config={}", config.display())])
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn bao")
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
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

/// One scripted rotate-secret failure at the emulator.
pub fn rotate_fault(status: u16, commit: bool, delay_ms: u64) -> Faults {
    Faults {
        rotate: vec![RotateFault {
            status,
            commit,
            delay_ms,
        }],
        ..Faults::default()
    }
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

    /// Rotates `client_id`, expecting a refusal.
    pub async fn rotate_refused(&self, client_id: &str) -> tonic::Status {
        let request = RotateSecretRequest {
            client_id: client_id.to_owned(),
            ..Default::default()
        };
        self.client()
            .await
            .rotate_secret(request)
            .await
            .unwrap_err()
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
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secret-rotator"));
        cmd.arg("serve");
        for (key, _) in std::env::vars() {
            if key.starts_with("AUTH0_") || key.starts_with("VAULT_") || key.starts_with("ROTATOR_")
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
        let process = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            tls,
        };
        eventually(
            "the binary to report SERVING",
            Duration::from_secs(60),
            || {
                let (addr, tls) = (process.addr, process.tls.clone());
                async move {
                    let mut health = HealthClient::new(connect(addr, tls).await.ok()?);
                    let status = health
                        .check(HealthCheckRequest::default())
                        .await
                        .ok()?
                        .into_inner()
                        .status;
                    (status == ServingStatus::Serving as i32).then_some(())
                }
            },
        )
        .await;
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
            ("ROTATOR_CALLER_ROTATIONS_PER_MINUTE", "100000".to_owned()),
            ("ROTATOR_CALLER_ROTATION_BURST", "100000".to_owned()),
        ]
    }

    pub async fn client(&self) -> SecretRotationServiceClient<Channel> {
        SecretRotationServiceClient::new(
            connect(self.addr, self.tls.clone()).await.expect("connect"),
        )
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
