//! A stateful stand-in for the parts of Auth0 the service uses, faithful to what
//! `docs/auth0-emulator.md` records of Auth0's behaviour (with sources): `/oauth/token` (form,
//! JSON or HTTP Basic; scopes enforced), `POST /api/v2/clients/{id}/rotate-secret`,
//! `GET /api/v2/clients/{id}`, `GET /api/v2/clients` (offset and checkpoint pages; `list.rs`),
//! Auth0's error bodies, `x-ratelimit-*` headers on every Management
//! API answer, one secret per client, a propagation window in which the previous secret
//! still works, and client credentials (keys and certificates of Private Key JWT and mTLS
//! clients; `credentials.rs`). State and set-up are here; the answers are in `routes.rs`.
//!
//! Tests and the local stack inspect and steer it through `/__emulator/*` (or the methods of
//! [`RunningEmulator`] in-process). Built only with the `emulator` feature: never part of the
//! production binary.

// Early returns carry whole HTTP answers; a test tool, not a hot path.
#![allow(clippy::result_large_err)]

mod credentials;
mod list;
mod routes;
mod seed;
mod token;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::{net::TcpListener, task::JoinHandle};

pub use credentials::{
    ASSERTION_TYPE, CredentialInspection, SEED_PRIVATE_KEY_PEM, SEED_PUBLIC_KEY_PEM,
};
pub use seed::{
    SeedClient, demo_clients, fleet_clients, m2m_client, m2m_key_client, pkjwt_client,
    random_client_id, regular_client,
};

/// Scopes that reveal a client's secret and keys on GET.
const KEY_SCOPES: [&str; 2] = ["read:client_keys", "read:client_credentials"];
const READ_SCOPES: [&str; 4] = [
    "read:clients",
    "read:client_keys",
    "read:client_credentials",
    "read:client_summary",
];
const SENSITIVE_FIELDS: [&str; 4] = [
    "client_secret",
    "encryption_key",
    "client_authentication_methods",
    "signing_keys",
];

/// The audience of the tenant's sample API, for applications' client-credentials tokens.
pub const CONSUMER_API: &str = "https://api.example.com/";

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Tenant domain; the token audience is `https://{domain}/api/v2/`.
    pub domain: String,
    /// Token bucket of the Management API: burst size and refill per second (a tenant with one
    /// bucket for everything: Free, Enterprise) ...
    pub rate_limit_burst: u32,
    pub rate_limit_per_second: u32,
    /// ... or a bucket per endpoint group (Essentials, Professional), in its place.
    pub rate_groups: Option<RateGroups>,
    /// Lifetime of issued Management API tokens.
    pub token_lifetime: Duration,
    /// How long the previous secret is still accepted at /oauth/token after a rotation (0-30 s).
    pub propagation_window: Duration,
    /// Status of the refusal to rotate a private_key_jwt/mTLS client (unconfirmed at Auth0).
    pub secretless_refusal_status: u16,
    /// Audiences of the tenant's own APIs: any client with the client_credentials grant type
    /// gets a token for them with its secret (what the applications whose secrets are rotated
    /// do all day).
    pub apis: Vec<String>,
}

impl EmulatorConfig {
    /// The limit of the bucket `group`'s requests are counted in.
    fn bucket(&self, group: Group) -> BucketLimit {
        match (self.rate_groups, group) {
            (Some(groups), Group::ClientsRead) => groups.clients_read,
            (Some(groups), Group::Other) => groups.other,
            (None, _) => BucketLimit {
                burst: self.rate_limit_burst,
                per_minute: self.rate_limit_per_second.saturating_mul(60),
            },
        }
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            domain: "emulator.auth0.local".into(),
            // Enterprise production tenant limits.
            rate_limit_burst: 50,
            rate_limit_per_second: 16,
            rate_groups: None,
            token_lifetime: Duration::from_secs(86_400),
            propagation_window: Duration::from_secs(0),
            secretless_refusal_status: 400,
            apis: vec![CONSUMER_API.into()],
        }
    }
}

/// A token bucket's size and refill, as Auth0's plan pages publish them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketLimit {
    pub burst: u32,
    pub per_minute: u32,
}

