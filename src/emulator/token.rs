//! `POST /oauth/token`: the client-credentials grant, for the service's Management API tokens
//! and for the applications' tokens to the tenant's own APIs. A client authenticates with its
//! secret (form, JSON or HTTP Basic), a client assertion or a forwarded certificate
//! (`credentials/authenticate.rs`).

use std::{collections::HashMap, time::Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use base64::Engine;
use rand::{Rng, distr::Alphanumeric};
use serde_json::{Map, Value, json};

use super::{IssuedToken, Shared, lock, routes::json_response};

/// The Authentication API error envelope.
pub(super) fn auth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn new_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(48)
        .map(char::from)
        .collect()
}

/// `POST /oauth/token`. A key rotation's verification (a client assertion for the Management
/// API) may be held after it is answered ([`super::HeldStep::Verify`]).
pub(super) async fn token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = lock(&shared);
    let verify = form_urlencoded::parse(&body).any(|(k, _)| k == "client_assertion")
        && form_urlencoded::parse(&body).any(|(k, v)| k == "audience" && v.ends_with("/api/v2/"));
    let hold = verify
        .then(|| inner.take_hold(super::HeldStep::Verify))
        .flatten();
    super::held(answer(&mut inner, &headers, &body), hold)
}

fn answer(inner: &mut super::Inner, headers: &HeaderMap, body: &Bytes) -> Response {
    inner.stats.requests += 1;
    inner.stats.token_requests += 1;
    inner.record_trace(headers);

    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut params: HashMap<String, String> = if is_json {
        match serde_json::from_slice::<Map<String, Value>>(body) {
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
        form_urlencoded::parse(body).into_owned().collect()
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
    let now = Instant::now();
    let by_key = if params.contains_key("client_assertion") {
        Some(inner.assertion_client(&params))
    } else if headers.contains_key("client-certificate") {
        let id = params.get("client_id").cloned().unwrap_or_default();
        Some(inner.certificate_client(headers, &id))
    } else {
        None
    };
    let client_id = match by_key {
        Some(Ok(client_id)) => {
            inner.stats.key_authentications += 1;
            client_id
        }
        Some(Err(refused)) => {
            inner.stats.key_authentications_refused += 1;
            return refused;
        }
        None => match secret_client(inner, &params, now) {
            Ok(client_id) => client_id,
            Err(refused) => return refused,
        },
    };
    let Some(client) = inner.clients.get(&client_id) else {
        return auth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    };
    let expected_audience = format!("https://{}/api/v2/", inner.config.domain);
    let audience = params.get("audience").cloned().unwrap_or_default();
    if inner.config.apis.contains(&audience) {
        return api_token(inner, &client_id, &audience);
    }
    if audience == expected_audience && inner.faults.refused_tokens > 0 {
        inner.faults.refused_tokens -= 1;
        return auth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    }
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

/// A client authentication by secret (form, JSON or HTTP Basic): the client, or the 401. A
/// client that authenticates with keys or certificates has no secret to present.
fn secret_client(
    inner: &mut super::Inner,
    params: &HashMap<String, String>,
    now: Instant,
) -> Result<String, Response> {
    let client_id = params.get("client_id").cloned().unwrap_or_default();
    let presented = params.get("client_secret").cloned().unwrap_or_default();
    let accepted = inner.clients.get(&client_id).is_some_and(|client| {
        let keyed = client
            .doc
            .get("client_authentication_methods")
            .is_some_and(|v| !v.is_null());
        let current = client.secret.as_deref() == Some(presented.as_str());
        let previous = client
            .previous
            .as_ref()
            .is_some_and(|(old, until)| *old == presented && now < *until);
        !keyed && !presented.is_empty() && (current || previous)
    });
    if accepted {
        return Ok(client_id);
    }
    if params
        .get("audience")
        .is_some_and(|a| inner.config.apis.contains(a))
    {
        inner.stats.api_tokens_refused += 1;
    }
    Err(auth_error(
        StatusCode::UNAUTHORIZED,
        "access_denied",
        "Unauthorized",
    ))
}

/// A client-credentials token for one of the tenant's own APIs, for any client allowed the
/// grant type. Not a Management API token: it is not kept, so the Management API refuses it.
fn api_token(inner: &mut super::Inner, client_id: &str, audience: &str) -> Response {
    let allowed = inner.clients.get(client_id).is_some_and(|c| {
        c.doc
            .get("grant_types")
            .and_then(Value::as_array)
            .is_some_and(|g| g.iter().any(|t| t == "client_credentials"))
    });
    if !allowed {
        return auth_error(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            "Grant type 'client_credentials' not allowed for the client.",
        );
    }
    inner.stats.api_tokens += 1;
    json_response(
        StatusCode::OK,
        json!({
            "access_token": new_token(),
            "expires_in": inner.config.token_lifetime.as_secs(),
            "token_type": "Bearer",
            "audience": audience,
        }),
    )
}
