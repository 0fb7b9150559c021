//! The reconciler's share of the protocol: what a replica left open it heals itself, at once,
//! and one replica at a time scans everyone's records.

use std::{
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use super::{
    fakes::FakeVault,
    protocol::{
        command, last, left_open_by_a_refused_store, seed, service, service_with, settled, soon,
    },
};
use crate::rotation::{ClientId, Ledger, millis};

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

/// One replica at a time scans everyone's records, and only when something may need healing:
/// a live scanner lease elsewhere keeps this one from scanning; an expired one is taken over
/// (a full pass); at rest a turn costs the replicas' record, read and written, and no client
/// record, also when a replica starts under a new name; a replica's lapsed heartbeat, a
/// replica restarting in place of one that died, an intent still under a running lease, and
/// the safety sweep each bring a full pass.
#[tokio::test]
async fn the_scanner_reads_client_records_only_when_something_may_need_healing() {
    use std::collections::BTreeMap;

    use crate::rotation::{
        Beat, Lease, Presence, Versioned,
        presence::Heart,
        reconciler::{ScanMemory, turn},
    };

    let svc = service(FakeVault::default());
    seed(&svc, &["c1", "c2", "c3"]);
    for id in ["c1", "c2", "c3"] {
        svc.rotate(command(id), soon(10_000)).await.unwrap();
    }
    let ledger = &svc.pipeline().ledger;
    let reads = || ledger.state_reads.load(Ordering::SeqCst);
    let heart = Heart {
        incarnation: uuid::Uuid::new_v4(),
        ttl: Duration::from_secs(60),
    };
    let mut memory = ScanMemory::default();
    let at = |secs: i64| match secs >= 0 {
        true => millis(SystemTime::now() + Duration::from_secs(secs as u64)),
        false => millis(SystemTime::now() - Duration::from_secs((-secs) as u64)),
    };
    let write = |presence: Presence| async move {
        let Versioned { version, .. } = ledger.read_presence().await.unwrap();
        ledger.write_presence(&presence, version).await.unwrap();
    };

    // Another replica scans: this one only beats.
    write(Presence {
        scanner: Some(Lease {
            holder: "other-replica".into(),
            expires_at_ms: at(60),
        }),
        beats: BTreeMap::from([(
            "other-replica".into(),
            Beat {
                expires_at_ms: at(60),
                incarnation: uuid::Uuid::new_v4(),
                replaced: false,
            },
        )]),
        ..Presence::default()
    })
    .await;
    let before = reads();
    assert!(turn(&svc, &heart, &mut memory).await.is_none());
    assert_eq!(reads(), before, "no client record read");
    let presence = ledger.read_presence().await.unwrap().value;
    assert!(
        presence
            .beats
            .contains_key(&svc.pipeline().settings.replica),
        "its heartbeat"
    );

    // The other replica died: its lease and heartbeat lapse; this one takes over with a full
    // pass, and forgets the dead one.
    let mut dead = ledger.read_presence().await.unwrap().value;
    dead.scanner.as_mut().unwrap().expires_at_ms = at(-1);
    dead.beats.get_mut("other-replica").unwrap().expires_at_ms = at(-1);
    write(dead).await;
    let before = reads();
    assert!(turn(&svc, &heart, &mut memory).await.is_some());
    assert_eq!(reads() - before, 3, "every client record once");
    let presence = ledger.read_presence().await.unwrap().value;
    assert_eq!(
        presence.scanner.unwrap().holder,
        svc.pipeline().settings.replica
    );
    assert!(!presence.beats.contains_key("other-replica"), "forgotten");

    // At rest: turn after turn, no client record is read.
    let before = reads();
    for _ in 0..5 {
        assert!(turn(&svc, &heart, &mut memory).await.is_none());
    }
    assert_eq!(reads(), before);

    // A replica starts under a new name: nothing to look for.
    let beat = |replaced| Beat {
        expires_at_ms: at(60),
        incarnation: uuid::Uuid::new_v4(),
        replaced,
    };
    let mut started = ledger.read_presence().await.unwrap().value;
    started.beats.insert("new-replica".into(), beat(false));
    write(started).await;
    let before = reads();
    assert!(turn(&svc, &heart, &mut memory).await.is_none());
    assert_eq!(reads(), before, "no client record read");

    // It dies and starts again under its name before its beat lapses: a full pass, once.
    let mut restarted = ledger.read_presence().await.unwrap().value;
    restarted.beats.insert("new-replica".into(), beat(true));
    write(restarted).await;
    assert!(turn(&svc, &heart, &mut memory).await.is_some());
    assert!(turn(&svc, &heart, &mut memory).await.is_none(), "then rest");
    // So does one that replaced a dead one between two of the scanner's turns.
    let mut unseen = ledger.read_presence().await.unwrap().value;
    unseen.beats.insert("third-replica".into(), beat(true));
    write(unseen).await;
    assert!(turn(&svc, &heart, &mut memory).await.is_some());
    assert!(turn(&svc, &heart, &mut memory).await.is_none(), "then rest");

    // An intent under a running lease (a rotation in flight, a dead replica's lease not yet
    // expired): the pass leaves it, and the next turn looks again.
    svc.pipeline().ledger.fail_state_write.store(
        ledger.state_writes.load(Ordering::SeqCst) + 2,
        Ordering::SeqCst,
    );
    let _ = svc.rotate(command("c1"), soon(10_000)).await;
    let mut safety = ScanMemory::default();
    let first = turn(&svc, &heart, &mut safety)
        .await
        .expect("took over: a full pass");
    if first.still_open > 0 {
        assert!(
            turn(&svc, &heart, &mut safety).await.is_some(),
            "looked again"
        );
    }

    // The safety sweep: a full pass once `full_scan_interval` has passed.
    let svc = service_with(FakeVault::default(), |s| {
        s.full_scan_interval = Duration::ZERO
    });
    let mut memory = ScanMemory::default();
    assert!(turn(&svc, &heart, &mut memory).await.is_some());
    assert!(
        turn(&svc, &heart, &mut memory).await.is_some(),
        "due every turn"
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

/// A replica that stops with nothing left open withdraws its heartbeat (and the scanner lease):
/// the scanner sees no lapse, and the next start under its name is a new replica; its beat
/// says it replaced one only when the earlier one did not leave.
#[tokio::test]
async fn a_replica_that_stops_cleanly_withdraws_its_heartbeat_and_is_not_scanned_for() {
    use crate::rotation::presence::{Heart, beat};

    let svc = service(FakeVault::default());
    let p = svc.pipeline();
    let heart = |incarnation| Heart {
        incarnation,
        ttl: Duration::from_secs(60),
    };
    assert!(beat(p, &heart(p.incarnation), true).await.unwrap().scanner);
    svc.leave().await;
    let presence = p.ledger.read_presence().await.unwrap().value;
    assert!(presence.beats.is_empty(), "{presence:?}");
    assert!(presence.scanner.is_none(), "the scanner lease is free");

    // Started again under the same name: a new replica, not one that died.
    let view = beat(p, &heart(uuid::Uuid::new_v4()), false).await.unwrap();
    assert!(view.replaced.is_empty(), "{view:?}");

    // That one is killed (no leave): the next start under the name says it replaced it.
    let view = beat(p, &heart(uuid::Uuid::new_v4()), false).await.unwrap();
    assert!(view.replaced.contains(&p.settings.replica), "{view:?}");
}

/// Stuck work pages: an intent a replica that died left open, which the scanner's heal cannot
/// finish (Vault refuses the write), is adopted by the scanner as if it had left it open itself:
/// counted in `secret_rotator_needs_resync` and retried at once until it heals.
#[tokio::test]
async fn an_orphan_the_scan_cannot_heal_is_adopted_and_retried_until_healed() {
    use crate::rotation::{ClientState, StoreError};

    let svc = left_open_by_a_refused_store().await;
    let id = ClientId::parse("abc").unwrap();
    let p = svc.pipeline();
    // As if another replica had left it: not in this replica's memory, its lease expired.
    let (_, rotation_id) = p.left_open.pending()[0].clone();
    p.left_open.healed(&id, rotation_id);
    let read = p.ledger.read_state(&id).await.unwrap();
    let orphan = ClientState {
        lease: None,
        ..read.value
    };
    p.ledger
        .write_state(&id, &orphan, read.version)
        .await
        .unwrap();

    p.store
        .write_errors
        .lock()
        .unwrap()
        .push_back(StoreError::Unavailable("down".into()));
    assert_eq!(crate::rotation::reconciler::reconcile_once(&svc).await, 0);
    // Adopted: what secret_rotator_needs_resync counts.
    assert_eq!(p.left_open.pending(), vec![(id.clone(), rotation_id)]);

    assert_eq!(crate::rotation::reconciler::heal_left_open(&svc).await, 0);
    settled(&svc, "abc");
    assert_eq!(
        p.issuer.rotations.load(Ordering::SeqCst),
        1,
        "never rotated again"
    );
}
