//! Staged rotations through the gRPC API, against OpenBao and the emulator: stage, status,
//! promotion (on request and when due), cancel, and the refusals around them.

use std::time::{Duration, SystemTime};

use prost_types::Timestamp;
use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::{
        CancelRotationRequest, CompleteRotationRequest, RotateSecretRequest, RotationStage,
        RotationStrategy,
    },
};
use serde_json::Value;
use tonic::Code;

use crate::helpers::{Stack, assert_status, eventually, rotate, vault_path};

/// RotateSecret with the staged strategy, distributing for `secs` seconds.
pub fn staged(client_id: &str, secs: i64) -> RotateSecretRequest {
    RotateSecretRequest {
        strategy: RotationStrategy::Staged as i32,
        distribute_for: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        ..rotate(client_id)
    }
}

pub fn complete(client_id: &str, rotation_id: &str) -> CompleteRotationRequest {
    CompleteRotationRequest {
        client_id: client_id.to_owned(),
        rotation_id: rotation_id.to_owned(),
    }
}

fn cancel(client_id: &str, rotation_id: &str) -> CancelRotationRequest {
    CancelRotationRequest {
        client_id: client_id.to_owned(),
        rotation_id: rotation_id.to_owned(),
    }
}

/// A client whose Vault key holds the secret Auth0 accepts (one immediate rotation).
pub async fn client_in_sync(stack: &Stack) -> (String, String) {
    let id = stack.seed(regular_client(&random_client_id(), "staged app"));
    stack.rotate_ok(&id).await;
    let live = stack.emulator.live_secret(&id).unwrap();
    (id, live)
}

async fn key(stack: &Stack, id: &str) -> Value {
    stack.bao.kv_data(&vault_path(id)).await.expect("the key")
}

fn secs_from_now(t: &Timestamp) -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    t.seconds - now
}

#[tokio::test]
async fn a_staged_rotation_is_distributed_then_promoted_on_request() {
    let stack = Stack::start().await;
    let (id, old) = client_in_sync(&stack).await;
    let mut client = stack.client().await;

    let answer = client
        .rotate_secret(staged(&id, 600))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.strategy, RotationStrategy::Staged as i32);
    let promote_after = answer.promote_after.expect("promote_after");
    assert!((595..=600).contains(&secs_from_now(&promote_after)));
    let data = key(&stack, &id).await;
    assert_eq!(
        data["client_secret"],
        old.as_str(),
        "current secret unchanged"
    );
    let next = data["next_client_secret"]
        .as_str()
        .expect("next secret")
        .to_owned();
    assert_eq!(next.len(), 64);
    assert_eq!(
        stack.emulator.live_secret(&id).unwrap(),
        old,
        "Auth0 untouched"
    );
    assert_eq!(answer.vault_secret.unwrap().version, 2);
    assert!(!format!("{:?}", answer.client).contains(&next));

    let status = stack.status(&id).await;
    let staged_now = status.staged_rotation.expect("a staged rotation");
    assert_eq!(staged_now.rotation_id, answer.rotation_id);
    assert_eq!(staged_now.stage, RotationStage::Staged as i32);
    assert_eq!(staged_now.strategy, RotationStrategy::Staged as i32);
    assert_eq!(staged_now.promote_after, Some(promote_after));
    assert_eq!(staged_now.vault_secret.unwrap().version, 2);

    // Nothing else rotates the client meanwhile.
    let refused = stack.rotate_refused(&id).await;
    assert_status(&refused, Code::FailedPrecondition, "waiting for promotion");
    assert_eq!(stack.emulator.live_secret(&id).unwrap(), old);

    let promoted = client
        .complete_rotation(complete(&id, &answer.rotation_id))
        .await
        .unwrap()
        .into_inner();
    assert!(!promoted.replayed && !promoted.recovered);
    assert_eq!(
        stack.emulator.live_secret(&id).unwrap(),
        next,
        "Auth0 holds the staged secret"
    );
    let data = key(&stack, &id).await;
    assert_eq!(data["client_secret"], next.as_str());
    assert_eq!(data["previous_client_secret"], old.as_str());
    assert!(data["previous_client_secret_expires_at"].is_string());
    assert!(data.get("next_client_secret").is_none());
    assert_eq!(promoted.vault_secret.unwrap().version, 3);
    assert_eq!(stack.emulator.stats().patch_requests, 1);

    let status = stack.status(&id).await;
    assert!(status.staged_rotation.is_none());
    let last = status.last_rotation.unwrap();
    assert_eq!(last.rotation_id, answer.rotation_id);
    assert_eq!(last.strategy, RotationStrategy::Staged as i32);

    // Retried, the promotion answers the same and changes nothing; a cancel is too late.
    let again = client
        .complete_rotation(complete(&id, &answer.rotation_id))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(stack.emulator.stats().patch_requests, 1);
    let late = client
        .cancel_rotation(cancel(&id, &answer.rotation_id))
        .await
        .unwrap_err();
    assert_status(&late, Code::FailedPrecondition, "already promoted");
}

