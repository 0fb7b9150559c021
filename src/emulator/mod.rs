//! A stateful stand-in for the parts of Auth0 the service uses, faithful to
//! `shared/reference/auth0-management-api.md` section 9: `/oauth/token` (form, JSON or HTTP
//! Basic; scopes enforced), `POST /api/v2/clients/{id}/rotate-secret`, `GET /api/v2/clients/{id}`,
//! Auth0's error bodies, `x-ratelimit-*` headers on every Management API answer, one secret per
//! client, and a propagation window in which the previous secret still works.
//!
//! Tests and the local stack inspect and steer it through `/__emulator/*` (or the methods of
//! [`RunningEmulator`] in-process). Built only with the `emulator` feature: never part of the
//! production binary.

// Early returns carry whole HTTP answers; a test tool, not a hot path.
#![allow(clippy::result_large_err)]

mod seed;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use rand::{Rng, distr::Alphanumeric};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

pub use seed::{
    SeedClient, demo_clients, m2m_client, pkjwt_client, random_client_id, regular_client,
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

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Tenant domain; the token audience is `https://{domain}/api/v2/`.
    pub domain: String,
    /// Token bucket of the Management API: burst size and refill per second.
    pub rate_limit_burst: u32,
    pub rate_limit_per_second: u32,
    /// Lifetime of issued Management API tokens.
    pub token_lifetime: Duration,
    /// How long the previous secret is still accepted at /oauth/token after a rotation (0-30 s).
    pub propagation_window: Duration,
    /// Status of the refusal to rotate a private_key_jwt/mTLS client (unconfirmed at Auth0).
    pub secretless_refusal_status: u16,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            domain: "emulator.auth0.local".into(),
            // Enterprise production tenant limits.
            rate_limit_burst: 50,
            rate_limit_per_second: 16,
            token_lifetime: Duration::from_secs(86_400),
            propagation_window: Duration::from_secs(0),
            secretless_refusal_status: 400,
        }
    }
}

/// One scripted misbehaviour of the next rotate-secret call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RotateFault {
    /// Status to answer with (e.g. 502).
    pub status: u16,
    /// Whether the rotation happens anyway (the answer is lost after Auth0 committed).
    #[serde(default)]
    pub commit: bool,
    /// Delay before answering, to provoke client timeouts.
    #[serde(default)]
    pub delay_ms: u64,
}

/// Faults to inject, appended by `POST /__emulator/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub rotate: Vec<RotateFault>,
    /// The next N Management API calls are answered 429 as if the bucket were empty.
    #[serde(default)]
    pub rate_limited: u32,
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
}

struct IssuedToken {
    scopes: Vec<String>,
    expires_at: Instant,
}

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

struct Inner {
    config: EmulatorConfig,
    clients: HashMap<String, Client>,
    tokens: HashMap<String, IssuedToken>,
    bucket: Bucket,
    faults: Faults,
    rotate_faults: VecDeque<RotateFault>,
    stats: Stats,
}

type Shared = Arc<Mutex<Inner>>;

/// An emulator being set up; [`Emulator::start`] serves it.
pub struct Emulator {
    inner: Shared,
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        let burst = f64::from(config.rate_limit_burst);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                config,
                clients: HashMap::new(),
                tokens: HashMap::new(),
                bucket: Bucket {
                    tokens: burst,
                    refilled_at: Instant::now(),
                },
                faults: Faults::default(),
                rotate_faults: VecDeque::new(),
                stats: Stats::default(),
            })),
        }
    }

    pub fn with_client(self, seed: SeedClient) -> Self {
        add_client(&self.inner, seed);
        self
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/oauth/token", post(token))
            .route("/api/v2/clients/{id}/rotate-secret", post(rotate_secret))
            .route("/api/v2/clients/{id}", get(get_client))
            .route("/__emulator/stats", get(inspect_stats))
            .route("/__emulator/clients/{id}", get(inspect_client))
            .route("/__emulator/faults", post(add_faults))
            .fallback(unknown_route)
            .with_state(Arc::clone(&self.inner))
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

    pub fn stats(&self) -> Stats {
        lock(&self.inner).stats
    }

    /// Every Management API access token issued so far (tests check none leaks).
    pub fn access_tokens(&self) -> Vec<String> {
        lock(&self.inner).tokens.keys().cloned().collect()
    }

    pub fn inject(&self, faults: Faults) {
        lock(&self.inner).add_faults(faults);
    }
}

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
    inner.clients.insert(
        id,
        Client {
            doc,
            issued: secret.iter().cloned().collect(),
            secret,
            previous: None,
            rotations: 0,
            grant_scopes,
        },
    );
}

