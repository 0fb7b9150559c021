//! History: each rotation's entry is started by the write that takes the lease and settled by
//! the write that closes it, whatever the outcome; the record keeps the newest few.

use std::sync::{Mutex, atomic::Ordering};

use super::{
    fakes::FakeVault,
    protocol::{Svc, command, service, soon},
};
use crate::{
    audit::Origin,
    rotation::{ClientId, HistoryEntry, Ledger, Outcome, RotateCommand, StoreError, Strategy},
};

fn id() -> ClientId {
    ClientId::parse("abc").unwrap()
}

async fn history(svc: &Svc) -> Vec<HistoryEntry> {
    svc.history(&id()).await.unwrap()
}

fn by(caller: &str, reason: &str) -> RotateCommand {
    let mut c = RotateCommand::parse("abc", reason, "").unwrap();
    c.origin = Origin {
        caller: Some(caller.into()),
        ..Origin::default()
    };
    c
}

#[tokio::test]
async fn the_newest_rotations_are_kept_newest_first() {
    let svc = service(FakeVault::default());
    let mut answers = Vec::new();
    for n in 0..4 {
        let rotation = svc
            .rotate(by("jwt:ops", &format!("round {n}")), soon(10_000))
            .await
            .unwrap();
        answers.push(rotation);
    }
    let kept = history(&svc).await;
    assert_eq!(kept.len(), 3, "history_kept is 3 in these tests");
    for (entry, answer) in kept.iter().zip(answers.iter().rev()) {
        assert_eq!(entry.rotation_id, answer.metadata.rotation_id);
        assert_eq!(entry.outcome, "ok");
        assert_eq!(entry.strategy, Strategy::Immediate);
        assert_eq!(entry.kv_version, Some(answer.stored.version));
        assert_eq!(entry.stored_at, Some(answer.metadata.rotated_at));
        assert!(entry.started_at <= answer.metadata.rotated_at);
        assert_eq!(entry.caller.as_deref(), Some("jwt:ops"));
        assert!(!entry.recovered);
    }
    assert_eq!(kept[0].reason.as_ref().unwrap().as_str(), "round 3");
    // History rides on the writes a rotation makes anyway.
    assert_eq!(
        svc.pipeline().ledger.state_writes.load(Ordering::SeqCst),
        4 * 2
    );
}

#[tokio::test]
async fn failures_are_recorded_with_their_audit_name() {
    let svc = service(FakeVault::default());
    // A first rotation cannot be staged: consumers need a current secret meanwhile.
    let refused = svc
        .rotate(
            RotateCommand {
                strategy: Strategy::Staged,
                ..command("abc")
            },
            soon(10_000),
        )
        .await
        .unwrap_err();
    let kept = history(&svc).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].outcome, Outcome::of(&refused).name());
    assert_eq!(kept[0].strategy, Strategy::Staged);
    assert_eq!(kept[0].stored_at, None);
    assert_eq!(kept[0].kv_version, None);
}

#[tokio::test]
async fn a_rotation_left_open_is_running_until_healed_then_recovered() {
    let svc = service(FakeVault {
        write_errors: Mutex::new(vec![StoreError::PermissionDenied("x".into())].into()),
        ..FakeVault::default()
    });
    svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
    let open = svc.pipeline().ledger.read_state(&id()).await.unwrap().value;
    assert_eq!(open.history[0].outcome, "running");
    assert_eq!(crate::rotation::reconciler::heal_left_open(&svc).await, 0);
    let kept = history(&svc).await;
    assert_eq!(kept.len(), 1, "the same entry, settled");
    assert_eq!(kept[0].outcome, "recovered");
    assert!(kept[0].recovered);
    assert!(kept[0].stored_at.is_some());
}

#[tokio::test]
async fn a_staged_rotation_is_one_entry_staged_then_promoted_or_cancelled() {
    let svc = service(FakeVault::default());
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    let stage = || RotateCommand {
        strategy: Strategy::Staged,
        ..by("jwt:release", "")
    };
    let staged = svc.rotate(stage(), soon(10_000)).await.unwrap();
    let rotation_id = staged.metadata.rotation_id;
    let kept = history(&svc).await;
    assert_eq!(
        (kept[0].rotation_id, kept[0].outcome.as_str()),
        (rotation_id, "staged")
    );
    assert_eq!(kept[0].strategy, Strategy::Staged);
    svc.complete(id(), rotation_id, Origin::default(), soon(10_000))
        .await
        .unwrap();
    let kept = history(&svc).await;
    assert_eq!(
        kept.len(),
        2,
        "the stage and the promotion are one rotation"
    );
    assert_eq!(kept[0].outcome, "promoted");
    assert_eq!(
        kept[0].caller.as_deref(),
        Some("jwt:release"),
        "who staged it"
    );
    assert!(kept[0].stored_at.is_some());

    let staged = svc.rotate(stage(), soon(10_000)).await.unwrap();
    svc.cancel(
        &id(),
        staged.metadata.rotation_id,
        &Origin::default(),
        soon(10_000),
    )
    .await
    .unwrap();
    let kept = history(&svc).await;
    assert_eq!(kept[0].rotation_id, staged.metadata.rotation_id);
    assert_eq!(kept[0].outcome, "cancelled");
    assert_eq!(kept[1].outcome, "promoted");
}
