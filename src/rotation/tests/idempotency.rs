//! Idempotency keys belong to the caller that sent them.

use super::{
    fakes::FakeVault,
    protocol::{service, soon},
};
use crate::{
    audit::Origin,
    rotation::{RotateCommand, RotationError, ValidationError},
};

fn keyed(client: &str, key: &str, caller: &str) -> RotateCommand {
    RotateCommand {
        origin: Origin {
            caller: Some(caller.to_owned()),
            ..Origin::default()
        },
        ..RotateCommand::parse(client, "", key).unwrap()
    }
}

#[tokio::test]
async fn two_callers_sending_the_same_key_have_two_keys() {
    let svc = service(FakeVault::default());
    let first = svc
        .rotate(keyed("abc", "deploy-1", "jwt:team-a"), soon(10_000))
        .await
        .unwrap();
    // The same caller replays; another caller's equal string is its own key: no replay of the
    // first caller's answer, and no "already used for another client" oracle.
    let replay = svc
        .rotate(keyed("abc", "deploy-1", "jwt:team-a"), soon(10_000))
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.metadata.rotation_id, first.metadata.rotation_id);
    let other = svc
        .rotate(keyed("abc", "deploy-1", "jwt:team-b"), soon(10_000))
        .await
        .unwrap();
    assert!(!other.replayed);
    assert_ne!(other.metadata.rotation_id, first.metadata.rotation_id);
    svc.rotate(
        keyed("other", "deploy-1", "spiffe://corp/ns/c/sa/x"),
        soon(10_000),
    )
    .await
    .expect("a third caller may use the string for another client");
    // Within one caller, a key still binds one client.
    let reused = svc
        .rotate(keyed("other", "deploy-1", "jwt:team-a"), soon(10_000))
        .await;
    assert!(matches!(
        reused,
        Err(RotationError::InvalidArgument(
            ValidationError::IdempotencyKeyReused
        ))
    ));
}
