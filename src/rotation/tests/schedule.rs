//! Scheduled rotations: a pass rotates the clients a rule finds due, once each, as the
//! scheduler; a dry-run rule rotates nothing; a rotation whose view of the client is out of
//! date is refused before Auth0 is called.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::{
    fakes::FakeVault,
    protocol::{Svc, command, seed, service, service_with, soon},
};
use crate::rotation::{
    ClientId, LastSeen, RotateCommand, RotationError, Rule, Schedule, Selector, Strategy,
    scheduler::Memory,
};

pub(super) fn rule(clients: &str, max_age: Duration, dry_run: bool) -> Rule {
    Rule {
        label: format!("rotate {clients}"),
        selector: Selector::parse(&[clients.into()], &[], "", BTreeMap::new()).unwrap(),
        max_age: crate::rotation::Spelled::of(max_age),
        before_expiry: None,
        strategy: Strategy::Immediate,
        window: None,
        jitter: Duration::ZERO,
        dry_run,
    }
}

/// The issuer also holds c1, c2 and c3 (beside abc and other); `rules` are in force.
pub(super) fn scheduled(rules: Vec<Rule>) -> (Arc<Svc>, Arc<Schedule>) {
    let svc = service(FakeVault::default());
    seed(&svc, &["c1", "c2", "c3"]);
    let schedule = Arc::new(Schedule { rules });
    let source = Arc::clone(&schedule);
    svc.use_schedule(Box::new(move || Arc::clone(&source)));
    (svc, schedule)
}

/// A pass of a scheduler that remembers nothing (a replica just started).
async fn pass(svc: &Arc<Svc>, schedule: &Arc<Schedule>) {
    pass_with(svc, schedule, &mut Memory::default()).await;
}

async fn pass_with(svc: &Arc<Svc>, schedule: &Arc<Schedule>, memory: &mut Memory) {
    // Refreshed at every pass: the catalogue always holds what the issuer holds now.
    crate::rotation::scheduler::pass(
        svc,
        schedule,
        Duration::from_secs(1),
        Duration::ZERO,
        memory,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_pass_rotates_each_due_client_once_as_the_scheduler_and_the_next_pass_nothing() {
    let (svc, schedule) = scheduled(vec![rule("c*", Duration::from_secs(3600), false)]);
    svc.rotate(command("c2"), soon(10_000)).await.unwrap();
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 1);

    // Two passes at once, as two replicas' would be: c1 and c3 have no rotation on record and
    // are due; c2 was rotated a moment ago.
    tokio::join!(pass(&svc, &schedule), pass(&svc, &schedule));
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        3,
        "c1 and c3 once each, c2 not at all"
    );
    for id in ["c1", "c3"] {
        let history = svc.history(&ClientId::parse(id).unwrap()).await.unwrap();
        assert_eq!(history.len(), 1, "{id}: {history:?}");
        assert_eq!(history[0].caller.as_deref(), Some("scheduler"));
        assert_eq!(history[0].outcome, "ok");
        let reason = history[0].reason.as_ref().unwrap().as_str();
        assert!(
            reason.contains("rotate c*") && reason.contains("1h"),
            "{reason}"
        );
    }
    for id in ["abc", "other"] {
        let history = svc.history(&ClientId::parse(id).unwrap()).await.unwrap();
        assert!(history.is_empty(), "{id} is no rule's");
    }

    pass(&svc, &schedule).await;
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        3,
        "none is due again yet"
    );

    // ListClients shows when each is due next: an hour after its last rotation.
    let page = crate::rotation::inventory::page(&svc, None, 10, |_| true)
        .await
        .unwrap();
    for entry in &page.entries {
        let next = entry.next_rotation.as_ref();
        match entry.client_id.as_str() {
            "abc" | "other" => assert!(next.is_none()),
            _ => {
                let next = next.expect("governed");
                let (last, _) = entry.last.as_ref().unwrap();
                assert_eq!(next.at, last.rotated_at + Duration::from_secs(3600));
                assert_eq!(next.rule, "rotate c*");
                assert!(!next.dry_run);
            }
        }
    }
}

