use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, SystemTime},
};

use tokio::time::Instant;
use uuid::Uuid;

use super::fakes::{FakeAuth0, FakeLedger, FakeVault, LostAnswer};
use crate::rotation::{
    ClientId, ClientState, Intent, IssuerError, KvVersion, Lease, Ledger, PathTemplate,
    RotateCommand, Rotation, RotationError, RotationMetadata, RotationService, Settings, Step,
    StoreError, ValidationError, Versioned, millis,
};

pub(super) type Svc = RotationService<FakeAuth0, FakeVault, FakeLedger>;

pub(super) fn service(vault: FakeVault) -> Arc<Svc> {
    service_with(vault, |_| {})
}

/// [`service`] with settings changed by `tweak`.
pub(super) fn service_with(vault: FakeVault, tweak: impl FnOnce(&mut Settings)) -> Arc<Svc> {
    let auth0 = FakeAuth0::default();
    auth0
        .live
        .lock()
        .unwrap()
        .insert("abc".into(), "secret-0".into());
    auth0
        .live
        .lock()
        .unwrap()
        .insert("other".into(), "secret-0".into());
    let mut settings = Settings {
        path: PathTemplate::parse("auth0/{client_id}", "d").unwrap(),
        replica: "test".into(),
        lease_ttl: Duration::from_secs(60),
        max_wait: Duration::from_secs(30),
        idempotency_window: Duration::from_secs(3600),
        allow_unrecoverable: false,
        max_concurrent: 16,
        reconcile_interval: Duration::from_secs(30),
        reconcile_rate: std::num::NonZeroU32::new(1_000).unwrap(),
        previous_secret_ttl: Duration::from_secs(600),
        distribute_for: Duration::from_secs(300),
        max_distribute_for: crate::rotation::Spelled::parse("24h").unwrap(),
        history_kept: 3,
        drift_scan_interval: None,
        full_scan_interval: Duration::from_secs(3600),
        max_secret_age: None,
        own_client: None,
        own_credential_path: None,
        keys: Default::default(),
    };
    tweak(&mut settings);
    Arc::new(RotationService::new(
        auth0,
        vault,
        FakeLedger::default(),
        settings,
    ))
}

/// Adds clients, each with a secret, to the issuer (beside abc and other).
pub(super) fn seed(svc: &Svc, ids: &[&str]) {
    let mut live = svc.pipeline().issuer.live.lock().unwrap();
    for id in ids {
        live.insert((*id).into(), "secret-0".into());
    }
}

pub(super) fn command(id: &str) -> RotateCommand {
    RotateCommand::parse(id, "", "").unwrap()
}

pub(super) fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// Vault holds what Auth0 accepts, and no intent or lease is left.
pub(super) fn settled(svc: &Svc, id: &str) {
    let stored = svc.pipeline().store.secrets(&format!("auth0/{id}"));
    assert_eq!(
        stored.last(),
        svc.pipeline().issuer.live(id).as_ref(),
        "Vault == Auth0"
    );
    let state: Option<ClientState> = svc.pipeline().ledger.read(&format!("c/{id}")).value;
    assert!(state.unwrap_or_default().is_closed(), "closed");
}

/// A service whose rotation of "abc" Auth0 carried out and Vault refused to store: the intent
/// stays open.
pub(super) async fn left_open_by_a_refused_store() -> Arc<Svc> {
    let svc = service(FakeVault {
        write_errors: Mutex::new(vec![StoreError::PermissionDenied("x".into())].into()),
        ..FakeVault::default()
    });
    let err = svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
    assert!(
        matches!(err, RotationError::StoreAfterRotation { .. }),
        "{err:?}"
    );
    svc
}

/// The last rotation GetRotationStatus reports, and the KV version it names.
pub(super) async fn last(svc: &Svc, id: &str) -> (RotationMetadata, KvVersion) {
    let status = svc
        .status(&ClientId::parse(id).unwrap(), false)
        .await
        .unwrap();
    let (metadata, stored) = status.last.expect("a last rotation");
    (metadata, stored.version)
}

#[tokio::test]
async fn vault_down_before_rotation_leaves_auth0_alone() {
    let svc = service(FakeVault {
        read_error: Some(StoreError::Unavailable("down".into())),
        ..FakeVault::default()
    });
    let err = svc.rotate(command("abc"), soon(1000)).await.unwrap_err();
    assert!(
        matches!(err, RotationError::VaultBeforeRotation(_)),
        "{err:?}"
    );
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn transient_write_failures_are_retried() {
    let svc = service(FakeVault {
        write_errors: Mutex::new(vec![StoreError::Unavailable("503".into()); 2].into()),
        ..FakeVault::default()
    });
    let rotation = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    assert_eq!(rotation.stored.version, KvVersion(1));
    assert_eq!(
        svc.pipeline().store.write_attempts.load(Ordering::SeqCst),
        3
    );
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        1,
        "never rotates again"
    );
    settled(&svc, "abc");
}

