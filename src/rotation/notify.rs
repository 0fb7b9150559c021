//! Notifications of what rotations did, for a webhook. Each is recorded in the client's ledger
//! record by the very write that settles the step it reports (no extra Vault request, and a
//! crash cannot separate the two), delivered by whoever subscribed (`webhook`), and removed from
//! the record once delivered: at least once, across restarts. Never a secret.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;
use uuid::Uuid;

use super::{
    error::{RotationError, StoreError},
    ids::{ClientId, Reason},
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{ClientState, Rotation, StoredSecret, Strategy},
    service::RotationService,
};

/// Undelivered notifications kept per client, at most: a receiver down for long loses the
/// oldest rather than grow the record without end.
const PENDING_MAX: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A staged rotation's next secret is in Vault.
    Staged,
    /// A rotation or promotion stored the new secret.
    Completed,
    /// A rotation was refused or failed after it started; nothing changed, or a staged
    /// secret was withdrawn.
    Failed,
    /// Recovery stored the secret Auth0 accepts (a lost answer, a step cut off).
    Recovered,
    /// A staged rotation was cancelled.
    Cancelled,
    /// Vault does not hold the secret Auth0 accepts.
    DriftDetected,
}

impl NotificationKind {
    /// The event type receivers see.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staged => "rotation.staged",
            Self::Completed => "rotation.completed",
            Self::Failed => "rotation.failed",
            Self::Recovered => "rotation.recovered",
            Self::Cancelled => "rotation.cancelled",
            Self::DriftDetected => "drift.detected",
        }
    }
}

/// One notification. Ids, names, versions and times only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique: receivers drop repeats by it.
    pub id: Uuid,
    pub kind: NotificationKind,
    pub client_id: ClientId,
    pub at: SystemTime,
    pub rotation_id: Option<Uuid>,
    pub strategy: Option<Strategy>,
    /// Where the secret is, at the version the step wrote.
    pub stored: Option<StoredSecret>,
    pub caller: Option<String>,
    pub reason: Option<Reason>,
    pub promote_after: Option<SystemTime>,
    /// Why a rotation failed (the audit trail's outcome name).
    pub outcome: Option<String>,
}

impl Notification {
    pub fn new(kind: NotificationKind, client_id: &ClientId, rotation_id: Option<Uuid>) -> Self {
        Self {
            id: Uuid::new_v4(),
            kind,
            client_id: client_id.clone(),
            at: SystemTime::now(),
            rotation_id,
            strategy: None,
            stored: None,
            caller: None,
            reason: None,
            promote_after: None,
            outcome: None,
        }
    }
}

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// Starts recording notifications; the receiver gets the id of every client whose record
    /// has new ones to deliver.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<ClientId> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.notify.lock().expect("notify poisoned") = Some(tx);
        rx
    }

    /// Adds `notification` to the record about to be written, when someone subscribed.
    pub(super) fn record(&self, state: &mut ClientState, notification: Notification) {
        if self.notify.lock().expect("notify poisoned").is_none() {
            return;
        }
        if state.notifications.len() >= PENDING_MAX {
            warn!(client_id = %notification.client_id, "too many undelivered notifications; dropping the oldest");
            state.notifications.remove(0);
        }
        state.notifications.push(notification);
    }

    /// `state` with a notification of `kind` about `rotation` added.
    pub(super) fn with_rotation(
        &self,
        mut state: ClientState,
        kind: NotificationKind,
        client_id: &ClientId,
        rotation: &Rotation,
    ) -> ClientState {
        let m = &rotation.metadata;
        let outcome = match kind {
            NotificationKind::Staged => "staged",
            NotificationKind::Recovered => "recovered",
            _ if m.strategy == Strategy::Staged => "promoted",
            _ if m.recovered => "recovered",
            _ => "ok",
        };
        state.history_stored(rotation, outcome);
        let notification = Notification {
            strategy: Some(m.strategy),
            stored: Some(rotation.stored.clone()),
            caller: m.caller.clone(),
            reason: m.reason.clone(),
            promote_after: rotation.promote_after,
            ..Notification::new(kind, client_id, Some(m.rotation_id))
        };
        self.record(&mut state, notification);
        state
    }

    /// `state` with a notification that rotation `rotation_id` failed with `error` (and that
    /// drift was found, when that was why).
    pub(super) fn with_failure(
        &self,
        mut state: ClientState,
        client_id: &ClientId,
        rotation_id: Uuid,
        error: &RotationError,
    ) -> ClientState {
        state.history_failed(rotation_id, error.outcome());
        let failed = Notification {
            outcome: Some(error.outcome().to_owned()),
            ..Notification::new(NotificationKind::Failed, client_id, Some(rotation_id))
        };
        self.record(&mut state, failed);
        if matches!(error, RotationError::Drifted { .. }) {
            let drift = Notification::new(NotificationKind::DriftDetected, client_id, None);
            self.record(&mut state, drift);
        }
        state
    }

    /// Records that a drift check found Vault out of sync, unless such a notification is
    /// still waiting. A record that a rotation holds is left alone (the rotation settles what
    /// the check saw); a write lost to another (a delivery removing notifications) is retried.
    pub(super) async fn drift_found(&self, client_id: &ClientId) {
        if self.notify.lock().expect("notify poisoned").is_none() {
            return;
        }
        loop {
            let Ok(record) = self.ledger.read_state(client_id).await else {
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
            match self
                .ledger
                .write_state(client_id, &state, record.version)
                .await
            {
                Ok(_) => return self.notifications_written(client_id),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => {
                    warn!(%client_id, error = %e, "could not record the drift notification");
                    return;
                }
            }
        }
    }

    /// A scan found `state`: notifications older than a reconcile interval are delivered by
    /// this replica too (the one that recorded them may be gone).
    pub(super) fn scanned(&self, client_id: &ClientId, state: &ClientState) {
        let orphaned = SystemTime::now() - self.settings.reconcile_interval;
        if state.notifications.iter().any(|n| n.at <= orphaned) {
            self.notifications_written(client_id);
        }
    }

    /// Tells the subscriber that `client_id`'s record holds notifications.
    pub(super) fn notifications_written(&self, client_id: &ClientId) {
        if let Some(tx) = self.notify.lock().expect("notify poisoned").as_ref() {
            let _ = tx.send(client_id.clone());
        }
    }

    /// The notifications waiting in `client_id`'s record.
    pub async fn pending_notifications(
        &self,
        client_id: &ClientId,
    ) -> Result<Vec<Notification>, RotationError> {
        let record = self
            .ledger
            .read_state(client_id)
            .await
            .map_err(RotationError::Vault)?;
        Ok(record.value.notifications)
    }

    /// Removes delivered notifications from the record. Only while no rotation holds the
    /// client's lease: the record's version is that rotation's fence, and moving it would make
    /// the rotation's own writes fail. Returns false when it has to wait for one.
    pub async fn acknowledge(
        &self,
        client_id: &ClientId,
        delivered: &[Uuid],
    ) -> Result<bool, RotationError> {
        loop {
            let record = self
                .ledger
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
            match self
                .ledger
                .write_state(client_id, &state, record.version)
                .await
            {
                Ok(_) => return Ok(true),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(RotationError::Vault(e)),
            }
        }
    }
}
