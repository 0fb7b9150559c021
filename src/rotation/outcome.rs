//! [`Outcome`]: how a step of a rotation ended, and its one name in the audit trail, the
//! metrics, the history and the notifications. Every success kind and every failure is named
//! here and nowhere else.

use super::{error::RotationError, notify::NotificationKind};
use crate::audit::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A rotation began (the audit trail's first event of it).
    Started,
    /// Under way, or cut off and not healed yet (a history entry).
    Running,
    /// rotate-secret's secret is stored.
    Rotated,
    /// A staged rotation's next secret is in Vault beside the current one.
    Staged,
    /// A staged secret is set at Auth0 and promoted in Vault.
    Promoted,
    /// A key rotation's overlap ended: the old key is detached, deleted and dropped from Vault.
    Retired,
    /// The answer an idempotency key (or a repeated promotion) is bound to, again.
    Replayed,
    /// The secret Auth0 accepts was read back and stored (a lost answer, a step cut off).
    Recovered,
    /// A staged rotation's secret was removed before promotion.
    Cancelled,
    /// A secret rotation undone: its previous secret is Auth0's and Vault's again.
    RolledBack,
    /// A stage cut off: its secret was removed (the caller was never told it was staged).
    Withdrawn,
    /// A heal stored what Auth0 accepts.
    HealStored,
    /// A heal found Vault already holding what Auth0 accepts.
    HealUnchanged,
    /// A step closed without an outcome of its own (cut off, healed without a rotation).
    CutOff,
    /// The step was refused or failed: the failure's name (see [`Outcome::of`]).
    Failed(&'static str),
}

impl Outcome {
    /// A failed step's outcome: the short, stable name of its error.
    pub fn of(error: &RotationError) -> Self {
        Self::Failed(match error {
            RotationError::InvalidArgument(_) => "invalid_argument",
            RotationError::VaultBeforeRotation(_) | RotationError::Vault(_) => "vault_failed",
            RotationError::Issuer(e) => e.kind().as_str(),
            RotationError::Busy => "busy",
            RotationError::IdempotencyInProgress => "idempotency_in_progress",
            RotationError::RecoveryUnavailable => "recovery_unavailable",
            RotationError::RecoveryFailed { .. } => "recovery_failed",
            // Not a failure of what the caller wanted, but not a rotation it may count on.
            RotationError::Recovered { .. } => return Self::Recovered,
            RotationError::OutcomeUnknown { .. } => "outcome_unknown",
            RotationError::StoreAfterRotation { .. } => "store_failed_after_rotation",
            RotationError::Drifted { .. } => "drifted",
            RotationError::OwnClient { .. } => "own_client",
            RotationError::StagedPending { .. } => "staged_pending",
            RotationError::Superseded { .. } => "superseded",
            RotationError::NotStaged { .. } => "not_staged",
            RotationError::AlreadyPromoted { .. } => "already_promoted",
            RotationError::KeySwitched { .. } => "key_switched",
            RotationError::OwnCredentialNotProved { .. } => "own_credential_not_proved",
            RotationError::NothingToStage { .. } => "nothing_to_stage",
            RotationError::RotationNotFound { .. } => "rotation_not_found",
            RotationError::NotRollbackable { .. } => "not_rollbackable",
            RotationError::OverlapPending { .. } => "overlap_pending",
            RotationError::KeysManagedElsewhere { .. } => "keys_managed_elsewhere",
            RotationError::CredentialPoolFull { .. } => "credential_pool_full",
            RotationError::KeyNotVerified { .. } => "key_not_verified",
            RotationError::CaSignedCertificates { .. } => "client_not_rotatable",
            RotationError::KeyMaterial(_) => "key_material_failed",
            RotationError::KeyScopeMissing { .. } => "key_scope_missing",
            RotationError::Overloaded => "overloaded",
            RotationError::Internal => "internal",
        })
    }

    /// The name in the audit trail, the metrics, the history and notifications.
    pub fn name(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Running => "running",
            Self::Rotated => "ok",
            Self::Staged => "staged",
            Self::Promoted => "promoted",
            Self::Retired => "retired",
            Self::Replayed => "replayed",
            Self::Recovered => "recovered",
            Self::Cancelled => "cancelled",
            Self::RolledBack => "rolled_back",
            Self::Withdrawn => "withdrawn",
            Self::HealStored => "stored",
            Self::HealUnchanged => "already_stored",
            Self::CutOff => "failed",
            Self::Failed(name) => name,
        }
    }

    /// The audit trail's event for a step that ended so.
    pub fn event(self) -> Event {
        match self {
            Self::Started | Self::Running => Event::Started,
            Self::Recovered | Self::HealStored | Self::HealUnchanged => Event::Recovered,
            Self::Failed(_) | Self::CutOff => Event::Failed,
            _ => Event::Succeeded,
        }
    }

    /// The notification a step that ended so records, if any.
    pub fn notification(self) -> Option<NotificationKind> {
        match self {
            Self::Staged => Some(NotificationKind::Staged),
            Self::Rotated | Self::Promoted | Self::Retired => Some(NotificationKind::Completed),
            Self::Recovered => Some(NotificationKind::Recovered),
            Self::Cancelled => Some(NotificationKind::Cancelled),
            Self::RolledBack => Some(NotificationKind::RolledBack),
            Self::Withdrawn | Self::Failed(_) => Some(NotificationKind::Failed),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
