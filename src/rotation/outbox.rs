//! The outbox of notifications for a webhook. Each is recorded in the client's ledger record by
//! the very write that settles the step it reports (no extra Vault request, and a crash cannot
//! separate the two), delivered by whoever subscribed (`webhook`), and removed from the record
//! once delivered: at least once, across restarts.

use std::{sync::Mutex, time::SystemTime};

use tokio::sync::mpsc;
use tracing::warn;
use uuid::Uuid;

use super::{
    error::{RotationError, StoreError},
    ids::ClientId,
    notify::{Notification, NotificationKind},
    ports::Ledger,
    state::ClientState,
};

/// Undelivered notifications kept per client, at most: a receiver down for long loses the
/// oldest rather than grow the record without end.
const PENDING_MAX: usize = 50;

/// Whether notifications are recorded, and whom to tell that a record holds new ones.
#[derive(Default)]
pub(super) struct Outbox {
    subscriber: Mutex<Option<mpsc::UnboundedSender<ClientId>>>,
}

impl Outbox {
    /// Starts recording notifications; the receiver gets the id of every client whose record
    /// has new ones to deliver.
    pub(super) fn subscribe(&self) -> mpsc::UnboundedReceiver<ClientId> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.subscriber.lock().expect("outbox poisoned") = Some(tx);
        rx
    }

    pub(super) fn enabled(&self) -> bool {
        self.subscriber.lock().expect("outbox poisoned").is_some()
    }

    /// Adds `notification` to the record about to be written, when someone subscribed.
    pub(super) fn record(&self, state: &mut ClientState, notification: Notification) {
        if !self.enabled() {
            return;
        }
        if state.notifications.len() >= PENDING_MAX {
            warn!(client_id = %notification.client_id, "too many undelivered notifications; dropping the oldest");
            state.notifications.remove(0);
        }
        state.notifications.push(notification);
    }

    /// Tells the subscriber that `client_id`'s record holds notifications.
    pub(super) fn written(&self, client_id: &ClientId) {
        if let Some(tx) = self.subscriber.lock().expect("outbox poisoned").as_ref() {
            let _ = tx.send(client_id.clone());
        }
    }

    /// A scan found `state`: notifications recorded before `orphaned` are delivered by this
    /// replica too (the one that recorded them may be gone).
    pub(super) fn scanned(&self, client_id: &ClientId, state: &ClientState, orphaned: SystemTime) {
        if state.notifications.iter().any(|n| n.at <= orphaned) {
            self.written(client_id);
        }
    }

    /// Records that a drift check found Vault out of sync, unless such a notification is
    /// still waiting. A record that a rotation holds is left alone (the rotation settles what
    /// the check saw); a write lost to another (a delivery removing notifications) is retried.
    pub(super) async fn drift_found(&self, ledger: &impl Ledger, client_id: &ClientId) {
        if !self.enabled() {
            return;
        }
        loop {
            let Ok(record) = ledger.read_state(client_id).await else {
                return;
            };
            let waiting = record
                .value
                .notifications
                .iter()
                .any(|n| n.kind == NotificationKind::DriftDetected);
            if waiting || record.value.leased() || record.value.intent.is_some() {
                return;
            }
            let mut state = record.value;
            let drift = Notification::new(NotificationKind::DriftDetected, client_id, None);
            self.record(&mut state, drift);
            match ledger.write_state(client_id, &state, record.version).await {
                Ok(_) => return self.written(client_id),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => {
                    warn!(%client_id, error = %e, "could not record the drift notification");
                    return;
                }
            }
        }
    }
}

/// The notifications waiting in `client_id`'s record.
pub(super) async fn pending(
    ledger: &impl Ledger,
    client_id: &ClientId,
) -> Result<Vec<Notification>, RotationError> {
    let record = ledger
        .read_state(client_id)
        .await
        .map_err(RotationError::Vault)?;
    Ok(record.value.notifications)
}

/// Removes delivered notifications from the record. Only while no rotation holds the client's
/// lease: the record's version is that rotation's fence, and moving it would make the
/// rotation's own writes fail. Returns false when it has to wait for one.
pub(super) async fn acknowledge(
    ledger: &impl Ledger,
    client_id: &ClientId,
    delivered: &[Uuid],
) -> Result<bool, RotationError> {
    loop {
        let record = ledger
            .read_state(client_id)
            .await
            .map_err(RotationError::Vault)?;
        if record.value.leased() || record.value.intent.is_some() {
            return Ok(false);
        }
        let mut state = record.value;
        let before = state.notifications.len();
        state.notifications.retain(|n| !delivered.contains(&n.id));
        if state.notifications.len() == before {
            return Ok(true);
        }
        match ledger.write_state(client_id, &state, record.version).await {
            Ok(_) => return Ok(true),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(RotationError::Vault(e)),
        }
    }
}