/// The buckets of a plan that limits reading clients apart from every other endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateGroups {
    /// `GET /api/v2/clients` and `GET /api/v2/clients/{id}`.
    pub clients_read: BucketLimit,
    /// Every other Management API endpoint, combined.
    pub other: BucketLimit,
}

impl RateGroups {
    /// Essentials and Professional: "Read Clients" 5 burst, 100 a minute; all other endpoints
    /// combined 10 burst, 150 a minute (docs/auth0-emulator.md cites the pages).
    pub const ESSENTIALS: Self = Self {
        clients_read: BucketLimit {
            burst: 5,
            per_minute: 100,
        },
        other: BucketLimit {
            burst: 10,
            per_minute: 150,
        },
    };
}

/// The endpoint group a Management API route's requests are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    ClientsRead,
    Other,
}

/// One scripted misbehaviour of the next secret change (rotate-secret, or a PATCH of
/// client_secret).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RotateFault {
    /// Status to answer with (e.g. 502). 200 is a slow Auth0: it rotates at once and answers
    /// normally after `delay_ms`, which holds a rotation between Auth0 and Vault from outside.
    pub status: u16,
    /// Whether the rotation happens anyway (the answer is lost after Auth0 committed).
    #[serde(default)]
    pub commit: bool,
    /// Delay before answering, to provoke client timeouts or hold a rotation mid-way.
    #[serde(default)]
    pub delay_ms: u64,
}

/// A step of a key rotation whose answer can be held ([`Hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldStep {
    /// `POST .../credentials`.
    CreateCredential,
    /// `PATCH /api/v2/clients/{id}` with `client_authentication_methods` (attach or detach).
    ChangeMethods,
    /// A client assertion at `/oauth/token` for the Management API (the service's check that
    /// Auth0 accepts a new key; consumers ask for their own APIs and are never held).
    Verify,
    /// `DELETE .../credentials/{id}`.
    DeleteCredential,
}

/// The next request of `step` is done at once and answered after `delay_ms`, which holds a key
/// rotation at that step from outside (a test kills the service meanwhile).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    pub step: HeldStep,
    pub delay_ms: u64,
}

/// Faults to inject, appended by `POST /__emulator/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub rotate: Vec<RotateFault>,
    #[serde(default)]
    pub holds: Vec<Hold>,
    /// The next N Management API calls are answered 429 as if the bucket were empty.
    #[serde(default)]
    pub rate_limited: u32,
    /// The next N Management API token requests are refused 401 after the client
    /// authenticated, as Auth0 refuses a credential it does not accept (yet): a
    /// self-rotation's proof of its new credential fails.
    #[serde(default)]
    pub refused_tokens: u32,
}

/// Call counters, as `GET /__emulator/stats` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every request outside /__emulator, known route or not.
    pub requests: u64,
    pub token_requests: u64,
    pub rotate_requests: u64,
    /// Rotations that committed (a new secret was issued).
    pub rotations: u64,
    pub get_requests: u64,
    pub patch_requests: u64,
    /// `GET /api/v2/clients` requests, and the client secrets their answers carried (only a
    /// token with `read:client_keys` that did not leave `client_secret` out gets any).
    pub list_requests: u64,
    pub listed_secrets: u64,
    /// Management API requests answered 429 (the bucket was dry, or a `rate_limited` fault).
    pub rate_limited: u64,
    /// Client-credentials tokens issued to applications for the tenant's own APIs.
    pub api_tokens: u64,
    /// Client-credentials requests for those APIs refused for a wrong secret.
    pub api_tokens_refused: u64,
    /// Requests to `/api/v2/clients/{id}/credentials[/{credential}]`.
    #[serde(default)]
    pub credential_requests: u64,
    /// Client authentications by a Private Key JWT assertion or an mTLS certificate: accepted
    /// and refused.
    #[serde(default)]
    pub key_authentications: u64,
    #[serde(default)]
    pub key_authentications_refused: u64,
    /// Requests held by a [`Hold`] (counted when they arrive).
    #[serde(default)]
    pub held: u64,
}

/// A client as `GET /__emulator/clients/{id}` reports it: the live secret included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInspection {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub rotations: u64,
    /// Every secret the client has had, oldest first.
    pub issued_secrets: Vec<String>,
}