#[tokio::test]
async fn a_dry_run_rule_rotates_nothing_and_the_first_matching_rule_governs() {
    // c1 matches the dry run first; the live rule behind it never applies to c1.
    let (svc, schedule) = scheduled(vec![
        rule("c1", Duration::from_secs(3600), true),
        rule("c*", Duration::from_secs(3600), false),
    ]);
    pass(&svc, &schedule).await;
    let c1 = svc.history(&ClientId::parse("c1").unwrap()).await.unwrap();
    assert!(c1.is_empty(), "dry run: {c1:?}");
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        2,
        "c2 and c3"
    );
    let page = crate::rotation::inventory::page(&svc, None, 10, |_| true)
        .await
        .unwrap();
    let c1 = page
        .entries
        .iter()
        .find(|e| e.client_id.as_str() == "c1")
        .unwrap();
    let next = c1.next_rotation.as_ref().unwrap();
    assert!(next.dry_run && next.rule == "rotate c1");
}

#[tokio::test]
async fn a_rotation_for_a_last_rotation_that_is_no_longer_the_last_is_refused_unsent() {
    let svc = service(FakeVault::default());
    let first = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    let sent = svc.pipeline().issuer.rotations.load(Ordering::SeqCst);
    let stale = RotateCommand {
        if_last: Some(LastSeen(None)),
        ..command("abc")
    };
    let refused = svc.rotate(stale, soon(10_000)).await;
    assert!(
        matches!(refused, Err(RotationError::Superseded { .. })),
        "{refused:?}"
    );
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        sent,
        "Auth0 not called"
    );
    let current = RotateCommand {
        if_last: Some(LastSeen(Some(first.metadata.rotation_id))),
        ..command("abc")
    };
    svc.rotate(current, soon(10_000)).await.unwrap();
    assert_eq!(
        svc.pipeline().issuer.rotations.load(Ordering::SeqCst),
        sent + 1
    );
}

#[tokio::test]
async fn a_key_client_is_scheduled_by_age_and_before_its_credential_expires() {
    // Keys registered by the service expire after 2 hours; the rule rotates every 30 days,
    // and 3 hours before a credential expires.
    let svc = service_with(FakeVault::default(), |s| {
        s.keys.credential_lifetime = Some(Duration::from_secs(2 * 3600));
    });
    let made_elsewhere = include_str!("../../emulator/credentials/seed-key.pub.pem");
    svc.pipeline().issuer.add_key_client("kkk", made_elsewhere);
    let schedule = Arc::new(Schedule {
        rules: vec![Rule {
            before_expiry: Some(Duration::from_secs(3 * 3600)),
            ..rule("k*", Duration::from_secs(30 * 86_400), false)
        }],
    });
    let source = Arc::clone(&schedule);
    svc.use_schedule(Box::new(move || Arc::clone(&source)));
    let kkk = ClientId::parse("kkk").unwrap();

    // Never rotated by the service: due at once, and rotated as a key.
    pass(&svc, &schedule).await;
    let history = svc.history(&kkk).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].strategy, Strategy::Key);
    assert_eq!(history[0].caller.as_deref(), Some("scheduler"));
    let first = history[0].rotation_id;

    // During the overlap the client is not due, whatever its expiry says.
    pass(&svc, &schedule).await;
    assert_eq!(svc.history(&kkk).await.unwrap().len(), 1, "overlap pending");

    // Once the old key is retired, the new one expires within before_expiry: due again,
    // with a reason that says so.
    svc.complete(kkk.clone(), first, Default::default(), soon(10_000))
        .await
        .unwrap();
    let page = crate::rotation::inventory::page(&svc, None, 10, |_| true)
        .await
        .unwrap();
    let entry = page.entries.iter().find(|e| e.client_id == kkk).unwrap();
    let next = entry.next_rotation.as_ref().expect("governed");
    assert!(next.at <= std::time::SystemTime::now(), "due by expiry");
    pass(&svc, &schedule).await;
    let history = svc.history(&kkk).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    let reason = history[0].reason.as_ref().unwrap().as_str();
    assert!(reason.contains("credential expires"), "{reason}");

    // Without an expiry within reach, the same client waits for max_age.
    let by_age = Arc::new(Schedule {
        rules: vec![rule("k*", Duration::from_secs(30 * 86_400), false)],
    });
    let source = Arc::clone(&by_age);
    svc.use_schedule(Box::new(move || Arc::clone(&source)));
    svc.complete(
        kkk.clone(),
        history[0].rotation_id,
        Default::default(),
        soon(10_000),
    )
    .await
    .unwrap();
    pass(&svc, &by_age).await;
    assert_eq!(svc.history(&kkk).await.unwrap().len(), 2, "not due by age");
}