#[tokio::test]
async fn a_failed_store_leaves_an_intent_that_the_reconciler_heals() {
    let svc = left_open_by_a_refused_store().await;
    assert_eq!(
        svc.pipeline().store.write_attempts.load(Ordering::SeqCst),
        1,
        "refusals are not retried"
    );
    let Versioned {
        version: v,
        value: state,
    } = svc
        .pipeline()
        .ledger
        .read_state(&ClientId::parse("abc").unwrap())
        .await
        .unwrap();
    let intent = state.intent.clone().expect("intent stays open");
    // The reconciler skips it while the lease is live, and heals it once it is not.
    assert_eq!(crate::rotation::reconciler::reconcile_once(&svc).await, 0);
    let expired = ClientState {
        lease: None,
        ..state
    };
    svc.pipeline()
        .ledger
        .write_state(&ClientId::parse("abc").unwrap(), &expired, v)
        .await
        .unwrap();
    assert_eq!(crate::rotation::reconciler::reconcile_once(&svc).await, 1);
    settled(&svc, "abc");
    let (meta, _) = last(&svc, "abc").await;
    assert!(meta.recovered);
    assert_eq!(meta.rotation_id, intent.rotation_id);
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        1,
        "healing never rotates"
    );
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let svc = service(FakeVault {
        write_errors: Mutex::new(vec![StoreError::Unavailable("503".into()); 1000].into()),
        ..FakeVault::default()
    });
    let started = Instant::now();
    let err = svc.rotate(command("abc"), soon(400)).await.unwrap_err();
    assert!(
        matches!(err, RotationError::StoreAfterRotation { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the deadline"
    );
    assert!(
        svc.pipeline().store.write_attempts.load(Ordering::SeqCst) >= 2,
        "retried at least once"
    );
}

#[tokio::test]
async fn a_lost_answer_after_commit_is_healed_inline() {
    let svc = service(FakeVault::default());
    *svc.pipeline().issuer.lose_next.lock().unwrap() = Some(LostAnswer::AfterCommit);
    let err = svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
    assert!(
        matches!(&err, RotationError::Recovered { stored, .. } if stored.version == KvVersion(1)),
        "{err:?}"
    );
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 1);
    settled(&svc, "abc");
    let (meta, _) = last(&svc, "abc").await;
    assert!(meta.recovered);
}

#[tokio::test]
async fn a_lost_answer_without_commit_changes_nothing() {
    let svc = service(FakeVault::default());
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    *svc.pipeline().issuer.lose_next.lock().unwrap() = Some(LostAnswer::WithoutCommit);
    let err = svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
    assert!(
        matches!(err, RotationError::Issuer(IssuerError::OutcomeUnknown(_))),
        "{err:?}"
    );
    assert_eq!(
        svc.pipeline().store.secrets("auth0/abc").len(),
        1,
        "no write"
    );
    settled(&svc, "abc");
}

#[tokio::test]
async fn a_stale_intent_leaves_the_newer_secret_in_place() {
    let svc = service(FakeVault::default());
    let id = ClientId::parse("abc").unwrap();
    let v = svc.pipeline().ledger.read_state(&id).await.unwrap().version;
    let stale = Intent {
        rotation_id: Uuid::new_v4(),
        step: Step::Rotate,
        caller: None,
        trace_id: None,
        reason: None,
        started_at: SystemTime::now() - Duration::from_secs(3600),
        idempotency_key: None,
    };
    let newer = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    // An old rotation's intent resurfaces (e.g. restored from a replica that was cut off).
    let v2 = svc.pipeline().ledger.read_state(&id).await.unwrap().version;
    assert!(v2 > v);
    let current = svc.pipeline().ledger.read_state(&id).await.unwrap().value;
    let orphan = ClientState {
        lease: None,
        intent: Some(stale),
        ..current
    };
    svc.pipeline()
        .ledger
        .write_state(&id, &orphan, v2)
        .await
        .unwrap();
    assert_eq!(crate::rotation::reconciler::reconcile_once(&svc).await, 1);
    assert_eq!(
        svc.pipeline().store.secrets("auth0/abc").len(),
        1,
        "nothing rewritten"
    );
    let (meta, version) = last(&svc, "abc").await;
    assert_eq!(
        (meta.rotation_id, version),
        (newer.metadata.rotation_id, KvVersion(1))
    );
    settled(&svc, "abc");
}

