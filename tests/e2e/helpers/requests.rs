//! Requests and emulator faults, built one way for every test.

use secret_rotator::{
    emulator::{Faults, RotateFault},
    proto::{RotateSecretRequest, RotationStrategy},
};

/// RotateSecret for `client_id`, nothing else set.
pub fn rotate(client_id: &str) -> RotateSecretRequest {
    RotateSecretRequest {
        client_id: client_id.to_owned(),
        ..Default::default()
    }
}

/// RotateSecret for `client_id` with a reason.
pub fn rotate_because(client_id: &str, reason: &str) -> RotateSecretRequest {
    RotateSecretRequest {
        reason: reason.to_owned(),
        ..rotate(client_id)
    }
}

/// RotateSecret for `client_id` with an idempotency key.
pub fn keyed(client_id: &str, key: &str) -> RotateSecretRequest {
    RotateSecretRequest {
        idempotency_key: key.to_owned(),
        ..rotate(client_id)
    }
}

/// A staged RotateSecret for `client_id`, with the service's default distribution time.
pub fn rotate_staged(client_id: &str) -> RotateSecretRequest {
    RotateSecretRequest {
        strategy: RotationStrategy::Staged as i32,
        ..rotate(client_id)
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
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

/// A slow Auth0: the next rotation commits at once and its answer arrives after `delay_ms`,
/// which holds the rotation between Auth0 and Vault for that long.
pub fn slow_answer(delay_ms: u64) -> Faults {
    rotate_fault(200, true, delay_ms)
}

/// The admin listener's `/metrics` at `admin` (host:port), as text.
pub async fn scrape(admin: &str) -> String {
    let answer = reqwest::get(format!("http://{admin}/metrics")).await;
    answer.unwrap().text().await.unwrap()
}
