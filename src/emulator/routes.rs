//! The emulator's answers: admission (rate limit, token, scope), Auth0's error envelopes, and
//! the route handlers.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use rand::Rng;
use serde_json::{Value, json};

use super::{
    Faults, Group, KEY_SCOPES, READ_SCOPES, Shared, Stats, credentials,
    list::{FieldsQuery, list_clients, project},
    lock,
};

/// Every route: the Management API, the token endpoint, and the inspection routes.
pub(super) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/oauth/token", post(super::token::token))
        .route("/api/v2/clients/{id}/rotate-secret", post(rotate_secret))
        .route("/api/v2/clients", get(list_clients))
        .route("/api/v2/clients/{id}", get(get_client).patch(patch_client))
        .route(
            "/api/v2/clients/{id}/credentials",
            get(credentials::list).post(credentials::create),
        )
        .route(
            "/api/v2/clients/{id}/credentials/{credential}",
            get(credentials::get_one)
                .patch(credentials::update)
                .delete(credentials::delete),
        )
        .route("/__emulator/stats", get(inspect_stats))
        .route("/__emulator/clients/{id}", get(inspect_client))
        .route("/__emulator/faults", post(add_faults))
        .fallback(unknown_route)
        .layer(axum::middleware::map_response(wait_held))
        .with_state(shared)
}

/// Answers a held request only once its hold is over (`super::Hold`).
async fn wait_held(response: Response) -> Response {
    if let Some(super::Held(ms)) = response.extensions().get::<super::Held>().copied() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    response
}

impl super::Inner {
    /// Keeps the request's `traceparent`, if it has one.
    pub(super) fn record_trace(&mut self, headers: &HeaderMap) {
        if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
            if self.traceparents.len() == super::TRACEPARENTS_KEPT {
                self.traceparents.pop_front();
            }
            self.traceparents.push_back(tp.to_owned());
        }
    }

    /// Takes one request from `group`'s bucket; `Err` carries the 429 answer. Its headers
    /// describe that bucket, as Auth0's do.
    fn rate_limit(&mut self, group: Group) -> Result<RateHeaders, Response> {
        let limit = self.config.bucket(group);
        let burst = f64::from(limit.burst);
        let rate = f64::from(limit.per_minute.max(1)) / 60.0;
        let index = match (self.config.rate_groups, group) {
            (Some(_), Group::ClientsRead) => 1,
            _ => 0,
        };
        let bucket = &mut self.buckets[index];
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.refilled_at = now;
        let forced = self.faults.rate_limited > 0;
        if forced {
            self.faults.rate_limited -= 1;
        }
        if forced || bucket.tokens < 1.0 {
            let wait = if forced {
                3.0
            } else {
                (1.0 - bucket.tokens) / rate
            };
            self.stats.rate_limited += 1;
            let headers = RateHeaders {
                limit: limit.burst,
                remaining: 0,
                reset: epoch_secs_after(wait),
            };
            return Err(headers.apply(api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Global limit has been reached",
                Some("too_many_requests"),
            )));
        }
        bucket.tokens -= 1.0;
        let missing = burst - bucket.tokens;
        Ok(RateHeaders {
            limit: limit.burst,
            remaining: bucket.tokens.floor() as u32,
            reset: epoch_secs_after(missing / rate),
        })
    }

    /// What every Management API call goes through: counting, the rate limit of its endpoint
    /// `group`, the bearer token, and a scope check (any of `scopes`). `Err` carries the
    /// refusal.
    pub(super) fn admit(
        &mut self,
        headers: &HeaderMap,
        scopes: &[&str],
        group: Group,
    ) -> Result<(RateHeaders, Vec<String>), Response> {
        self.stats.requests += 1;
        self.record_trace(headers);
        let rate = self.rate_limit(group)?;
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

pub(super) struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset: u64,
}

impl RateHeaders {
    pub(super) fn apply(self, mut response: Response) -> Response {
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
        response
    }
}

/// The whole UNIX second by which `seconds` from now have passed.
fn epoch_secs_after(seconds: f64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    (now + seconds).ceil() as u64
}

pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The Management API error envelope.
pub(super) fn api_error(status: StatusCode, message: &str, error_code: Option<&str>) -> Response {
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

pub(super) fn new_secret() -> String {
    // 64 characters of [A-Za-z0-9_-], not base64-encoded, as Auth0 issues them.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::rng();
    (0..64)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

async fn rotate_secret(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (rate, fault) = {
        let mut inner = lock(&shared);
        inner.stats.rotate_requests += 1;
        let (rate, _) = match inner.admit(&headers, &["update:client_keys"], Group::Other) {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
        (rate, inner.rotate_faults.pop_front())
    };

    let commit = fault.as_ref().is_none_or(|f| f.commit || f.status == 200);
    let answer = if commit {
        rotate_committed(&shared, &id)
    } else {
        None
    };
    if let Some(fault) = fault {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        if fault.status != 200 {
            let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_GATEWAY);
            return rate.apply(api_error(status, "Injected fault", None));
        }
    }
    rate.apply(answer.unwrap_or_else(not_found))
}

/// Rotates and builds the 200 answer; `None` when the client does not exist.
fn rotate_committed(shared: &Shared, id: &str) -> Option<Response> {
    let mut inner = lock(shared);
    if let Some(refused) = secretless_refusal(&inner, id) {
        return Some(refused);
    }
    let client = inner.change_secret(id, new_secret())?;
    let body = client_with_secret(client);
    inner.stats.rotations += 1;
    Some(json_response(StatusCode::OK, body))
}

/// Auth0 refuses to give a secret to a private_key_jwt or mTLS client.
fn secretless_refusal(inner: &super::Inner, id: &str) -> Option<Response> {
    let client = inner.clients.get(id)?;
    let secretless = client
        .doc
        .get("client_authentication_methods")
        .is_some_and(|v| !v.is_null());
    secretless.then(|| {
        let refusal = inner.config.secretless_refusal_status;
        let status = StatusCode::from_u16(refusal).unwrap_or(StatusCode::BAD_REQUEST);
        api_error(
            status,
            "The client_secret cannot be rotated for clients configured with Private Key JWT or mTLS authentication methods",
            Some("operation_not_supported"),
        )
    })
}

fn client_with_secret(client: &super::Client) -> Value {
    let mut body = client.doc.clone();
    if let Some(secret) = &client.secret {
        body.insert("client_secret".into(), Value::String(secret.clone()));
    }
    Value::Object(body)
}

/// `PATCH /api/v2/clients/{id}`: `client_secret` (a custom secret, as a staged rotation sets
/// it) needs update:client_keys; other members need update:clients and are merged in.
/// Secret changes take the next injected fault, as rotations do.
async fn patch_client(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (rate, fault, hold, mut changes) = {
        let mut inner = lock(&shared);
        inner.stats.patch_requests += 1;
        let (rate, granted) = match inner.admit(
            &headers,
            &[
                "update:clients",
                "update:client_keys",
                "update:client_credentials",
            ],
            Group::Other,
        ) {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
        let Ok(Value::Object(mut changes)) = serde_json::from_slice::<Value>(&body) else {
            return rate.apply(api_error(
                StatusCode::BAD_REQUEST,
                "Payload validation error: 'Expected type object but found type null'.",
                Some("invalid_body"),
            ));
        };
        let secret = changes.get("client_secret").cloned();
        if secret.is_some() && !granted.iter().any(|s| s == "update:client_keys") {
            return rate.apply(api_error(
                StatusCode::FORBIDDEN,
                "Some fields cannot be updated with the permissions granted by the bearer token scopes. The message will vary depending on the fields and the scopes.",
                Some("insufficient_scope"),
            ));
        }
        match &secret {
            Some(Value::String(s)) if !s.is_empty() => {}
            None => {}
            Some(_) => {
                return rate.apply(api_error(
                    StatusCode::BAD_REQUEST,
                    "Payload validation error: 'String is too short (0 chars), minimum 1' on property client_secret.",
                    Some("invalid_body"),
                ));
            }
        }
        let Some(client) = inner.clients.get(&id) else {
            return rate.apply(not_found());
        };
        if let Some(methods) = changes.get("client_authentication_methods") {
            if !granted.iter().any(|s| s == "update:client_credentials") {
                return rate.apply(api_error(
                    StatusCode::FORBIDDEN,
                    "Some fields cannot be updated with the permissions granted by the bearer token scopes. The message will vary depending on the fields and the scopes.",
                    Some("insufficient_scope"),
                ));
            }
            if !methods.is_null()
                && changes
                    .get("token_endpoint_auth_method")
                    .is_some_and(|v| !v.is_null())
            {
                return rate.apply(api_error(
                    StatusCode::BAD_REQUEST,
                    "client_authentication_methods and token_endpoint_auth_method are mutually exclusive",
                    Some("invalid_body"),
                ));
            }
            match credentials::attachment(client, methods) {
                Ok(stored) => {
                    changes.insert("client_authentication_methods".into(), stored);
                }
                Err(refused) => return rate.apply(refused),
            }
        }
        if secret.is_some()
            && let Some(refused) = secretless_refusal(&inner, &id)
        {
            return rate.apply(refused);
        }
        let fault = match secret {
            Some(_) => inner.rotate_faults.pop_front(),
            None => None,
        };
        let hold = changes
            .contains_key("client_authentication_methods")
            .then(|| inner.take_hold(super::HeldStep::ChangeMethods))
            .flatten();
        changes.remove("client_id");
        (rate, fault, hold, changes)
    };
    let commit = fault.as_ref().is_none_or(|f| f.commit || f.status == 200);
    let answer = commit.then(|| {
        let mut inner = lock(&shared);
        if let Some(Value::String(secret)) = changes.remove("client_secret") {
            inner.change_secret(&id, secret);
        }
        let client = inner.clients.get_mut(&id)?;
        if changes.get("client_authentication_methods") == Some(&Value::Null) {
            changes.remove("client_authentication_methods");
            client.doc.remove("client_authentication_methods");
        }
        client.doc.extend(changes);
        Some(json_response(StatusCode::OK, client_with_secret(client)))
    });
    if let Some(fault) = fault {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        if fault.status != 200 {
            let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_GATEWAY);
            return rate.apply(api_error(status, "Injected fault", None));
        }
    }
    super::held(rate.apply(answer.flatten().unwrap_or_else(not_found)), hold)
}

async fn get_client(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<FieldsQuery>,
    headers: HeaderMap,
) -> Response {
    let mut inner = lock(&shared);
    inner.stats.get_requests += 1;
    let (rate, scopes) = match inner.admit(&headers, &READ_SCOPES, Group::ClientsRead) {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let may_read_keys = scopes.iter().any(|s| KEY_SCOPES.contains(&s.as_str()));
    let Some(client) = inner.clients.get(&id) else {
        return rate.apply(not_found());
    };
    match project(
        client.doc.clone(),
        client.secret.as_deref(),
        may_read_keys,
        &query,
    ) {
        Ok(doc) => rate.apply(json_response(StatusCode::OK, Value::Object(doc))),
        Err(refused) => rate.apply(refused),
    }
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
