//! A real OpenBao server as a child process: dev mode (HTTP or HTTPS) or raft-backed for
//! restarts.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::{VAULT_TOKEN, eventually, free_port, tool};

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
        Self::start_dev(false, false).await
    }

    /// A dev server on HTTPS with a CA of its own ([`Bao::ca_file`]).
    pub async fn start_tls() -> Self {
        Self::start_dev(true, false).await
    }

    /// A dev server that writes every request to a file audit device ([`Bao::requests`]).
    /// OpenBao 2.x enables audit devices only from its configuration file.
    pub async fn start_audited() -> Self {
        Self::start_dev(false, true).await
    }

    async fn start_dev(tls: bool, audited: bool) -> Self {
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
            if audited {
                let config = home.path().join("audit.hcl");
                let log = home.path().join("audit.log");
                std::fs::write(
                    &config,
                    format!(
                        "audit \"file\" \"test\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                        log.display()
                    ),
                )
                .unwrap();
                args.push(format!("-config={}", config.display()));
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

    /// Every request an audited server ([`Bao::start_audited`]) has received so far, as
    /// `(operation, path)`, oldest first.
    pub fn requests(&self) -> Vec<(String, String)> {
        let log = std::fs::read_to_string(self.home.path().join("audit.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["type"] == "request")
            .map(|entry| {
                let request = &entry["request"];
                (
                    request["operation"].as_str().unwrap_or_default().to_owned(),
                    request["path"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// How many requests an audited server has received so far (one audit line each): cheap
    /// enough to ask between the benchmark's rows.
    pub fn request_count(&self) -> u64 {
        let log = std::fs::read_to_string(self.home.path().join("audit.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("\"type\":\"request\""))
            .count() as u64
    }

    /// The value of request header `name` in every request an audited server has received
    /// with it, as `(path, value)`, oldest first. The header must first be put in the audit
    /// log: `sys/config/auditing/request-headers/{name}`.
    pub fn request_headers(&self, name: &str) -> Vec<(String, String)> {
        let log = std::fs::read_to_string(self.home.path().join("audit.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["type"] == "request")
            .filter_map(|entry| {
                let request = &entry["request"];
                let value = request["headers"][name][0].as_str()?.to_owned();
                Some((request["path"].as_str()?.to_owned(), value))
            })
            .collect()
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

impl Bao {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}