impl Inner {
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
        self.rotate_faults.extend(faults.rotate);
    }

    /// Takes one request from the bucket; `Err` carries the 429 answer.
    fn rate_limit(&mut self) -> Result<RateHeaders, Response> {
        let burst = f64::from(self.config.rate_limit_burst);
        let rate = f64::from(self.config.rate_limit_per_second.max(1));
        let now = Instant::now();
        let elapsed = now.duration_since(self.bucket.refilled_at).as_secs_f64();
        self.bucket.tokens = (self.bucket.tokens + elapsed * rate).min(burst);
        self.bucket.refilled_at = now;
        let forced = self.faults.rate_limited > 0;
        if forced {
            self.faults.rate_limited -= 1;
        }
        if forced || self.bucket.tokens < 1.0 {
            let wait = if forced {
                3.0
            } else {
                (1.0 - self.bucket.tokens) / rate
            };
            let headers = RateHeaders {
                limit: self.config.rate_limit_burst,
                remaining: 0,
                reset: epoch_secs() + wait.ceil() as u64,
            };
            return Err(headers.apply(api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Global limit has been reached",
                Some("too_many_requests"),
            )));
        }
        self.bucket.tokens -= 1.0;
        let missing = burst - self.bucket.tokens;
        Ok(RateHeaders {
            limit: self.config.rate_limit_burst,
            remaining: self.bucket.tokens.floor() as u32,
            reset: epoch_secs() + (missing / rate).ceil() as u64,
        })
    }

    /// What every Management API call goes through: counting, the rate limit, the bearer token,
    /// and a scope check (any of `scopes`). `Err` carries the refusal.
    fn admit(
        &mut self,
        headers: &HeaderMap,
        scopes: &[&str],
    ) -> Result<(RateHeaders, Vec<String>), Response> {
        self.stats.requests += 1;
        let rate = self.rate_limit()?;
        let granted = match self.authenticate(headers) {
            Ok(granted) => granted,
            Err(denied) => return Err(rate.apply(denied)),
        };
        if !granted.iter().any(|s| scopes.contains(&s.as_str())) {
            return Err(rate.apply(insufficient_scope(scopes)));
        }
        Ok((rate, granted))
    }

    /// Scopes of a valid bearer token; `Err` carries the 401 answer.
    fn authenticate(&mut self, headers: &HeaderMap) -> Result<Vec<String>, Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        match self.tokens.get(token) {
            Some(t) if Instant::now() < t.expires_at => Ok(t.scopes.clone()),
            Some(_) => Err(unauthorized(
                "Expired token received for JSON Web Token validation",
            )),
            None => Err(unauthorized("Invalid token")),
        }
    }
}

struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset: u64,
}

impl RateHeaders {
    fn apply(self, mut response: Response) -> Response {
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
        response
    }
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The Management API error envelope.
fn api_error(status: StatusCode, message: &str, error_code: Option<&str>) -> Response {
    let mut body = json!({
        "statusCode": status.as_u16(),
        "error": status.canonical_reason().unwrap_or(""),
        "message": message,
    });
    if let Some(code) = error_code {
        body["errorCode"] = Value::String(code.into());
    }
    json_response(status, body)
}

fn unauthorized(message: &str) -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        json!({"statusCode": 401, "error": "Unauthorized", "message": message, "attributes": {"error": message}}),
    )
}

/// The Authentication API error envelope.
fn auth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn insufficient_scope(expected: &[&str]) -> Response {
    api_error(
        StatusCode::FORBIDDEN,
        &format!(
            "Insufficient scope, expected any of: {}",
            expected.join(",")
        ),
        Some("insufficient_scope"),
    )
}

fn not_found() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "The client does not exist",
        Some("inexistent_client"),
    )
}

fn new_secret() -> String {
    // 64 characters of [A-Za-z0-9_-], not base64-encoded, as Auth0 issues them.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::rng();
    (0..64)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn new_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(48)
        .map(char::from)
        .collect()
}

async fn token(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut inner = lock(&inner);
    inner.stats.requests += 1;
    inner.stats.token_requests += 1;

    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut params: HashMap<String, String> = if is_json {
        match serde_json::from_slice::<Map<String, Value>>(&body) {
            Ok(map) => map
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
                .collect(),
            Err(_) => {
                return auth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Invalid JSON body",
                );
            }
        }
    } else {
        form_urlencoded::parse(&body).into_owned().collect()
    };
    // client_secret_basic
    if let Some((id, secret)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())))
    {
        params.insert("client_id".into(), id);
        params.insert("client_secret".into(), secret);
    }

    if params.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return auth_error(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            "Grant type not allowed for the client.",
        );
    }
    let client_id = params.get("client_id").cloned().unwrap_or_default();
    let presented = params.get("client_secret").cloned().unwrap_or_default();
    let now = Instant::now();
    let Some(client) = inner.clients.get(&client_id) else {
        return auth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    };
    let current_ok = client.secret.as_deref() == Some(presented.as_str()) && !presented.is_empty();
    let previous_ok = client
        .previous
        .as_ref()
        .is_some_and(|(old, until)| *old == presented && now < *until);
    if !(current_ok || previous_ok) {
        return auth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    }
    let expected_audience = format!("https://{}/api/v2/", inner.config.domain);
    let audience = params.get("audience").cloned().unwrap_or_default();
    if audience != expected_audience {
        return auth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            &format!("Service not enabled within domain: {audience}"),
        );
    }
    let Some(scopes) = client.grant_scopes.clone() else {
        return auth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            &format!(
                "Client is not authorized to access \"{audience}\". You need to create a \"client-grant\" associated to this API."
            ),
        );
    };
    let access_token = new_token();
    let lifetime = inner.config.token_lifetime;
    inner.tokens.insert(
        access_token.clone(),
        IssuedToken {
            scopes: scopes.clone(),
            expires_at: now + lifetime,
        },
    );
    json_response(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "expires_in": lifetime.as_secs(),
            "scope": scopes.join(" "),
            "token_type": "Bearer",
        }),
    )
}

