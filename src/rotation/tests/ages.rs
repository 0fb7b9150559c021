//! Secret ages and overdue clients: the scanning replica's figures, from the ledger alone.

use std::{
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use super::{
    fakes::FakeVault,
    protocol::{Svc, command, seed, service_with, soon},
    schedule::{rule, scheduled},
};
use crate::{
    metrics::{SecretAgeSource, SecretAges},
    rotation::{
        ClientId, Lease, Ledger, Presence, Versioned, millis,
        presence::Heart,
        reconciler::{ScanMemory, turn},
    },
};

const HOUR: Duration = Duration::from_secs(3600);

/// Makes the ledger say `id` was last rotated `ago` (as another replica's rotation, or an old
/// one, would leave it).
async fn rotated_ago(svc: &Svc, id: &str, ago: Duration) {
    let ledger = &svc.pipeline().ledger;
    let id = ClientId::parse(id).unwrap();
    let Versioned { version, mut value } = ledger.read_state(&id).await.unwrap();
    value.last.as_mut().unwrap().metadata.rotated_at = SystemTime::now() - ago;
    ledger.write_state(&id, &value, version).await.unwrap();
}

fn figures(svc: &Svc) -> SecretAges {
    svc.pipeline().ages.secret_ages(SystemTime::now(), true)
}

fn heart() -> Heart {
    Heart {
        incarnation: uuid::Uuid::new_v4(),
        ttl: Duration::from_secs(60),
    }
}

/// Auth0 requests of any kind made so far.
fn auth0_requests(svc: &Svc) -> usize {
    let issuer = &svc.pipeline().issuer;
    issuer.rotations.load(Ordering::SeqCst)
        + issuer.list_calls.load(Ordering::SeqCst)
        + issuer.credential_calls.load(Ordering::SeqCst)
        + issuer.reads.load(Ordering::SeqCst)
}

fn approx(age: Option<Duration>, expected: Duration) -> bool {
    age.is_some_and(|age| age >= expected && age < expected + Duration::from_secs(60))
}

/// The scanner's full pass fills the book from the ledger (no Auth0 request): each client's age,
/// the oldest, and the clients older than ROTATOR_MAX_SECRET_AGE. A rotation another replica
/// makes of an overdue client is seen at the scanner's next turn (that record read again),
/// and at rest with none overdue no record is read. A replica that does not scan reports
/// nothing (0): only the scanner's figures count.
#[tokio::test]
async fn the_scanner_reports_ages_and_overdue_clients_from_the_ledger_alone() {
    let svc = service_with(FakeVault::default(), |s| {
        s.max_secret_age = Some(HOUR);
        // Every overdue client's record is worth reading again at each turn.
        s.reconcile_interval = Duration::from_nanos(1);
    });
    seed(&svc, &["c1", "c2", "c3"]);
    for id in ["c1", "c2", "c3"] {
        svc.rotate(command(id), soon(10_000)).await.unwrap();
    }
    rotated_ago(&svc, "c1", 2 * HOUR).await;
    rotated_ago(&svc, "c2", HOUR / 2).await;
    assert_eq!(
        figures(&svc),
        SecretAges::default(),
        "not before a full pass"
    );

    let (heart, mut memory) = (heart(), ScanMemory::default());
    let asked = auth0_requests(&svc);
    assert!(
        turn(&svc, &heart, &mut memory).await.is_some(),
        "a full pass"
    );
    let seen = figures(&svc);
    assert_eq!(seen.overdue, 1, "c1 only: {seen:?}");
    assert!(approx(seen.oldest, 2 * HOUR), "{seen:?}");
    let ids: Vec<&str> = seen.by_client.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["c1", "c2", "c3"]);
    assert!(approx(Some(seen.by_client[1].1), HOUR / 2), "{seen:?}");

    // Another replica rotates c1: the scanner's next turn at rest reads c1's record again,
    // and only that one.
    rotated_ago(&svc, "c1", Duration::ZERO).await;
    let reads = || svc.pipeline().ledger.state_reads.load(Ordering::SeqCst);
    let before = reads();
    assert!(turn(&svc, &heart, &mut memory).await.is_none(), "at rest");
    assert_eq!(reads() - before, 1, "the overdue client's record");
    let seen = figures(&svc);
    assert_eq!(seen.overdue, 0, "{seen:?}");
    assert!(
        approx(seen.oldest, HOUR / 2),
        "c2 is now the oldest: {seen:?}"
    );
    let before = reads();
    for _ in 0..3 {
        assert!(turn(&svc, &heart, &mut memory).await.is_none());
    }
    assert_eq!(reads(), before, "none overdue: no record read");
    assert_eq!(auth0_requests(&svc), asked, "Auth0 was never asked");

    // Another replica holds the scanner lease: this one's figures no longer count.
    let ledger = &svc.pipeline().ledger;
    let Versioned { version, .. } = ledger.read_presence().await.unwrap();
    let elsewhere = Presence {
        scanner: Some(Lease {
            holder: "other-replica".into(),
            expires_at_ms: millis(SystemTime::now() + HOUR),
        }),
        ..Presence::default()
    };
    ledger.write_presence(&elsewhere, version).await.unwrap();
    assert!(turn(&svc, &heart, &mut memory).await.is_none());
    assert_eq!(figures(&svc), SecretAges::default());
}

/// Under a schedule, a client is overdue once past its rule's due time (its max_age here), with
/// no ROTATOR_MAX_SECRET_AGE; the record of a client deleted from the tenant (absent from the
/// scheduler's catalogue, rotated before it was listed) is left out of every figure.
#[tokio::test]
async fn a_client_past_its_rules_due_time_is_overdue_and_a_deleted_one_is_left_out() {
    let (svc, schedule) = scheduled(vec![rule("c*", HOUR, false)]);
    // The scheduler's pass rotates c1..c3 and keeps the catalogue in the ledger.
    let mut memory = crate::rotation::scheduler::Memory::default();
    crate::rotation::scheduler::pass(&svc, &schedule, Duration::from_secs(1), HOUR, &mut memory)
        .await
        .unwrap();
    rotated_ago(&svc, "c1", 2 * HOUR).await;
    // A client deleted from the tenant long ago, whose record stays.
    let ledger = &svc.pipeline().ledger;
    let c2 = ledger
        .read_state(&ClientId::parse("c2").unwrap())
        .await
        .unwrap();
    let mut gone = c2.value;
    gone.last.as_mut().unwrap().metadata.rotated_at = SystemTime::now() - 3 * HOUR;
    let gone_id = ClientId::parse("c9deleted").unwrap();
    ledger
        .write_state(&gone_id, &gone, crate::rotation::KvVersion::NONE)
        .await
        .unwrap();

    let (heart, mut memory) = (heart(), ScanMemory::default());
    assert!(
        turn(&svc, &heart, &mut memory).await.is_some(),
        "a full pass"
    );
    let seen = figures(&svc);
    assert_eq!(seen.overdue, 1, "c1, by its rule: {seen:?}");
    assert!(
        approx(seen.oldest, 2 * HOUR),
        "not the deleted client's: {seen:?}"
    );
    assert!(
        seen.by_client.iter().all(|(id, _)| id != "c9deleted"),
        "{seen:?}"
    );
}