#[tokio::test]
async fn a_staged_rotation_can_be_cancelled_before_promotion() {
    let stack = Stack::start().await;
    let (id, old) = client_in_sync(&stack).await;
    let mut client = stack.client().await;
    let answer = client
        .rotate_secret(staged(&id, 600))
        .await
        .unwrap()
        .into_inner();

    let cancelled = client
        .cancel_rotation(cancel(&id, &answer.rotation_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.rotation_id, answer.rotation_id);
    let data = key(&stack, &id).await;
    assert!(data.get("next_client_secret").is_none(), "{data}");
    assert_eq!(data["client_secret"], old.as_str());
    assert_eq!(stack.emulator.live_secret(&id).unwrap(), old);
    assert_eq!(stack.emulator.stats().patch_requests, 0);
    assert!(stack.status(&id).await.staged_rotation.is_none());

    // Repeated, it answers alike; it can no longer be completed.
    client
        .cancel_rotation(cancel(&id, &answer.rotation_id))
        .await
        .unwrap();
    let gone = client
        .complete_rotation(complete(&id, &answer.rotation_id))
        .await
        .unwrap_err();
    assert_status(&gone, Code::NotFound, "no staged rotation");
    stack.rotate_ok(&id).await;
}

#[tokio::test]
async fn a_due_staged_rotation_is_promoted_without_a_caller() {
    let stack = Stack::start().await;
    let (id, old) = client_in_sync(&stack).await;
    let mut client = stack.client().await;
    client.rotate_secret(staged(&id, 1)).await.unwrap();
    let next = key(&stack, &id).await["next_client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the promotion", Duration::from_secs(20), || async {
        (key(&stack, &id).await["client_secret"] == next.as_str()).then_some(())
    })
    .await;
    assert_eq!(stack.emulator.live_secret(&id).unwrap(), next);
    assert_eq!(
        key(&stack, &id).await["previous_client_secret"],
        old.as_str()
    );
    let last = stack.status(&id).await.last_rotation.unwrap();
    assert_eq!(last.strategy, RotationStrategy::Staged as i32);
}

#[tokio::test]
async fn bad_staged_requests_are_refused_before_auth0_or_vault() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "never rotated"));
    let mut client = stack.client().await;
    let before = stack.emulator.stats();
    let cases = [
        (staged(&id, 0), "distribute_for must be at least 1s"),
        (staged(&id, 25 * 3600), "at most 24h"),
        (staged(&id, -5), "must not be negative"),
        (
            RotateSecretRequest {
                strategy: 7,
                ..rotate(&id)
            },
            "strategy must be",
        ),
    ];
    for (request, says) in cases {
        let refused = client.rotate_secret(request).await.unwrap_err();
        assert_status(&refused, Code::InvalidArgument, says);
    }
    let bad_id = client
        .complete_rotation(complete(&id, "not-a-uuid"))
        .await
        .unwrap_err();
    assert_status(&bad_id, Code::InvalidArgument, "rotation_id must be a UUID");
    assert_eq!(stack.emulator.stats(), before, "Auth0 never called");
    assert!(stack.bao.kv_data(&vault_path(&id)).await.is_none());

    // An overlap with the immediate strategy is for a client with a key: this one has a
    // secret, which the service learns by reading it, and nothing changes.
    let immediate = RotateSecretRequest {
        strategy: RotationStrategy::Immediate as i32,
        ..staged(&id, 60)
    };
    let refused = client.rotate_secret(immediate).await.unwrap_err();
    assert_status(&refused, Code::InvalidArgument, "this client has a secret");
    assert_eq!(stack.emulator.stats().rotate_requests, 0);
    assert!(stack.bao.kv_data(&vault_path(&id)).await.is_none());

    // A client with nothing in Vault has no secret for consumers to use meanwhile.
    let refused = client.rotate_secret(staged(&id, 60)).await.unwrap_err();
    assert_status(
        &refused,
        Code::FailedPrecondition,
        "immediate strategy first",
    );
    assert!(stack.bao.kv_data(&vault_path(&id)).await.is_none());
    assert_eq!(stack.emulator.stats().rotations, 0);
}
