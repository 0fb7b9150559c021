//! The Management API's credentials routes: `POST`, `GET /api/v2/clients/{id}/credentials`,
//! `GET`, `PATCH`, `DELETE .../credentials/{credential}`.

use std::time::SystemTime;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::Value;

use super::{Credential, POOL_MAX, client_not_found, credential_not_found, invalid};
use crate::emulator::{
    HeldStep, Inner, Shared, held, lock,
    routes::{RateHeaders, api_error, json_response},
};

/// Counts a credentials request and admits it with `scope`: the emulator's state, locked, and
/// the rate-limit headers every answer carries.
fn admit<'a>(
    shared: &'a Shared,
    headers: &HeaderMap,
    scope: &str,
) -> Result<(std::sync::MutexGuard<'a, Inner>, RateHeaders), Response> {
    let mut inner = lock(shared);
    inner.stats.credential_requests += 1;
    let (rate, _) = inner.admit(headers, &[scope], crate::emulator::Group::Other)?;
    Ok((inner, rate))
}

pub(in crate::emulator) async fn create(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (mut inner, rate) = match admit(&shared, &headers, "create:client_credentials") {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let Ok(body @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return rate.apply(invalid("Expected type object but found type null"));
    };
    let credential = match Credential::parse(&body, SystemTime::now()) {
        Ok(credential) => credential,
        Err(refused) => return rate.apply(refused),
    };
    let Some(client) = inner.clients.get_mut(&id) else {
        return rate.apply(client_not_found());
    };
    if client.credentials.len() >= POOL_MAX {
        return rate.apply(api_error(
            StatusCode::BAD_REQUEST,
            "A client can have a maximum of 4 credentials.",
            None,
        ));
    }
    let same_key = |c: &Credential| {
        (credential.kid.is_some() && c.kid == credential.kid)
            || (credential.thumbprint_sha256.is_some()
                && c.thumbprint_sha256 == credential.thumbprint_sha256)
    };
    if client.credentials.iter().any(same_key) {
        return rate.apply(api_error(
            StatusCode::CONFLICT,
            "credentials contains public keys that already exist in client",
            None,
        ));
    }
    let answer = credential.json(false);
    client.credentials.push(credential);
    let hold = inner.take_hold(HeldStep::CreateCredential);
    held(rate.apply(json_response(StatusCode::CREATED, answer)), hold)
}

pub(in crate::emulator) async fn list(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (inner, rate) = match admit(&shared, &headers, "read:client_credentials") {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    match inner.clients.get(&id) {
        None => rate.apply(client_not_found()),
        Some(client) => rate.apply(json_response(
            StatusCode::OK,
            Value::Array(client.credentials.iter().map(|c| c.json(true)).collect()),
        )),
    }
}

pub(in crate::emulator) async fn get_one(
    State(shared): State<Shared>,
    Path((id, credential_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (inner, rate) = match admit(&shared, &headers, "read:client_credentials") {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let Some(client) = inner.clients.get(&id) else {
        return rate.apply(client_not_found());
    };
    match client.credentials.iter().find(|c| c.id == credential_id) {
        Some(c) => rate.apply(json_response(StatusCode::OK, c.json(true))),
        None => rate.apply(credential_not_found()),
    }
}

/// `PATCH .../credentials/{id}`: only `expires_at` can change.
pub(in crate::emulator) async fn update(
    State(shared): State<Shared>,
    Path((id, credential_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (mut inner, rate) = match admit(&shared, &headers, "update:client_credentials") {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(&body) else {
        return rate.apply(invalid("Expected type object but found type null"));
    };
    if let Some(other) = changes.keys().find(|k| *k != "expires_at") {
        return rate.apply(invalid(&format!(
            "Additional properties not allowed: {other}"
        )));
    }
    let expires_at = match changes.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(at)) => match humantime::parse_rfc3339_weak(at) {
            Ok(at) => Some(at),
            Err(_) => {
                return rate.apply(invalid("Invalid date-time format on property expires_at"));
            }
        },
        Some(_) => {
            return rate.apply(invalid(
                "Expected type string but found type number' on property expires_at",
            ));
        }
    };
    let Some(client) = inner.clients.get_mut(&id) else {
        return rate.apply(client_not_found());
    };
    let Some(credential) = client
        .credentials
        .iter_mut()
        .find(|c| c.id == credential_id)
    else {
        return rate.apply(credential_not_found());
    };
    credential.expires_at = expires_at;
    credential.updated_at = SystemTime::now();
    rate.apply(json_response(StatusCode::OK, credential.json(true)))
}

/// `DELETE .../credentials/{id}`: 204, also for a credential that is already gone; refused
/// while the credential is attached.
pub(in crate::emulator) async fn delete(
    State(shared): State<Shared>,
    Path((id, credential_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (mut inner, rate) = match admit(&shared, &headers, "delete:client_credentials") {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let Some(client) = inner.clients.get_mut(&id) else {
        return rate.apply(client_not_found());
    };
    if let Some(method) = client.attached_to(&credential_id) {
        return rate.apply(api_error(
            StatusCode::BAD_REQUEST,
            &format!("The credential is in use by {method}: remove it from client_authentication_methods before deleting it"),
            None,
        ));
    }
    client.credentials.retain(|c| c.id != credential_id);
    let hold = inner.take_hold(HeldStep::DeleteCredential);
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    held(rate.apply(response), hold)
}