/// This replica's heartbeat, asking for the scheduler lease (the reconciler's beat does).
async fn beat(svc: &Arc<Svc>) {
    use crate::rotation::presence::{Heart, beat};

    let p = svc.pipeline();
    p.seat.want(true);
    let heart = Heart {
        incarnation: p.incarnation,
        ttl: Duration::from_secs(60),
    };
    beat(p, &heart, true).await.expect("a beat");
}

/// One replica at a time runs the schedule's passes, the one whose heartbeat holds the scheduler
/// lease: a live lease elsewhere keeps this one from listing or rotating anything; one that
/// expired (its holder died) is taken over by this replica's next beat, and the due clients are
/// rotated, once. Holding the lease costs no request beside the heartbeat.
#[tokio::test]
async fn only_the_replica_holding_the_scheduler_lease_runs_passes() {
    use std::time::SystemTime;

    use crate::rotation::{Lease, Ledger, Presence, millis, scheduler::turn};

    let (svc, schedule) = scheduled(vec![rule("c*", Duration::from_secs(3600), false)]);
    let ledger = &svc.pipeline().ledger;
    let expires = SystemTime::now() + Duration::from_millis(300);
    let elsewhere = Presence {
        scheduler: Some(Lease {
            holder: "other-replica".into(),
            expires_at_ms: millis(expires),
        }),
        ..Presence::default()
    };
    let version = ledger.read_presence().await.unwrap().version;
    ledger.write_presence(&elsewhere, version).await.unwrap();
    let lists = || svc.pipeline().issuer.list_calls.load(Ordering::SeqCst);
    let listed_before = lists();
    let mut memory = Memory::default();
    let interval = Duration::from_secs(1);
    beat(&svc).await;
    assert!(!turn(&svc, &schedule, interval, Duration::ZERO, &mut memory).await);
    assert_eq!(
        lists(),
        listed_before,
        "Auth0 was not asked for the client list"
    );
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 0);

    // Its holder stops renewing it: this replica's beat takes it once it has expired, and the
    // pass rotates c1, c2 and c3.
    let started = std::time::Instant::now();
    loop {
        beat(&svc).await;
        if turn(&svc, &schedule, interval, Duration::ZERO, &mut memory).await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never taken over"
        );
        assert_eq!(lists(), listed_before, "no pass before the takeover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(SystemTime::now() >= expires, "not taken before it expired");
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 3);
    let held = ledger.read_presence().await.unwrap().value.scheduler;
    assert_eq!(held.unwrap().holder, svc.pipeline().settings.replica);
    // Its own lease: the next turn runs again (with no beat between), and nothing is due.
    assert!(turn(&svc, &schedule, interval, Duration::ZERO, &mut memory).await);
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 3);

    // A replica whose schedule is gone gives the lease up at its next beat.
    svc.pipeline().seat.want(false);
    let p = svc.pipeline();
    let heart = crate::rotation::presence::Heart {
        incarnation: p.incarnation,
        ttl: Duration::from_secs(60),
    };
    crate::rotation::presence::beat(p, &heart, true)
        .await
        .unwrap();
    assert_eq!(ledger.read_presence().await.unwrap().value.scheduler, None);
    assert!(!turn(&svc, &schedule, interval, Duration::ZERO, &mut memory).await);
}

