//! RollbackRotation: the client's last secret rotation undone while Vault keeps the secret
//! before it. Auth0 accepts the previous secret again, Vault holds it as `client_secret` and the
//! undone one as `previous_client_secret`; what cannot be undone is refused and changes nothing;
//! a rollback whose answer is lost, or whose service is killed mid-way, is finished from
//! Auth0's live secret.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use secret_rotator::{
    emulator::{pkjwt_client, random_client_id, regular_client},
    proto::{
        CancelRotationRequest, ListRotationsRequest, RollbackRotationRequest,
        RollbackRotationResponse,
    },
};
use serde_json::Value;
use tonic::Code;

use crate::{
    helpers::{
        ServiceProcess, Stack, StackOptions, assert_status, bare_stack, eventually, rotate,
        rotate_fault, slow_answer, vault_path,
    },
    key_rotation::{Consumer, authenticate, key_stack},
    security::secure_stack,
    staged::{complete, staged},
};

pub fn rollback(client_id: &str, rotation_id: &str) -> RollbackRotationRequest {
    RollbackRotationRequest {
        client_id: client_id.to_owned(),
        rotation_id: rotation_id.to_owned(),
    }
}

async fn key(stack: &Stack, id: &str) -> Value {
    stack.bao.kv_data(&vault_path(id)).await.expect("the key")
}

/// Rotates a new client twice; returns its id, the second rotation's id and the secrets after
/// the first and the second.
async fn rotated_twice(stack: &Stack) -> (String, String, String, String) {
    let id = stack.seed(regular_client(&random_client_id(), "Rolled back app"));
    stack.rotate_ok(&id).await;
    let first = stack.emulator.live_secret(&id).unwrap();
    let second = stack.rotate_ok(&id).await;
    let now = stack.emulator.live_secret(&id).unwrap();
    assert_ne!(first, now);
    (id, second.rotation_id, first, now)
}

async fn current_version(stack: &Stack, id: &str) -> i64 {
    stack
        .bao
        .kv_metadata(&vault_path(id))
        .await
        .expect("the key")["current_version"]
        .as_i64()
        .expect("a version")
}

