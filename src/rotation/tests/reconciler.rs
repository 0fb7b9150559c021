//! The reconciler's share of the protocol: what a replica left open it heals itself, at once,
//! and one replica at a time scans everyone's records.

use std::{
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use super::{
    fakes::FakeVault,
    protocol::{command, last, left_open_by_a_refused_store, service, settled, soon},
};
use crate::rotation::{ClientId, Lease, Ledger, millis};

/// A replica heals what it left open itself, at once: no waiting for its own lease to expire.
#[tokio::test]
async fn a_rotation_left_open_is_healed_by_its_replica_at_once() {
    let svc = left_open_by_a_refused_store().await;
    let id = ClientId::parse("abc").unwrap();
    let open = svc.pipeline().ledger.read_state(&id).await.unwrap().value;
    assert!(
        open.lease.is_some_and(|l| l.active(SystemTime::now())),
        "its lease is still live"
    );
    assert_eq!(
        crate::rotation::reconciler::heal_left_open(&svc).await,
        0,
        "nothing left open"
    );
    settled(&svc, "abc");
    assert!(last(&svc, "abc").await.0.recovered);
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 1);
}

/// One replica at a time scans everyone's records: a live scanner lease elsewhere keeps this
/// one from scanning; an expired one is taken over.
#[tokio::test]
async fn one_replica_at_a_time_holds_the_scanner_lease() {
    let svc = service(FakeVault::default());
    assert!(
        crate::rotation::reconciler::take_scanner(svc.pipeline())
            .await
            .is_some(),
        "free: taken"
    );
    assert!(
        crate::rotation::reconciler::take_scanner(svc.pipeline())
            .await
            .is_some(),
        "its own: renewed"
    );
    let elsewhere = |secs: i64| Lease {
        holder: "other-replica".into(),
        expires_at_ms: if secs >= 0 {
            millis(SystemTime::now() + Duration::from_secs(secs as u64))
        } else {
            millis(SystemTime::now() - Duration::from_secs((-secs) as u64))
        },
    };
    let version = svc
        .pipeline()
        .ledger
        .read_role(crate::rotation::Role::Scanner)
        .await
        .unwrap()
        .version;
    svc.pipeline()
        .ledger
        .write_role(crate::rotation::Role::Scanner, &elsewhere(60), version)
        .await
        .unwrap();
    assert!(
        crate::rotation::reconciler::take_scanner(svc.pipeline())
            .await
            .is_none(),
        "held elsewhere"
    );
    let version = svc
        .pipeline()
        .ledger
        .read_role(crate::rotation::Role::Scanner)
        .await
        .unwrap()
        .version;
    svc.pipeline()
        .ledger
        .write_role(crate::rotation::Role::Scanner, &elsewhere(-1), version)
        .await
        .unwrap();
    assert!(
        crate::rotation::reconciler::take_scanner(svc.pipeline())
            .await
            .is_some(),
        "expired: taken over"
    );
}

/// A close that fails (Vault blinked after the secret was stored) leaves the intent open with a
/// live lease; the replica closes it at once instead of making the client wait for the lease.
#[tokio::test]
async fn a_failed_close_is_healed_by_its_replica_at_once() {
    let svc = service(FakeVault::default());
    // Lease and intent, then the close: the second write of the client's record fails.
    svc.pipeline()
        .ledger
        .fail_state_write
        .store(2, Ordering::SeqCst);
    let rotation = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    let id = ClientId::parse("abc").unwrap();
    assert!(
        svc.pipeline()
            .ledger
            .read_state(&id)
            .await
            .unwrap()
            .value
            .intent
            .is_some(),
        "the intent is still open"
    );
    assert_eq!(crate::rotation::reconciler::heal_left_open(&svc).await, 0);
    settled(&svc, "abc");
    let (meta, version) = last(&svc, "abc").await;
    assert_eq!(
        (meta.rotation_id, version),
        (rotation.metadata.rotation_id, rotation.stored.version)
    );
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        1,
        "never rotated again"
    );
}
