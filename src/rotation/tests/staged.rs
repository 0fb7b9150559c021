//! Staged rotations against in-memory ports: the next secret is in Vault before Auth0 accepts
//! it, and every step cut off heals to a state consumers can work with.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use uuid::Uuid;

use super::{
    fakes::{FakeKey, FakeVault, LostAnswer},
    protocol::{Svc, command, service, service_with, settled, soon},
};
use crate::{
    audit::Origin,
    rotation::{
        ClientId, ClientState, Intent, IssuerError, Ledger, RotateCommand, RotationError, Step,
        Strategy, ValidationError,
    },
};

const KEY: &str = "auth0/abc";

fn staged(distribute_for: Option<Duration>) -> RotateCommand {
    RotateCommand {
        strategy: Strategy::Staged,
        distribute_for,
        ..command("abc")
    }
}

fn id() -> ClientId {
    ClientId::parse("abc").unwrap()
}

fn origin() -> Origin {
    Origin {
        caller: Some("jwt:ops".into()),
        ..Origin::default()
    }
}

/// A service whose Vault holds the secret Auth0 accepts (after one immediate rotation).
async fn in_sync() -> (Arc<Svc>, String) {
    let svc = service(FakeVault::default());
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    let live = svc.pipeline().issuer.live("abc").unwrap();
    (svc, live)
}

fn key(svc: &Svc) -> FakeKey {
    svc.pipeline().store.key(KEY).expect("the key exists")
}

async fn state(svc: &Svc) -> ClientState {
    svc.pipeline().ledger.read_state(&id()).await.unwrap().value
}

#[tokio::test]
async fn staging_puts_the_next_secret_beside_the_current_one_and_promotion_swaps_them() {
    let (svc, old) = in_sync().await;
    let answer = svc
        .rotate(staged(Some(Duration::from_secs(60))), soon(10_000))
        .await
        .unwrap();
    let rotation_id = answer.metadata.rotation_id;
    assert_eq!(answer.metadata.strategy, Strategy::Staged);
    let due = answer.promote_after.expect("a staged answer says when");
    assert!(due > SystemTime::now() + Duration::from_secs(50));

    // Auth0 untouched, the current secret unchanged, the next one beside it.
    assert_eq!(svc.pipeline().issuer.live("abc").unwrap(), old);
    let k = key(&svc);
    assert_eq!(k.current, old);
    let next = k.next.clone().expect("next_client_secret");
    assert_eq!(next.len(), 64);
    assert!(
        next.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    );
    assert_ne!(next, old);
    assert_eq!(answer.stored.version.get(), 2);
    let status = svc.status(&id(), false).await.unwrap();
    assert_eq!(status.staged.map(|(s, _)| s.rotation_id), Some(rotation_id));

    let promoted = svc
        .complete(id(), rotation_id, origin(), soon(10_000))
        .await
        .unwrap();
    assert!(!promoted.replayed && !promoted.metadata.recovered);
    assert_eq!(
        svc.pipeline().issuer.live("abc").unwrap(),
        next,
        "Auth0 holds the staged secret"
    );
    assert_eq!(
        key(&svc),
        FakeKey {
            current: next.clone(),
            next: None,
            previous: Some(old),
        }
    );
    let record = state(&svc).await;
    assert!(record.staged.is_none());
    let last = record.last.unwrap();
    assert_eq!(
        (last.metadata.rotation_id, last.metadata.strategy),
        (rotation_id, Strategy::Staged)
    );
    settled(&svc, "abc");

    // Retried, the promotion answers the same; a cancel is too late.
    let again = svc
        .complete(id(), rotation_id, origin(), soon(10_000))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.stored.version, promoted.stored.version);
    let late = svc
        .cancel(&id(), rotation_id, &origin(), soon(10_000))
        .await;
    assert!(matches!(late, Err(RotationError::AlreadyPromoted { .. })));
}

#[tokio::test]
async fn a_staged_rotation_blocks_others_until_cancelled() {
    let (svc, old) = in_sync().await;
    let answer = svc.rotate(staged(None), soon(10_000)).await.unwrap();
    let rotation_id = answer.metadata.rotation_id;
    for other in [command("abc"), staged(None)] {
        let refused = svc.rotate(other, soon(10_000)).await;
        assert!(
            matches!(refused, Err(RotationError::StagedPending { rotation_id: r, .. }) if r == rotation_id)
        );
    }
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 1);

    let cancelled = svc
        .cancel(&id(), rotation_id, &origin(), soon(10_000))
        .await
        .unwrap();
    assert_eq!(key(&svc).next, None, "the staged secret is gone");
    assert_eq!(key(&svc).current, old);
    assert_eq!(cancelled.stored.version.get(), 3);
    assert_eq!(svc.pipeline().issuer.live("abc").unwrap(), old);
    // Repeated, the cancel answers alike; the rotation cannot be completed any more.
    svc.cancel(&id(), rotation_id, &origin(), soon(10_000))
        .await
        .unwrap();
    let gone = svc
        .complete(id(), rotation_id, origin(), soon(10_000))
        .await;
    assert!(matches!(gone, Err(RotationError::NotStaged { .. })));
    let unknown = svc
        .cancel(&id(), Uuid::new_v4(), &origin(), soon(10_000))
        .await;
    assert!(matches!(unknown, Err(RotationError::NotStaged { .. })));
    // And the client rotates again.
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    settled(&svc, "abc");
}

