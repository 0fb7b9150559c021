//! ListRotations through the real grpcurl: a client's rotations newest first, each with how it
//! ended, what it stored and who asked, kept in the ledger record the protocol writes anyway.

use crate::helpers::Stack;
use secret_rotator::emulator::{random_client_id, regular_client};

#[tokio::test]
async fn list_rotations_shows_each_rotation_newest_first() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "History app"));
    let first = stack
        .grpcurl(
            "RotateSecret",
            &format!(r#"{{"client_id": "{id}", "reason": "first"}}"#),
        )
        .await
        .unwrap();
    let staged = stack.grpcurl("RotateSecret",
        &format!(r#"{{"client_id": "{id}", "strategy": "ROTATION_STRATEGY_STAGED", "reason": "quarterly"}}"#),
    )
    .await
    .unwrap();
    let staged_id = staged["rotationId"].as_str().unwrap();
    stack
        .grpcurl(
            "CompleteRotation",
            &format!(r#"{{"client_id": "{id}", "rotation_id": "{staged_id}"}}"#),
        )
        .await
        .unwrap();
    // A rotation refused under the lease is history too: the dashboard's Rotate button left
    // Vault behind, and this caller rotates only a client in sync.
    stack.emulator.rotate_outside(&id).expect("rotated outside");
    let refused = stack
        .grpcurl(
            "RotateSecret",
            &format!(r#"{{"client_id": "{id}", "require_in_sync": true}}"#),
        )
        .await
        .unwrap_err();
    assert!(refused.contains("FailedPrecondition"), "{refused}");

    let listed = stack
        .grpcurl("ListRotations", &format!(r#"{{"client_id": "{id}"}}"#))
        .await
        .unwrap();
    let rotations = listed["rotations"].as_array().expect("rotations");
    let outcomes: Vec<&str> = rotations
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["drifted", "promoted", "ok"], "{listed:#}");
    let [drifted, promoted, ok] = &rotations[..] else {
        unreachable!()
    };
    assert_eq!(ok["rotationId"], first["rotationId"]);
    assert_eq!(ok["reason"], "first");
    assert_eq!(ok["rotatedBy"], "anonymous");
    assert_eq!(ok["strategy"], "ROTATION_STRATEGY_IMMEDIATE");
    assert_eq!(ok["kvVersion"], "1");
    assert!(ok["storedAt"].is_string() && ok["startedAt"].is_string());
    assert_eq!(promoted["rotationId"], staged_id);
    assert_eq!(promoted["strategy"], "ROTATION_STRATEGY_STAGED");
    assert_eq!(promoted["reason"], "quarterly");
    assert_eq!(
        promoted["kvVersion"], "3",
        "staged as version 2, promoted as 3"
    );
    assert!(drifted.get("storedAt").is_none(), "it stored nothing");
    let live = stack.emulator.live_secret(&id).unwrap();
    assert!(!listed.to_string().contains(&live));

    // A client the service never rotated has no history; a bad id is refused.
    let other = stack.seed(regular_client(&random_client_id(), "Untouched app"));
    let empty = stack
        .grpcurl("ListRotations", &format!(r#"{{"client_id": "{other}"}}"#))
        .await
        .unwrap();
    assert!(empty.get("rotations").is_none(), "{empty}");
    let bad = stack
        .grpcurl("ListRotations", r#"{"client_id": "../x"}"#)
        .await
        .unwrap_err();
    assert!(bad.contains("InvalidArgument"), "{bad}");
}