async fn outcome_of(stack: &Stack, id: &str, rotation_id: &str) -> String {
    let mut client = stack.client().await;
    let history = client
        .list_rotations(ListRotationsRequest {
            client_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    history
        .rotations
        .into_iter()
        .find(|r| r.rotation_id == rotation_id)
        .map(|r| r.outcome)
        .expect("the rotation is in the history")
}

#[tokio::test]
async fn a_rollback_puts_the_previous_secret_back_at_auth0_and_in_vault() {
    let stack = Stack::start().await;
    let (id, second, first_secret, second_secret) = rotated_twice(&stack).await;
    let mut client = stack.client().await;

    let answer: RollbackRotationResponse = client
        .rollback_rotation(rollback(&id, &second))
        .await
        .expect("rolled back")
        .into_inner();
    assert_eq!(answer.rotation_id, second);
    assert!(!answer.replayed);
    assert!(answer.rolled_back_at.is_some());
    assert_eq!(
        stack.emulator.live_secret(&id).as_deref(),
        Some(first_secret.as_str())
    );
    let held = key(&stack, &id).await;
    assert_eq!(held["client_secret"], first_secret.as_str());
    assert_eq!(held["previous_client_secret"], second_secret.as_str());
    assert!(held.get("next_client_secret").is_none(), "{held}");
    let version = answer.vault_secret.as_ref().unwrap().version;
    assert_eq!(
        current_version(&stack, &id).await,
        version,
        "the answer names the version holding the secret put back"
    );
    assert_eq!(outcome_of(&stack, &id, &second).await, "rolled_back");

    // Asked again: the same rollback, nothing changed.
    let again = client
        .rollback_rotation(rollback(&id, &second))
        .await
        .expect("the same answer")
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.vault_secret, answer.vault_secret);
    assert_eq!(
        stack.emulator.live_secret(&id).as_deref(),
        Some(first_secret.as_str())
    );

    // The rotation before cannot be undone now (its previous secret is gone: Vault's previous
    // one is the undone secret); the next rotation can.
    let history = client
        .list_rotations(ListRotationsRequest {
            client_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = &history.rotations[1].rotation_id;
    let refused = client
        .rollback_rotation(rollback(&id, first))
        .await
        .unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "already put the secret");
    let third = stack.rotate_ok(&id).await;
    client
        .rollback_rotation(rollback(&id, &third.rotation_id))
        .await
        .expect("a later rotation rolls back again");
    assert_eq!(
        stack.emulator.live_secret(&id).as_deref(),
        Some(first_secret.as_str())
    );
}

#[tokio::test]
async fn what_cannot_be_rolled_back_is_refused_and_nothing_changes() {
    let stack = Stack::start().await;
    let mut client = stack.client().await;
    let unchanged = |id: String| {
        let stack = &stack;
        async move {
            (
                stack.emulator.live_secret(&id),
                current_version(stack, &id).await,
            )
        }
    };

    // The first rotation: Vault held no secret before it.
    let id = stack.seed(regular_client(&random_client_id(), "Refused app"));
    let first = stack.rotate_ok(&id).await;
    let before = unchanged(id.clone()).await;
    let refused = client
        .rollback_rotation(rollback(&id, &first.rotation_id))
        .await
        .unwrap_err();
    assert_status(
        &refused,
        Code::FailedPrecondition,
        "Vault no longer holds the secret before it",
    );
    assert_eq!(unchanged(id.clone()).await, before);

    // A rotation the client never had, and one that is not a rotation id at all.
    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = client
        .rollback_rotation(rollback(&id, &unknown))
        .await
        .unwrap_err();
    assert_status(&refused, Code::NotFound, "has no rotation");
    let refused = client
        .rollback_rotation(rollback(&id, "yesterday's"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // A later rotation replaced the secret.
    let second = stack.rotate_ok(&id).await;
    let before = unchanged(id.clone()).await;
    let refused = client
        .rollback_rotation(rollback(&id, &first.rotation_id))
        .await
        .unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "a later rotation");
    assert_eq!(unchanged(id.clone()).await, before);

    // A staged rotation after it, and the staged rotation itself (never promoted).
    let staging = client
        .rotate_secret(staged(&id, 300))
        .await
        .unwrap()
        .into_inner();
    let before = unchanged(id.clone()).await;
    let refused = client
        .rollback_rotation(rollback(&id, &second.rotation_id))
        .await
        .unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "is staged after it");
    let refused = client
        .rollback_rotation(rollback(&id, &staging.rotation_id))
        .await
        .unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "CancelRotation");
    assert_eq!(unchanged(id.clone()).await, before);
    assert_eq!(outcome_of(&stack, &id, &second.rotation_id).await, "ok");
}

#[tokio::test]
async fn a_key_rotation_is_undone_by_cancel_rotation_in_its_overlap_and_its_consumer_never_fails() {
    let stack = Arc::new(key_stack(Vec::new()).await);
    let id = stack.seed(pkjwt_client(&random_client_id()));
    let mut client = stack.client().await;
    // A first rotation, its overlap ended: Vault holds the service's key.
    let first = stack.rotate_ok(&id).await;
    client
        .complete_rotation(complete(&id, &first.rotation_id))
        .await
        .unwrap();
    let consumer = Consumer::start({
        let (stack, id, http) = (stack.clone(), id.clone(), reqwest::Client::new());
        move || {
            let (stack, id, http) = (stack.clone(), id.clone(), http.clone());
            async move { authenticate(&stack.bao, &stack.emulator, &http, &id).await }
        }
    });
    let second = stack.rotate_ok(&id).await;
    consumer.tries_again().await;

    // RollbackRotation has no secret to put back for a key, and says what does undo it.
    let refused = client
        .rollback_rotation(rollback(&id, &second.rotation_id))
        .await
        .unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "CancelRotation");
    assert_eq!(stack.emulator.credentials(&id).len(), 2, "nothing touched");

    let cancelled = client
        .cancel_rotation(CancelRotationRequest {
            client_id: id.clone(),
            rotation_id: second.rotation_id.clone(),
        })
        .await
        .expect("cancelled in its overlap")
        .into_inner();
    assert_eq!(cancelled.rotation_id, second.rotation_id);
    let held = key(&stack, &id).await;
    assert_eq!(held["credential_id"], first.credential_id.as_str());
    assert_eq!(
        held["previous_credential_id"],
        second.credential_id.as_str()
    );
    consumer.tries_again().await;
    // The overlap ends: the new key is detached and deleted.
    client
        .complete_rotation(complete(&id, &second.rotation_id))
        .await
        .expect("the new key retired");
    let left: Vec<_> = stack
        .emulator
        .credentials(&id)
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, [first.credential_id]);
    assert_eq!(
        outcome_of(&stack, &id, &second.rotation_id).await,
        "cancelled"
    );
    let (tried, failed) = consumer.stop().await;
    eprintln!("key cancellation: consumer {tried} authentications, {failed} failed");
    assert!(tried > 10);
    assert_eq!(
        failed, 0,
        "a consumer failed while the key rotation was undone"
    );
}

#[tokio::test]
async fn a_previous_secret_past_its_ttl_is_not_put_back() {
    let stack = Stack::start_with(StackOptions {
        extra_args: vec!["--previous-secret-ttl".into(), "1s".into()],
        ..StackOptions::default()
    })
    .await;
    let (id, second, _, second_secret) = rotated_twice(&stack).await;
    let expires: SystemTime = {
        let held = key(&stack, &id).await;
        let at = held["previous_client_secret_expires_at"]
            .as_str()
            .expect("the previous secret's expiry is recorded")
            .to_owned();
        humantime::parse_rfc3339(&at).unwrap()
    };
    // Wait for the expiry itself: the condition under test is the passing of time.
    eventually(
        "the previous secret to expire",
        Duration::from_secs(5),
        || async { (SystemTime::now() > expires).then_some(()) },
    )
    .await;
    let refused = stack
        .client()
        .await
        .rollback_rotation(rollback(&id, &second))
        .await
        .unwrap_err();
    assert_status(
        &refused,
        Code::FailedPrecondition,
        "ROTATOR_PREVIOUS_SECRET_TTL",
    );
    assert_eq!(
        stack.emulator.live_secret(&id).as_deref(),
        Some(second_secret.as_str())
    );
}