#[tokio::test]
async fn a_promotion_whose_answer_was_lost_is_finished_or_left_staged() {
    let (svc, old) = in_sync().await;
    let id1 = svc
        .rotate(staged(None), soon(10_000))
        .await
        .unwrap()
        .metadata
        .rotation_id;
    let next = key(&svc).next.unwrap();

    // Lost without reaching Auth0: still staged, and a later promotion works.
    *svc.pipeline().issuer.lose_next.lock().unwrap() = Some(LostAnswer::WithoutCommit);
    let lost = svc.complete(id(), id1, origin(), soon(10_000)).await;
    assert!(
        matches!(
            lost,
            Err(RotationError::Issuer(IssuerError::OutcomeUnknown(_)))
        ),
        "{lost:?}"
    );
    assert_eq!(svc.pipeline().issuer.live("abc").unwrap(), old);
    assert_eq!(key(&svc).next.as_ref(), Some(&next));
    assert_eq!(state(&svc).await.staged.map(|s| s.rotation_id), Some(id1));

    // Lost after Auth0 took it: the staged secret is promoted in Vault from the live one.
    *svc.pipeline().issuer.lose_next.lock().unwrap() = Some(LostAnswer::AfterCommit);
    let healed = svc
        .complete(id(), id1, origin(), soon(10_000))
        .await
        .unwrap();
    assert!(healed.metadata.recovered);
    assert_eq!(healed.metadata.strategy, Strategy::Staged);
    assert_eq!(key(&svc).current, next);
    assert_eq!(key(&svc).previous, Some(old));
    settled(&svc, "abc");
}

