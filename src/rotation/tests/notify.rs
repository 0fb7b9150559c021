//! Notifications are recorded with the step they report and removed once delivered.

use std::time::Duration;

use super::{
    fakes::FakeVault,
    protocol::{command, service, soon},
};
use crate::rotation::{
    ClientId, ClientState, Lease, Ledger, NotificationKind, RotateCommand, Strategy, millis,
};

fn id() -> ClientId {
    ClientId::parse("abc").unwrap()
}

#[tokio::test]
async fn each_step_records_its_notification_until_delivered() {
    let svc = service(FakeVault::default());
    // Nothing is recorded before someone delivers them.
    svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    assert!(svc.pending_notifications(&id()).await.unwrap().is_empty());

    let mut written = svc.subscribe();
    let rotated = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
    assert_eq!(written.recv().await, Some(id()));
    let staged = RotateCommand {
        strategy: Strategy::Staged,
        ..command("abc")
    };
    svc.rotate(staged, soon(10_000)).await.unwrap();
    svc.pipeline()
        .issuer
        .live
        .lock()
        .unwrap()
        .insert("abc".into(), "from-the-dashboard".into());
    svc.status(&id(), true).await.unwrap();
    // Refused: a staged rotation waits.
    assert!(svc.rotate(command("abc"), soon(10_000)).await.is_err());

    let pending = svc.pending_notifications(&id()).await.unwrap();
    let kinds: Vec<_> = pending.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        [
            NotificationKind::Completed,
            NotificationKind::Staged,
            NotificationKind::DriftDetected,
            NotificationKind::Failed,
        ]
    );
    assert_eq!(pending[0].rotation_id, Some(rotated.metadata.rotation_id));
    assert_eq!(pending[0].stored, Some(rotated.stored));
    assert!(pending[1].promote_after.is_some());
    assert_eq!(pending[3].outcome.as_deref(), Some("staged_pending"));

    // Delivered ones go; not while a rotation holds the record (its fence).
    let delivered: Vec<_> = pending[..2].iter().map(|n| n.id).collect();
    let read = svc.pipeline().ledger.read_state(&id()).await.unwrap();
    let held = ClientState {
        lease: Some(Lease {
            holder: "other".into(),
            expires_at_ms: millis(std::time::SystemTime::now() + Duration::from_secs(60)),
        }),
        ..read.value.clone()
    };
    let v = svc
        .pipeline()
        .ledger
        .write_state(&id(), &held, read.version)
        .await
        .unwrap();
    assert!(!svc.acknowledge(&id(), &delivered).await.unwrap());
    svc.pipeline()
        .ledger
        .write_state(&id(), &read.value, v)
        .await
        .unwrap();
    assert!(svc.acknowledge(&id(), &delivered).await.unwrap());
    let left: Vec<_> = svc
        .pending_notifications(&id())
        .await
        .unwrap()
        .iter()
        .map(|n| n.kind)
        .collect();
    assert_eq!(
        left,
        [NotificationKind::DriftDetected, NotificationKind::Failed]
    );
}