#[tokio::test]
async fn a_rollback_whose_answer_is_lost_is_finished_from_auth0s_live_secret() {
    let stack = Stack::start().await;
    let (id, second, first_secret, second_secret) = rotated_twice(&stack).await;
    // Auth0 takes the PATCH and the answer is lost.
    stack.emulator.inject(rotate_fault(502, true, 0));
    let answer = stack
        .client()
        .await
        .rollback_rotation(rollback(&id, &second))
        .await
        .expect("finished from the live secret")
        .into_inner();
    assert!(!answer.replayed);
    let held = key(&stack, &id).await;
    assert_eq!(held["client_secret"], first_secret.as_str());
    assert_eq!(held["previous_client_secret"], second_secret.as_str());
    assert_eq!(outcome_of(&stack, &id, &second).await, "rolled_back");

    // Auth0 refuses the PATCH outright: nothing changed anywhere.
    let third = stack.rotate_ok(&id).await;
    let live = stack.emulator.live_secret(&id);
    stack.emulator.inject(rotate_fault(400, false, 0));
    let refused = stack
        .client()
        .await
        .rollback_rotation(rollback(&id, &third.rotation_id))
        .await
        .unwrap_err();
    assert_ne!(refused.code(), Code::Ok);
    assert_eq!(stack.emulator.live_secret(&id), live);
    assert_eq!(
        key(&stack, &id).await["client_secret"].as_str(),
        live.as_deref()
    );
    assert_eq!(outcome_of(&stack, &id, &third.rotation_id).await, "ok");
}

#[tokio::test]
async fn a_rollback_cut_off_by_a_kill_is_finished_after_the_restart() {
    let (bao, emulator, m2m) = bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "Killed rollback app"));
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend([
        ("ROTATOR_DEADLINE", "2s".to_owned()),
        ("ROTATOR_MAX_DEADLINE", "2s".to_owned()),
        ("AUTH0_TIMEOUT", "1s".to_owned()),
        ("ROTATOR_LEASE_TTL", "4s".to_owned()),
        ("ROTATOR_RECONCILE_INTERVAL", "200ms".to_owned()),
    ]);
    let mut service = ServiceProcess::start(&env).await;
    let mut client = service.client().await;
    client.rotate_secret(rotate(&id)).await.unwrap();
    let first_secret = emulator.live_secret(&id).unwrap();
    let second = client
        .rotate_secret(rotate(&id))
        .await
        .unwrap()
        .into_inner();

    // Auth0 takes the PATCH at once and holds its answer: the service dies in between.
    emulator.inject(slow_answer(60_000));
    let rotation_id = second.rotation_id.clone();
    let (rid, cid) = (rotation_id.clone(), id.clone());
    let call = tokio::spawn(async move { client.rollback_rotation(rollback(&cid, &rid)).await });
    eventually(
        "Auth0 to take the PATCH",
        Duration::from_secs(10),
        || async {
            (emulator.live_secret(&id).as_deref() == Some(first_secret.as_str())).then_some(())
        },
    )
    .await;
    service.signal("-KILL");
    service.wait_exit().await;
    assert!(
        call.await.unwrap().is_err(),
        "the caller saw the service die"
    );
    assert_ne!(
        bao.kv_data(&vault_path(&id)).await.unwrap()["client_secret"],
        first_secret.as_str(),
        "cut off before Vault"
    );

    let restarted = ServiceProcess::start(&env).await;
    eventually("the heal", Duration::from_secs(20), || async {
        let held = bao.kv_data(&vault_path(&id)).await?;
        (held["client_secret"] == first_secret.as_str()).then_some(())
    })
    .await;
    let held = bao.kv_data(&vault_path(&id)).await.unwrap();
    assert!(held.get("previous_client_secret").is_some(), "{held}");
    let history = restarted
        .client()
        .await
        .list_rotations(ListRotationsRequest {
            client_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let entry = history
        .rotations
        .iter()
        .find(|r| r.rotation_id == rotation_id)
        .unwrap();
    assert_eq!(entry.outcome, "rolled_back");
    // Finished: asking again is answered as the same rollback.
    let again = restarted
        .client()
        .await
        .rollback_rotation(rollback(&id, &rotation_id))
        .await
        .expect("the rollback the heal finished")
        .into_inner();
    assert!(again.replayed);
}

#[tokio::test]
async fn a_caller_needs_rollback_rotation_granted_to_roll_back() {
    // The bot may rotate any client, and nothing else but read its status.
    let (stack, _pki) = secure_stack(&[]).await;
    let id = stack.seed(regular_client(&random_client_id(), "Guarded app"));
    stack.rotate_ok(&id).await;
    let second = stack.rotate_ok(&id).await;
    let live = stack.emulator.live_secret(&id);
    let refused = stack
        .client()
        .await
        .rollback_rotation(rollback(&id, &second.rotation_id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(stack.emulator.live_secret(&id), live);
}