/// The schedule's passes select from the catalogue kept in the ledger: listed from Auth0 once
/// per refresh, not at every pass, and a replica with none of its own (one taking the scheduler
/// over) starts from the ledger's without listing. A client added meanwhile is found at the
/// next refresh.
#[tokio::test]
async fn passes_select_from_the_catalogue_listed_once_per_refresh() {
    use crate::rotation::{Ledger, scheduler::pass as run_pass};

    let (svc, schedule) = scheduled(vec![rule("c*", Duration::from_secs(3600), false)]);
    let lists = || svc.pipeline().issuer.list_calls.load(Ordering::SeqCst);
    let rotations = || svc.pipeline().issuer.rotations.load(Ordering::SeqCst);
    let (interval, hour) = (Duration::from_secs(1), Duration::from_secs(3600));
    let mut memory = Memory::default();
    run_pass(&svc, &schedule, interval, hour, &mut memory)
        .await
        .unwrap();
    assert_eq!(lists(), 1, "listed once");
    assert_eq!(rotations(), 3);
    let kept = svc
        .pipeline()
        .ledger
        .read_catalogue(std::time::UNIX_EPOCH)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.clients.len(),
        5,
        "every client of the tenant, rotatable or not"
    );

    // A client added at Auth0 is not listed again before the refresh...
    seed(&svc, &["c4"]);
    for _ in 0..3 {
        run_pass(&svc, &schedule, interval, hour, &mut memory)
            .await
            .unwrap();
    }
    assert_eq!(lists(), 1);
    assert_eq!(rotations(), 3);
    // ...nor by a replica that starts from the ledger's catalogue...
    let mut taking_over = Memory::default();
    run_pass(&svc, &schedule, interval, hour, &mut taking_over)
        .await
        .unwrap();
    assert_eq!(lists(), 1, "the ledger's catalogue, not a listing");
    // ...and is found once the catalogue is older than the refresh.
    run_pass(&svc, &schedule, interval, Duration::ZERO, &mut memory)
        .await
        .unwrap();
    assert_eq!(lists(), 2);
    assert_eq!(rotations(), 4, "c4 found and rotated");

    // At rest a refresh that finds the same clients writes nothing to the catalogue: the
    // scheduler's next heartbeat says when it found them current, and a replica taking over
    // reads the catalogue as current as of then, though it was listed long before.
    let ledger = &svc.pipeline().ledger;
    let long_ago = std::time::SystemTime::now() - 2 * hour;
    ledger.catalogue.lock().unwrap().as_mut().unwrap().listed_at = long_ago;
    run_pass(&svc, &schedule, interval, Duration::ZERO, &mut memory)
        .await
        .unwrap();
    assert_eq!(lists(), 3);
    let kept = ledger.read_catalogue(std::time::UNIX_EPOCH).await.unwrap();
    assert_eq!(kept.unwrap().listed_at, long_ago, "nothing written");
    beat(&svc).await;
    let confirmed = ledger.read_presence().await.unwrap().value;
    assert!(confirmed.catalogue_current_at_ms.is_some(), "{confirmed:?}");
    run_pass(&svc, &schedule, interval, hour, &mut Memory::default())
        .await
        .unwrap();
    assert_eq!(
        lists(),
        3,
        "the ledger's catalogue, current as the heartbeat says"
    );
}

/// A client the scheduler has just rotated is due again by its age: the next passes do not read
/// its record to learn so (after a wave of 1,000 due clients, 1,000 reads a pass otherwise).
#[tokio::test]
async fn the_clients_a_pass_rotated_are_not_read_again_before_they_are_due() {
    use crate::rotation::scheduler::turn;

    let (svc, schedule) = scheduled(vec![rule("c*", Duration::from_secs(3600), false)]);
    let mut memory = Memory::default();
    let hour = Duration::from_secs(3600);
    let interval = Duration::from_secs(1);
    beat(&svc).await;
    assert!(turn(&svc, &schedule, interval, hour, &mut memory).await);
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 3);
    let reads = || svc.pipeline().ledger.state_reads.load(Ordering::SeqCst);
    let before = reads();
    assert!(turn(&svc, &schedule, interval, hour, &mut memory).await);
    assert_eq!(reads(), before, "no client record read");
    assert_eq!(svc.pipeline().issuer.rotations.load(Ordering::SeqCst), 3);
}
