//! Notifications of what rotations did, for a webhook: what one holds. Never a secret. How they
//! are recorded and delivered is `outbox.rs`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    ids::{ClientId, Reason},
    records::{StoredSecret, Strategy},
};

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
    /// A secret rotation was undone: its previous secret is in force again.
    RolledBack,
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
            Self::RolledBack => "rotation.rolled_back",
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
