//! The ways one rotation is done, each timed from the caller's side: through the service
//! (RotateSecret over gRPC), the floor (one rotate-secret call and one KV write, made directly),
//! the durable floor (the same plus the ledger writes the protocol needs, made directly), and
//! the Python peer (requests + hvac, in its own process).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use secret_rotator::proto::{
    RotateSecretRequest, secret_rotation_service_client::SecretRotationServiceClient,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// What one run of `count` rotations at one concurrency took.
pub struct Run {
    pub latencies: Vec<Duration>,
    pub wall: Duration,
}

/// Splits `count` rotations over `concurrency` workers; worker `w` rotates clients
/// `w, w + concurrency, ...` so that no two workers rotate one client at once.
pub async fn drive<F, Fut>(clients: &[String], concurrency: usize, count: usize, one: F) -> Run
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let jobs = count / concurrency + usize::from(w < count % concurrency);
        let mine: Vec<String> = clients
            .iter()
            .skip(w)
            .step_by(concurrency)
            .cloned()
            .collect();
        let mine = if mine.is_empty() {
            clients.to_vec()
        } else {
            mine
        };
        let one = one.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(jobs);
            for n in 0..jobs {
                let id = mine[n % mine.len()].clone();
                let t = Instant::now();
                one(id).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    Run {
        latencies,
        wall: started.elapsed(),
    }
}

/// RotateSecret through the service, over one HTTP/2 connection shared by every worker.
pub async fn service(addr: &str, clients: &[String], concurrency: usize, count: usize) -> Run {
    let channel = Channel::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
        .expect("connect to the service");
    let client = SecretRotationServiceClient::new(channel);
    drive(clients, concurrency, count, move |id| {
        let mut client = client.clone();
        async move {
            client
                .rotate_secret(RotateSecretRequest {
                    client_id: id,
                    ..Default::default()
                })
                .await
                .expect("the rotation succeeds");
        }
    })
    .await
}

/// Direct calls to Auth0 and Vault with one pooled HTTP client, as the service makes them.
#[derive(Clone)]
pub struct Direct {
    http: reqwest::Client,
    auth0: String,
    bearer: String,
    vault: String,
    vault_token: String,
    /// KV versions of the durable floor's keys, as its own writes left them.
    versions: Arc<Mutex<HashMap<String, u64>>>,
}

impl Direct {
    pub async fn new(
        auth0: &str,
        domain: &str,
        m2m: &str,
        m2m_secret: &str,
        vault: &str,
        vault_token: &str,
    ) -> Self {
        let http = reqwest::Client::new();
        let token: Value = http
            .post(format!("{auth0}/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", m2m),
                ("client_secret", m2m_secret),
                ("audience", &format!("https://{domain}/api/v2/")),
            ])
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("a token")
            .json()
            .await
            .expect("a token answer");
        Self {
            http,
            auth0: auth0.to_owned(),
            bearer: token["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            vault: vault.to_owned(),
            vault_token: vault_token.to_owned(),
            versions: Arc::default(),
        }
    }

    async fn rotate_at_auth0(&self, id: &str) -> String {
        let answer: Value = self
            .http
            .post(format!("{}/api/v2/clients/{id}/rotate-secret", self.auth0))
            .bearer_auth(&self.bearer)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("rotate-secret")
            .json()
            .await
            .expect("a rotate-secret answer");
        answer["client_secret"]
            .as_str()
            .expect("client_secret")
            .to_owned()
    }

    /// One KV v2 write, check-and-set when `cas` is given; returns the new version.
    async fn write(&self, path: &str, data: Value, cas: Option<u64>) -> u64 {
        let body = match cas {
            Some(cas) => json!({"options": {"cas": cas}, "data": data}),
            None => json!({ "data": data }),
        };
        let answer: Value = self
            .http
            .post(format!("{}/v1/secret/data/{path}", self.vault))
            .header("X-Vault-Token", &self.vault_token)
            .json(&body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("a KV write")
            .json()
            .await
            .expect("a KV answer");
        answer["data"]["version"].as_u64().expect("version")
    }

    /// The floor: one rotate-secret call, one KV write.
    pub async fn floor(&self, id: String) {
        let secret = self.rotate_at_auth0(&id).await;
        self.write(
            &format!("floor/{id}"),
            json!({"client_id": id, "client_secret": secret}),
            None,
        )
        .await;
    }

    /// The durable floor: lease and intent, rotate-secret, the secret, close: three KV writes,
    /// each check-and-set against the version the previous one left.
    pub async fn durable_floor(&self, id: String) {
        let ledger = format!("durable/ledger/{id}");
        let key = format!("durable/secrets/{id}");
        let (ledger_v, key_v) = {
            let versions = self.versions.lock().await;
            (
                versions.get(&ledger).copied().unwrap_or(0),
                versions.get(&key).copied().unwrap_or(0),
            )
        };
        let intent = json!({"lease": {"holder": "floor", "expires_at_ms": 0},
            "intent": {"rotation_id": "00000000-0000-0000-0000-000000000000"}});
        let fence = self.write(&ledger, intent, Some(ledger_v)).await;
        let secret = self.rotate_at_auth0(&id).await;
        let key_v = self
            .write(
                &key,
                json!({"client_id": id, "client_secret": secret}),
                Some(key_v),
            )
            .await;
        let closed = json!({"lease": null, "intent": null, "last": {"kv_version": key_v}});
        let ledger_v = self.write(&ledger, closed, Some(fence)).await;
        let mut versions = self.versions.lock().await;
        versions.insert(ledger, ledger_v);
        versions.insert(key, key_v);
    }
}

/// What the Python peer reported.
pub struct PeerRun {
    pub run: Run,
    pub cpu: Duration,
}

/// Runs the Python peer (`peer.py`) with the project's `.tools/venv` Python.
pub fn python_peer(
    env: &[(&str, String)],
    clients: &[String],
    concurrency: usize,
    count: usize,
    warmup: usize,
) -> PeerRun {
    let repo = super::support::repo();
    let out = std::process::Command::new(repo.join(".tools/venv/bin/python"))
        .arg(repo.join("benches/rotation/peer.py"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PEER_CLIENTS", clients.join(","))
        .env("PEER_CONCURRENCY", concurrency.to_string())
        .env("PEER_COUNT", count.to_string())
        .env("PEER_WARMUP", warmup.to_string())
        .output()
        .expect("run the Python peer: scripts/bench.sh installs requests and hvac");
    assert!(
        out.status.success(),
        "the Python peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the peer's JSON");
    let secs = |v: &Value| Duration::from_secs_f64(v.as_f64().unwrap_or(0.0));
    PeerRun {
        run: Run {
            latencies: report["latencies"]
                .as_array()
                .expect("latencies")
                .iter()
                .map(secs)
                .collect(),
            wall: secs(&report["wall_seconds"]),
        },
        cpu: secs(&report["cpu_seconds"]),
    }
}