struct Client {
    /// The Client object as Auth0 would return it, without `client_secret`.
    doc: Map<String, Value>,
    secret: Option<String>,
    /// The secret before the last rotation and until when it is still accepted.
    previous: Option<(String, Instant)>,
    rotations: u64,
    issued: Vec<String>,
    /// Scopes of this client's grant on the Management API, if it has one.
    grant_scopes: Option<Vec<String>>,
    /// Its credentials (public keys, certificates), attached or not (`credentials.rs`).
    credentials: Vec<credentials::Credential>,
}

struct IssuedToken {
    scopes: Vec<String>,
    expires_at: Instant,
}

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    fn full(limit: BucketLimit) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            refilled_at: Instant::now(),
        }
    }
}

struct Inner {
    config: EmulatorConfig,
    clients: HashMap<String, Client>,
    tokens: HashMap<String, IssuedToken>,
    /// The one bucket (or every other endpoint's), and reading clients' when it has its own.
    buckets: [Bucket; 2],
    faults: Faults,
    rotate_faults: VecDeque<RotateFault>,
    holds: Vec<Hold>,
    stats: Stats,
    /// The `traceparent` headers of the last Management API and token requests.
    traceparents: VecDeque<String>,
    /// `{client_id}:{jti}` of every client assertion accepted: each is single-use.
    assertion_ids: HashSet<String>,
}

type Shared = Arc<Mutex<Inner>>;

/// A hold taken for a request: its answer waits this long (`routes::wait_held`).
#[derive(Debug, Clone, Copy)]
struct Held(u64);

/// `response`, held for `delay_ms` when a hold was taken for it.
fn held(mut response: axum::response::Response, delay_ms: Option<u64>) -> axum::response::Response {
    if let Some(ms) = delay_ms {
        response.extensions_mut().insert(Held(ms));
    }
    response
}

/// An emulator being set up; [`Emulator::start`] serves it.
pub struct Emulator {
    inner: Shared,
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        let full = |group| Bucket::full(config.bucket(group));
        let buckets = [full(Group::Other), full(Group::ClientsRead)];
        Self {
            inner: Arc::new(Mutex::new(Inner {
                config,
                clients: HashMap::new(),
                tokens: HashMap::new(),
                buckets,
                faults: Faults::default(),
                rotate_faults: VecDeque::new(),
                holds: Vec::new(),
                stats: Stats::default(),
                traceparents: VecDeque::new(),
                assertion_ids: HashSet::new(),
            })),
        }
    }

    pub fn with_client(self, seed: SeedClient) -> Self {
        add_client(&self.inner, seed);
        self
    }

    pub fn router(&self) -> Router {
        routes::router(Arc::clone(&self.inner))
    }

    /// Serves HTTPS on `listener` with `tls`, in a background task (to test CA handling).
    pub fn start_tls(
        self,
        listener: TcpListener,
        tls: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> RunningEmulator {
        use hyper_util::{
            rt::{TokioExecutor, TokioIo},
            server::conn::auto::Builder,
            service::TowerToHyperService,
        };
        let addr = listener.local_addr().expect("bound listener");
        let router = self.router();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    // A client that does not trust us ends the handshake: nothing to serve.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = TowerToHyperService::new(router);
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RunningEmulator {
            addr,
            inner: self.inner,
            task,
            scheme: "https",
        }
    }

    /// Serves on `listener` in a background task.
    pub fn start(self, listener: TcpListener) -> RunningEmulator {
        let addr = listener.local_addr().expect("bound listener");
        let router = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.ok();
        });
        RunningEmulator {
            addr,
            inner: self.inner,
            task,
            scheme: "http",
        }
    }
}