#[tokio::test]
async fn a_live_lease_elsewhere_makes_the_request_wait_then_abort() {
    let svc = service(FakeVault::default());
    let id = ClientId::parse("abc").unwrap();
    let held = ClientState {
        lease: Some(Lease {
            holder: "other-replica".into(),
            expires_at_ms: millis(SystemTime::now() + Duration::from_secs(60)),
        }),
        ..ClientState::default()
    };
    svc.pipeline()
        .ledger
        .write_state(&id, &held, KvVersion::NONE)
        .await
        .unwrap();
    let err = svc.rotate(command("abc"), soon(300)).await.unwrap_err();
    assert!(matches!(err, RotationError::Busy), "{err:?}");
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_other_clients() {
    let svc = service(FakeVault::default());
    let keyed = |id: &str| RotateCommand::parse(id, "", "deploy-7").unwrap();
    let first = svc.rotate(keyed("abc"), soon(10_000)).await.unwrap();
    let again = svc.rotate(keyed("abc"), soon(10_000)).await.unwrap();
    assert!(!first.replayed && again.replayed, "the replay says so");
    assert_eq!(
        Rotation {
            replayed: false,
            ..again
        },
        first
    );
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 1);
    let err = svc.rotate(keyed("other"), soon(10_000)).await.unwrap_err();
    assert!(
        matches!(
            err,
            RotationError::InvalidArgument(ValidationError::IdempotencyKeyReused)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn rotations_of_one_client_do_not_interleave() {
    let svc = service(FakeVault::default());
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let svc = Arc::clone(&svc);
            tokio::spawn(async move { svc.rotate(command("abc"), soon(10_000)).await })
        })
        .collect();
    let mut versions = Vec::new();
    for run in runs {
        versions.push(
            run.await
                .unwrap()
                .expect("no CAS conflict")
                .stored
                .version
                .get(),
        );
    }
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<u64>>());
    settled(&svc, "abc");
    assert!(svc.pipeline().locks.held() == 0, "local locks are released");
}

#[tokio::test]
async fn without_read_keys_rotations_are_refused_unless_accepted() {
    let svc = service(FakeVault::default());
    svc.set_recovery_available(false);
    let err = svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
    assert!(matches!(err, RotationError::RecoveryUnavailable), "{err:?}");
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 0);
}

/// Vault requests are what every other Vault user pays for: a rotation after the first makes
/// three (lease and intent, secret, close) and reads nothing.
#[tokio::test]
async fn a_warm_rotation_writes_three_records_and_reads_none() {
    let svc = service(FakeVault::default());
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    let reads = || {
        svc.pipeline().ledger.state_reads.load(Ordering::SeqCst)
            + svc.pipeline().store.version_reads.load(Ordering::SeqCst)
    };
    let writes = || {
        svc.pipeline().ledger.state_writes.load(Ordering::SeqCst)
            + svc.pipeline().store.write_attempts.load(Ordering::SeqCst)
    };
    let (reads_before, writes_before) = (reads(), writes());
    let second = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    assert_eq!(reads() - reads_before, 0, "no reads");
    assert_eq!(writes() - writes_before, 3, "lease, secret, close");
    assert_eq!(second.stored.version, KvVersion(2));
    settled(&svc, "abc");
    let (meta, version) = last(&svc, "abc").await;
    assert_eq!(
        (meta.rotation_id, version),
        (second.metadata.rotation_id, KvVersion(2))
    );
}

/// The record kept in memory is only a guess: another replica's rotation in between makes
/// the lease write fail, and the record is read again.
#[tokio::test]
async fn a_rotation_elsewhere_in_between_is_noticed() {
    let svc = service(FakeVault::default());
    let id = ClientId::parse("abc").unwrap();
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    // Another replica rotates: the key gets version 2, and its close records that.
    svc.pipeline()
        .store
        .write_outside("auth0/abc", "from-elsewhere");
    let record = svc.pipeline().ledger.read_state(&id).await.unwrap();
    let mut state = record.value;
    state.last.as_mut().unwrap().kv_version = KvVersion(2);
    svc.pipeline()
        .ledger
        .write_state(&id, &state, record.version)
        .await
        .unwrap();
    let reads = svc.pipeline().ledger.state_reads.load(Ordering::SeqCst);
    let rotation = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    assert_eq!(
        svc.pipeline().ledger.state_reads.load(Ordering::SeqCst) - reads,
        1,
        "the record is read once the write fails"
    );
    assert_eq!(rotation.stored.version, KvVersion(3));
    settled(&svc, "abc");
}