/// Writes an open intent of `step` for `rotation_id` with no live lease: a replica died there.
async fn die_during(svc: &Svc, step: Step, rotation_id: Uuid) {
    let read = svc.pipeline().ledger.read_state(&id()).await.unwrap();
    let orphan = ClientState {
        lease: None,
        intent: Some(Intent {
            rotation_id,
            step,
            caller: None,
            trace_id: None,
            reason: None,
            started_at: SystemTime::now(),
            idempotency_key: None,
        }),
        ..read.value
    };
    svc.pipeline()
        .ledger
        .write_state(&id(), &orphan, read.version)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_promotion_cut_off_between_auth0_and_vault_is_promoted_by_the_reconciler() {
    let (svc, old) = in_sync().await;
    let rotation_id = svc
        .rotate(staged(None), soon(10_000))
        .await
        .unwrap()
        .metadata
        .rotation_id;
    let next = key(&svc).next.unwrap();
    // The replica set Auth0's secret, then died before Vault's write.
    svc.pipeline()
        .issuer
        .live
        .lock()
        .unwrap()
        .insert("abc".into(), next.clone());
    die_during(&svc, Step::Promote, rotation_id).await;

    assert_eq!(crate::rotation::reconciler::reconcile_once(&svc).await, 1);
    assert_eq!(key(&svc).current, next);
    assert_eq!(key(&svc).previous, Some(old));
    let record = state(&svc).await;
    assert!(record.staged.is_none());
    assert_eq!(
        record.last.map(|l| l.metadata.rotation_id),
        Some(rotation_id)
    );
    settled(&svc, "abc");
}

#[tokio::test]
async fn a_promotion_cut_off_before_auth0_stays_staged() {
    let (svc, old) = in_sync().await;
    let rotation_id = svc
        .rotate(staged(None), soon(10_000))
        .await
        .unwrap()
        .metadata
        .rotation_id;
    die_during(&svc, Step::Promote, rotation_id).await;
    assert_eq!(crate::rotation::reconciler::reconcile_once(&svc).await, 1);
    assert_eq!(key(&svc).current, old);
    assert!(key(&svc).next.is_some());
    let record = state(&svc).await;
    assert!(record.is_closed());
    assert_eq!(record.staged.map(|s| s.rotation_id), Some(rotation_id));
}

#[tokio::test]
async fn a_stage_cut_off_withdraws_its_secret() {
    let (svc, old) = in_sync().await;
    let rotation_id = Uuid::new_v4();
    // The replica wrote the next secret, then died before recording the staged rotation.
    svc.pipeline()
        .store
        .keys
        .lock()
        .unwrap()
        .get_mut(KEY)
        .unwrap()
        .push(FakeKey {
            current: old.clone(),
            next: Some("n".repeat(64)),
            previous: None,
        });
    die_during(&svc, Step::Stage, rotation_id).await;
    assert_eq!(crate::rotation::reconciler::reconcile_once(&svc).await, 1);
    assert_eq!(key(&svc).next, None);
    assert_eq!(key(&svc).current, old);
    let record = state(&svc).await;
    assert!(record.is_closed() && record.staged.is_none());
    assert_eq!(
        svc.pipeline().issuer.live("abc").unwrap(),
        old,
        "Auth0 untouched"
    );
}

#[tokio::test]
async fn an_immediate_rotation_keeps_the_replaced_secret_as_previous() {
    let (svc, first) = in_sync().await;
    assert_eq!(key(&svc).previous, None, "nothing was replaced");
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    let k = key(&svc);
    assert_eq!(k.previous, Some(first));
    assert_eq!(Some(k.current), svc.pipeline().issuer.live("abc"));
}

#[tokio::test]
async fn without_a_previous_secret_ttl_the_key_is_not_read_and_keeps_none() {
    let svc = service_with(FakeVault::default(), |s| {
        s.previous_secret_ttl = Duration::ZERO
    });
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    assert_eq!(key(&svc).previous, None);
    assert_eq!(Some(key(&svc).current), svc.pipeline().issuer.live("abc"));
    assert_eq!(svc.pipeline().store.secret_reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn staging_needs_a_secret_in_vault_and_a_distribution_time_in_bounds() {
    let svc = service(FakeVault::default());
    let refused = svc.rotate(staged(None), soon(10_000)).await;
    assert!(matches!(refused, Err(RotationError::NothingToStage { .. })));
    assert!(svc.pipeline().store.key(KEY).is_none());
    settled_without_key(&svc).await;

    // An immediate rotation of a client with a secret has nothing to overlap: refused before
    // Auth0 changes anything (a client with a key would take it as its overlap).
    let immediate = RotateCommand {
        distribute_for: Some(Duration::from_secs(5)),
        ..command("abc")
    };
    let refused = svc.rotate(immediate, soon(10_000)).await;
    assert!(
        matches!(
            refused,
            Err(RotationError::InvalidArgument(
                ValidationError::DistributeForImmediate
            ))
        ),
        "{refused:?}"
    );
    settled_without_key(&svc).await;

    let cases = [
        (
            staged(Some(Duration::from_millis(500))),
            ValidationError::DistributeForRange { max: "24h".into() },
        ),
        (
            staged(Some(Duration::from_secs(86_401))),
            ValidationError::DistributeForRange { max: "24h".into() },
        ),
    ];
    for (command, expected) in cases {
        assert_eq!(
            svc.distribute_for(command.strategy, command.distribute_for),
            Err(expected)
        );
    }
}

async fn settled_without_key(svc: &Svc) {
    assert!(state(svc).await.is_closed());
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_due_staged_rotation_is_promoted_by_the_reconciler_loop() {
    let (svc, old) = in_sync().await;
    svc.rotate(staged(Some(Duration::from_secs(1))), soon(10_000))
        .await
        .unwrap();
    let next = key(&svc).next.unwrap();
    let reconciler = tokio::spawn(crate::rotation::reconciler::run(Arc::clone(&svc)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while key(&svc).current != next {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not promoted within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reconciler.abort();
    assert_eq!(svc.pipeline().issuer.live("abc").unwrap(), next);
    assert_eq!(key(&svc).previous, Some(old));
}

#[tokio::test]
async fn a_staged_rotation_requiring_sync_refuses_a_drifted_client_and_a_dry_run_sees_it() {
    let (svc, old) = in_sync().await;
    // The dashboard's Rotate button: Auth0 moved on without the service.
    svc.pipeline()
        .issuer
        .live
        .lock()
        .unwrap()
        .insert("abc".into(), "from-the-dashboard".into());
    let strict = RotateCommand {
        require_in_sync: true,
        ..staged(None)
    };
    assert!(matches!(
        svc.validate(&strict).await,
        Err(RotationError::Drifted { .. })
    ));
    let refused = svc.rotate(strict, soon(10_000)).await;
    assert!(matches!(refused, Err(RotationError::Drifted { .. })));
    assert_eq!(key(&svc).next, None, "nothing staged");
    assert_eq!(key(&svc).current, old);

    // Staged, a dry run of any other rotation is refused as the rotation would be.
    svc.rotate(staged(None), soon(10_000)).await.unwrap();
    let dry = svc.validate(&command("abc")).await;
    assert!(matches!(dry, Err(RotationError::StagedPending { .. })));
}
