use prost::Message;
use secret_rotator::emulator::{pkjwt_client, random_client_id, regular_client};
use tonic::Code;

use crate::helpers::{Stack, assert_status, rotate, rotate_because, vault_path};

#[tokio::test]
async fn rotation_stores_the_live_secret_and_answers_metadata_only() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "Billing web app"));
    let before = stack.emulator.live_secret(&id).unwrap();
    let mut client = stack.client().await;

    let answer = client
        .rotate_secret(rotate_because(&id, "quarterly rotation"))
        .await
        .expect("rotation succeeds")
        .into_inner();

    // Vault holds exactly the secret Auth0 (the emulator) now accepts.
    let live = stack.emulator.live_secret(&id).unwrap();
    assert_ne!(live, before, "the secret changed at Auth0");
    let data = stack
        .bao
        .kv_data(&vault_path(&id))
        .await
        .expect("key written");
    assert_eq!(data["client_secret"], live.as_str());
    assert_eq!(data["client_id"], id.as_str());
    assert_eq!(
        data.as_object().unwrap().len(),
        2,
        "only client_id and client_secret: {data}"
    );

    // Rotation facts sit in the client's ledger record, not in the data: GetRotationStatus.
    let last = stack
        .status(&id)
        .await
        .last_rotation
        .expect("the last rotation");
    assert_eq!(last.rotation_id, answer.rotation_id);
    assert_eq!(last.reason, "quarterly rotation");
    assert_eq!(last.rotated_at, answer.rotated_at);
    assert_eq!(last.rotated_by, "anonymous", "the caller (insecure mode)");
    assert!(!answer.replayed);
    assert_eq!(last.vault_secret.unwrap().version, 1);

    // The answer: metadata about the client and where the secret went.
    uuid::Uuid::parse_str(&answer.rotation_id).expect("rotation_id is a UUID");
    let vault = answer.vault_secret.clone().unwrap();
    assert_eq!(
        (vault.mount.as_str(), vault.path.as_str(), vault.version),
        ("secret", vault_path(&id).as_str(), 1)
    );
    let meta = stack.bao.kv_metadata(&vault_path(&id)).await.unwrap();
    assert_eq!(meta["current_version"], 1);
    assert!(
        meta["custom_metadata"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "no metadata write: {meta}"
    );
    assert!(answer.rotated_at.is_some());
    let c = answer.client.clone().unwrap();
    assert_eq!(c.client_id, id);
    assert_eq!(c.name.as_deref(), Some("Billing web app"));
    assert_eq!(c.app_type.as_deref(), Some("regular_web"));
    assert_eq!(
        c.cross_origin_authentication,
        Some(false),
        "legacy cross_origin_auth is read"
    );
    assert_eq!(
        c.addons.as_ref().unwrap().enabled,
        vec!["firebase", "samlp"]
    );
    assert!(
        c.signing_keys[0]
            .cert
            .as_deref()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(
        c.refresh_token.as_ref().unwrap().token_lifetime,
        Some(2_592_000)
    );

    // No secret material anywhere in the encoded answer.
    let bytes = answer.encode_to_vec();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains(&live), "the new secret is in the answer");
    assert!(
        !contains("PRIVATE KEY"),
        "a signing key's private part is in the answer"
    );
    assert!(
        !contains("FIREBASE-"),
        "an addon credential is in the answer"
    );

    // A second rotation writes the next version.
    let again = client
        .rotate_secret(rotate(&id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.vault_secret.unwrap().version, 2);
    let latest = stack.emulator.live_secret(&id).unwrap();
    assert_ne!(latest, live);
    assert_eq!(
        stack.bao.kv_data(&vault_path(&id)).await.unwrap()["client_secret"],
        latest.as_str()
    );
    let last = stack.status(&id).await.last_rotation.unwrap();
    assert_eq!(last.rotation_id, again.rotation_id);
    assert_eq!(last.vault_secret.unwrap().version, 2);
    assert!(
        last.reason.is_empty(),
        "no stale reason from the previous rotation"
    );
}

#[tokio::test]
async fn third_party_tpc_client_rotates() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client("tpc_rhQfCQohbSxytKPKF987fE", "Partner app"));
    let answer = stack.rotate_ok(&id).await;
    assert_eq!(
        answer.credential_kind(),
        secret_rotator::proto::CredentialKind::ClientSecret
    );
    assert!(answer.credential_id.is_empty() && answer.key_id.is_empty());
    assert_eq!(answer.client.unwrap().client_id, id);
    let data = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
    assert_eq!(
        data["client_secret"],
        stack.emulator.live_secret(&id).unwrap().as_str()
    );
}

#[tokio::test]
async fn unknown_client_is_not_found_and_writes_nothing() {
    let stack = Stack::start().await;
    let id = random_client_id();
    let status = stack.rotate_refused(&id).await;
    assert_status(&status, Code::NotFound, "no client");
    assert_eq!(stack.emulator.stats().rotate_requests, 1);
    assert!(stack.bao.secret_keys().await.is_empty());
}

#[tokio::test]
async fn a_key_client_without_the_credential_scopes_is_refused_naming_the_scope() {
    // The stack's grant has the secret scopes only: secrets rotate, keys cannot.
    let stack = Stack::start().await;
    let id = stack.seed(pkjwt_client(&random_client_id()));
    let status = stack.rotate_refused(&id).await;
    assert_status(&status, Code::FailedPrecondition, "private_key_jwt");
    assert!(
        status.message().contains("read:client_credentials"),
        "{}",
        status.message()
    );
    assert_eq!(
        stack.emulator.credentials(&id).len(),
        1,
        "no credential registered"
    );
    assert!(
        !status
            .message()
            .contains("Private Key JWT or mTLS authentication methods"),
        "upstream text leaked"
    );
    assert_eq!(stack.emulator.stats().rotations, 0);
    assert!(stack.bao.secret_keys().await.is_empty());
}

/// Drift (issue #9, item 5): after a rotation at the dashboard, GetRotationStatus with
/// check_drift says DRIFTED, and a rotation requiring Vault in sync refuses and rotates nothing.
#[tokio::test]
async fn drift_after_a_dashboard_rotation_is_reported_and_refused_on_request() {
    use secret_rotator::proto::{DriftState, RotateSecretRequest};
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    assert_eq!(
        stack.status(&id).await.drift,
        DriftState::Unspecified as i32,
        "not checked unless asked"
    );
    stack.rotate_ok(&id).await;
    assert_eq!(
        stack.status_of(&id, true).await.drift,
        DriftState::InSync as i32
    );

    let outside = stack.emulator.rotate_outside(&id).unwrap();
    let status = stack.status_of(&id, true).await;
    assert_eq!(status.drift, DriftState::Drifted as i32);
    assert!(
        !format!("{status:?}").contains(&outside),
        "no secret in the answer"
    );

    let strict = RotateSecretRequest {
        client_id: id.clone(),
        require_in_sync: true,
        ..Default::default()
    };
    let refused = stack
        .client()
        .await
        .rotate_secret(strict)
        .await
        .unwrap_err();
    assert_status(
        &refused,
        Code::FailedPrecondition,
        "does not hold the secret Auth0 accepts",
    );
    assert_eq!(stack.emulator.stats().rotations, 1, "nothing rotated");
    assert!(stack.status(&id).await.open_intent.is_none());

    // A plain rotation replaces both.
    stack.rotate_ok(&id).await;
    assert_eq!(
        stack.status_of(&id, true).await.drift,
        DriftState::InSync as i32
    );
}