/// A write to the key from outside the service (an operator's `vault kv put`) does not fail
/// the next rotation: under its lease, the service reads the key's version and writes again.
#[tokio::test]
async fn a_key_written_outside_the_service_is_written_over() {
    let svc = service(FakeVault::default());
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    svc.pipeline()
        .store
        .write_outside("auth0/abc", "pasted-by-an-operator");
    let rotation = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    assert_eq!(rotation.stored.version, KvVersion(3));
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        2,
        "rotated once more"
    );
    settled(&svc, "abc");
}

/// After a first rotation, a lost answer read back is a rotation for sure (Auth0's secret is
/// not the one Vault held): the caller gets OK, marked recovered, and is not led to rotate
/// again.
#[tokio::test]
async fn a_lost_answer_read_back_over_an_older_secret_answers_ok() {
    let svc = service(FakeVault::default());
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    *svc.pipeline().issuer.lose_next.lock().unwrap() = Some(LostAnswer::AfterCommit);
    let rotation = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    assert!(
        rotation.metadata.recovered,
        "the answer says it was read back"
    );
    assert_eq!(rotation.stored.version, KvVersion(2));
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 2);
    settled(&svc, "abc");
}

/// The records kept in memory are bounded: a large tenant costs some reads, not memory without
/// end.
#[tokio::test]
async fn the_records_kept_in_memory_are_bounded() {
    use crate::rotation::locks::KNOWN_RECORDS_MAX;
    let svc = service(FakeVault::default());
    for n in 0..KNOWN_RECORDS_MAX + 5 {
        let id = ClientId::parse(&format!("c{n}")).unwrap();
        let record = Versioned {
            version: KvVersion(1),
            value: ClientState::default(),
        };
        svc.pipeline().locks.remember(&id, record);
    }
    assert_eq!(svc.pipeline().locks.known(), KNOWN_RECORDS_MAX);
}

/// Drift: Vault against the secret Auth0 accepts; a rotation that requires them in sync
/// refuses when they are not, and rotates nothing. A client Vault never held is not drifted:
/// there is nothing to compare.
#[tokio::test]
async fn drift_is_reported_and_require_in_sync_refuses_a_drifted_client() {
    use crate::rotation::Drift;
    let svc = service(FakeVault::default());
    let id = ClientId::parse("abc").unwrap();
    let never = svc.status(&ClientId::parse("other").unwrap(), true).await;
    assert_eq!(never.unwrap().drift, Some(Drift::NotHeld));
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    let drift = |svc: Arc<Svc>| {
        let id = id.clone();
        async move { svc.status(&id, true).await.unwrap().drift }
    };
    assert_eq!(drift(Arc::clone(&svc)).await, Some(Drift::InSync));
    // Someone rotates at the dashboard: Auth0 moves on, Vault does not.
    svc.pipeline()
        .issuer
        .live
        .lock()
        .unwrap()
        .insert("abc".into(), "from-the-dashboard".into());
    assert_eq!(drift(Arc::clone(&svc)).await, Some(Drift::Drifted));
    let mut strict = command("abc");
    strict.require_in_sync = true;
    let err = svc.rotate(strict, soon(10_000)).await.unwrap_err();
    assert!(matches!(err, RotationError::Drifted { .. }), "{err:?}");
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        1,
        "nothing rotated"
    );
    let state: Option<ClientState> = svc.pipeline().ledger.read("c/abc").value;
    assert!(state.unwrap().is_closed(), "the refusal closed its intent");
    // Without the requirement, a rotation replaces both.
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    settled(&svc, "abc");
    assert_eq!(drift(Arc::clone(&svc)).await, Some(Drift::InSync));
}

/// A dry run with Vault down refuses as the rotation would, and touches nothing.
#[tokio::test]
async fn a_dry_run_with_vault_down_refuses_and_rotates_nothing() {
    let svc = service(FakeVault {
        read_error: Some(StoreError::Unavailable("down".into())),
        ..FakeVault::default()
    });
    let err = svc.validate(&command("abc")).await.unwrap_err();
    assert!(
        matches!(err, RotationError::VaultBeforeRotation(_)),
        "{err:?}"
    );
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 0);
    assert_eq!(svc.pipeline().ledger.state_writes.load(Ordering::SeqCst), 0);
}