async fn rotate_secret(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (rate, fault) = {
        let mut inner = lock(&shared);
        inner.stats.rotate_requests += 1;
        let (rate, _) = match inner.admit(&headers, &["update:client_keys"]) {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
        (rate, inner.rotate_faults.pop_front())
    };

    let commit = fault.as_ref().is_none_or(|f| f.commit);
    let answer = if commit {
        rotate_committed(&shared, &id)
    } else {
        None
    };
    if let Some(fault) = fault {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_GATEWAY);
        return rate.apply(api_error(status, "Injected fault", None));
    }
    rate.apply(answer.unwrap_or_else(not_found))
}

/// Rotates and builds the 200 answer; `None` when the client does not exist.
fn rotate_committed(shared: &Shared, id: &str) -> Option<Response> {
    let mut inner = lock(shared);
    let window = inner.config.propagation_window;
    let refusal = inner.config.secretless_refusal_status;
    let client = inner.clients.get_mut(id)?;
    if client
        .doc
        .get("client_authentication_methods")
        .is_some_and(|v| !v.is_null())
    {
        let status = StatusCode::from_u16(refusal).unwrap_or(StatusCode::BAD_REQUEST);
        return Some(api_error(
            status,
            "The client_secret cannot be rotated for clients configured with Private Key JWT or mTLS authentication methods",
            Some("operation_not_supported"),
        ));
    }
    let fresh = new_secret();
    client.issued.push(fresh.clone());
    let old = client.secret.replace(fresh.clone());
    client.previous = old.map(|s| (s, Instant::now() + window));
    client.rotations += 1;
    let mut body = client.doc.clone();
    body.insert("client_secret".into(), Value::String(fresh));
    inner.stats.rotations += 1;
    Some(json_response(StatusCode::OK, Value::Object(body)))
}

#[derive(Deserialize)]
struct FieldsQuery {
    fields: Option<String>,
    include_fields: Option<bool>,
}

async fn get_client(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<FieldsQuery>,
    headers: HeaderMap,
) -> Response {
    let mut inner = lock(&shared);
    inner.stats.get_requests += 1;
    let (rate, scopes) = match inner.admit(&headers, &READ_SCOPES) {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let may_read_keys = scopes.iter().any(|s| KEY_SCOPES.contains(&s.as_str()));
    let Some(client) = inner.clients.get(&id) else {
        return rate.apply(not_found());
    };
    let mut doc = client.doc.clone();
    if let Some(secret) = &client.secret {
        doc.insert("client_secret".into(), Value::String(secret.clone()));
    }
    let requested: Vec<&str> = query
        .fields
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    let include = query.include_fields.unwrap_or(true);
    if !may_read_keys {
        let denied: Vec<&str> = requested
            .iter()
            .copied()
            .filter(|f| include && SENSITIVE_FIELDS.contains(f))
            .collect();
        if !denied.is_empty() {
            return rate.apply(api_error(
                StatusCode::FORBIDDEN,
                &format!("You cannot read the following fields: {}", denied.join(",")),
                Some("insufficient_scope"),
            ));
        }
        for field in SENSITIVE_FIELDS {
            doc.remove(field);
        }
    }
    if !requested.is_empty() {
        // `tenant` is always returned, whatever the filter.
        doc.retain(|k, _| k == "tenant" || requested.contains(&k.as_str()) == include);
    }
    rate.apply(json_response(StatusCode::OK, Value::Object(doc)))
}

async fn unknown_route(State(shared): State<Shared>) -> Response {
    lock(&shared).stats.requests += 1;
    api_error(StatusCode::NOT_FOUND, "Not Found", None)
}

async fn inspect_stats(State(shared): State<Shared>) -> Json<Stats> {
    Json(lock(&shared).stats)
}

async fn inspect_client(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    match lock(&shared).inspect(&id) {
        Some(c) => Json(c).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn add_faults(State(shared): State<Shared>, Json(faults): Json<Faults>) -> StatusCode {
    lock(&shared).add_faults(faults);
    StatusCode::NO_CONTENT
}