/// A serving emulator. Dropping it stops the server.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    inner: Shared,
    task: JoinHandle<()>,
    scheme: &'static str,
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunningEmulator {
    /// `http://127.0.0.1:port`, or `https://localhost:port` when serving TLS (the name the
    /// test certificates carry).
    pub fn base_url(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}", self.addr.port()),
            _ => format!("http://{}", self.addr),
        }
    }

    pub fn domain(&self) -> String {
        lock(&self.inner).config.domain.clone()
    }

    pub fn add_client(&self, seed: SeedClient) {
        add_client(&self.inner, seed);
    }

    /// Changes the plan's bucket layout (a benchmark fills a tenant unthrottled first); the
    /// buckets start full.
    pub fn set_rate_groups(&self, groups: Option<RateGroups>) {
        let mut inner = lock(&self.inner);
        inner.config.rate_groups = groups;
        let full = |group| Bucket::full(inner.config.bucket(group));
        inner.buckets = [full(Group::Other), full(Group::ClientsRead)];
    }

    pub fn client(&self, client_id: &str) -> Option<ClientInspection> {
        lock(&self.inner).inspect(client_id)
    }

    /// The secret Auth0 accepts for the client right now.
    pub fn live_secret(&self, client_id: &str) -> Option<String> {
        lock(&self.inner)
            .clients
            .get(client_id)
            .and_then(|c| c.secret.clone())
    }

    /// The W3C `traceparent` headers of the last requests (at most [`TRACEPARENTS_KEPT`]),
    /// oldest first: what a tracing backend behind Auth0 would see.
    pub fn traceparents(&self) -> Vec<String> {
        lock(&self.inner).traceparents.iter().cloned().collect()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.inner).stats
    }

    /// Rotates the client's secret as the dashboard's "Rotate" button does: outside the
    /// Management API (not counted in [`Stats`]) and outside the service. Returns the new
    /// secret, `None` for an unknown client.
    pub fn rotate_outside(&self, client_id: &str) -> Option<String> {
        let mut inner = lock(&self.inner);
        let fresh = routes::new_secret();
        inner.change_secret(client_id, fresh.clone())?;
        Some(fresh)
    }

    /// Every Management API access token issued so far (tests check none leaks).
    pub fn access_tokens(&self) -> Vec<String> {
        lock(&self.inner).tokens.keys().cloned().collect()
    }

    pub fn inject(&self, faults: Faults) {
        lock(&self.inner).add_faults(faults);
    }

    /// The client's credentials, attached or not; empty for an unknown client.
    pub fn credentials(&self, client_id: &str) -> Vec<CredentialInspection> {
        lock(&self.inner)
            .clients
            .get(client_id)
            .map(Client::inspect_credentials)
            .unwrap_or_default()
    }
}

/// How many `traceparent` headers the emulator keeps.
pub const TRACEPARENTS_KEPT: usize = 1000;

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

fn add_client(inner: &Shared, seed: SeedClient) {
    let SeedClient {
        mut doc,
        secret,
        grant_scopes,
    } = seed;
    let mut inner = lock(inner);
    let tenant = inner
        .config
        .domain
        .split('.')
        .next()
        .unwrap_or("tenant")
        .to_owned();
    doc.entry("tenant").or_insert(Value::String(tenant));
    let id = doc
        .get("client_id")
        .and_then(Value::as_str)
        .expect("seed clients have a client_id")
        .to_owned();
    doc.remove("client_secret");
    let mut client = Client {
        doc,
        issued: secret.iter().cloned().collect(),
        secret,
        previous: None,
        rotations: 0,
        grant_scopes,
        credentials: Vec::new(),
    };
    client.register_inline_credentials();
    inner.clients.insert(id, client);
}

impl Inner {
    /// Replaces the client's secret; the old one stays accepted for the propagation window.
    fn change_secret(&mut self, client_id: &str, fresh: String) -> Option<&mut Client> {
        let window = self.config.propagation_window;
        let client = self.clients.get_mut(client_id)?;
        client.issued.push(fresh.clone());
        let old = client.secret.replace(fresh);
        client.previous = old.map(|s| (s, Instant::now() + window));
        client.rotations += 1;
        Some(client)
    }

    fn inspect(&self, client_id: &str) -> Option<ClientInspection> {
        self.clients.get(client_id).map(|c| ClientInspection {
            client_id: client_id.to_owned(),
            client_secret: c.secret.clone(),
            rotations: c.rotations,
            issued_secrets: c.issued.clone(),
        })
    }

    fn add_faults(&mut self, faults: Faults) {
        self.faults.rate_limited += faults.rate_limited;
        self.faults.refused_tokens += faults.refused_tokens;
        self.rotate_faults.extend(faults.rotate);
        self.holds.extend(faults.holds);
    }

    /// The delay of the first hold of `step`, taken (and counted).
    fn take_hold(&mut self, step: HeldStep) -> Option<u64> {
        let at = self.holds.iter().position(|h| h.step == step)?;
        self.stats.held += 1;
        Some(self.holds.remove(at).delay_ms)
    }
}
