//! [`Outcome`]: how a step of a rotation ended, and its one name in the audit trail, the
//! metrics, the history and the notifications, and its [`Class`], which alerts page on. Every
//! success kind, refusal and failure is named and classed here and nowhere else.

use super::{
    error::{IssuerErrorKind, RotationError},
    notify::NotificationKind,
};
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
    /// The caller's request cannot be done (not found, invalid, a precondition, a state the
    /// client is in): the refusal's name (see [`Outcome::of`]).
    Refused(&'static str),
    /// The service or an upstream failed: the failure's name (see [`Outcome::of`]).
    Failed(&'static str),
}

/// What an outcome says about the service: the `class` label of
/// `secret_rotator_rotations_total`. Alerts page on `Failed`, never on `Refused`: a caller's
/// mistake or a client's state is the caller's to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Done as asked (or answered again, or healed).
    Ok,
    /// The caller's request cannot be done.
    Refused,
    /// The service or an upstream (Auth0, Vault) failed; an operator may have to act.
    Failed,
}

impl Class {
    pub const ALL: [Self; 3] = [Self::Ok, Self::Refused, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

impl Outcome {
    /// A step's outcome when it ended with `error`: the short, stable name of the error, as a
    /// refusal or a failure.
    pub fn of(error: &RotationError) -> Self {
        use RotationError as E;
        let refused = Self::Refused;
        let failed = Self::Failed;
        match error {
            E::InvalidArgument(_) => refused("invalid_argument"),
            E::VaultBeforeRotation(_) | E::Vault(_) => failed("vault_failed"),
            E::Issuer(e) => {
                let name = e.kind().as_str();
                match e.kind() {
                    // Auth0's budget is the tenant's: the governor keeps within it, and
                    // `secret_rotator_rate_limited_total{by="auth0"}` counts what it missed.
                    IssuerErrorKind::ClientNotFound
                    | IssuerErrorKind::ClientNotRotatable
                    | IssuerErrorKind::RateLimited => refused(name),
                    IssuerErrorKind::RefusedService
                    | IssuerErrorKind::Unavailable
                    | IssuerErrorKind::OutcomeUnknown => failed(name),
                }
            }
            E::Busy => refused("busy"),
            E::IdempotencyInProgress => refused("idempotency_in_progress"),
            // The service's grant cannot read a secret back: an operator must act.
            E::RecoveryUnavailable => failed("recovery_unavailable"),
            E::RecoveryFailed { .. } => failed("recovery_failed"),
            // Not a failure of what the caller wanted, but not a rotation it may count on.
            E::Recovered { .. } => Self::Recovered,
            E::OutcomeUnknown { .. } => failed("outcome_unknown"),
            E::StoreAfterRotation { .. } => failed("store_failed_after_rotation"),
            E::Drifted { .. } => refused("drifted"),
            E::OwnClient { .. } => refused("own_client"),
            E::StagedPending { .. } => refused("staged_pending"),
            E::Superseded { .. } => refused("superseded"),
            E::NotStaged { .. } => refused("not_staged"),
            E::AlreadyPromoted { .. } => refused("already_promoted"),
            E::KeySwitched { .. } => refused("key_switched"),
            // Auth0 did not take the service's own new credential, or the client's new key.
            E::OwnCredentialNotProved { .. } => failed("own_credential_not_proved"),
            E::KeyNotVerified { .. } => failed("key_not_verified"),
            E::NothingToStage { .. } => refused("nothing_to_stage"),
            E::RotationNotFound { .. } => refused("rotation_not_found"),
            E::NotRollbackable { .. } => refused("not_rollbackable"),
            E::OverlapPending { .. } => refused("overlap_pending"),
            E::KeysManagedElsewhere { .. } => refused("keys_managed_elsewhere"),
            E::CredentialPoolFull { .. } => refused("credential_pool_full"),
            E::CaSignedCertificates { .. } => refused("client_not_rotatable"),
            E::KeyMaterial(_) => failed("key_material_failed"),
            // A grant for secrets only is a normal set-up: key clients are refused by design.
            E::KeyScopeMissing { .. } => refused("key_scope_missing"),
            // The service sheds load it was asked for (ROTATOR_MAX_CONCURRENT_ROTATIONS).
            E::Overloaded => refused("overloaded"),
            E::Internal => failed("internal"),
        }
    }

    /// Its class, which alerts page on.
    pub fn class(self) -> Class {
        match self {
            Self::Refused(_) => Class::Refused,
            // A step cut off (a crash, a shutdown past its grace) was the service's failure,
            // whatever its heal made of it.
            Self::Failed(_) | Self::CutOff | Self::Withdrawn => Class::Failed,
            _ => Class::Ok,
        }
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
            Self::Refused(name) | Self::Failed(name) => name,
        }
    }

    /// The audit trail's event for a step that ended so.
    pub fn event(self) -> Event {
        match self {
            Self::Started | Self::Running => Event::Started,
            Self::Recovered | Self::HealStored | Self::HealUnchanged => Event::Recovered,
            Self::Refused(_) | Self::Failed(_) | Self::CutOff => Event::Failed,
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
            Self::Withdrawn | Self::Refused(_) | Self::Failed(_) => Some(NotificationKind::Failed),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::{ClientId, IssuerError, StoreError, error::Transport};

    /// The steps of a try-out full of callers' mistakes are refused, never failed: the alert on
    /// failed steps stays quiet. Outages and secrets Vault could not store are failed.
    #[test]
    fn callers_mistakes_are_refused_and_outages_failed() {
        let client_id = ClientId::parse("abc").unwrap();
        let rotation_id = uuid::Uuid::nil();
        let refused = [
            RotationError::from(IssuerError::ClientNotFound),
            RotationError::OwnClient {
                client_id: client_id.clone(),
            },
            RotationError::NothingToStage {
                client_id: client_id.clone(),
            },
            RotationError::StagedPending {
                client_id: client_id.clone(),
                rotation_id,
            },
            RotationError::NotStaged {
                client_id: client_id.clone(),
                rotation_id,
            },
            RotationError::AlreadyPromoted {
                client_id: client_id.clone(),
                rotation_id,
            },
            RotationError::from(IssuerError::ClientNotRotatable),
        ];
        for error in &refused {
            let outcome = Outcome::of(error);
            assert_eq!(outcome.class(), Class::Refused, "{}", outcome.name());
        }
        let failed = [
            RotationError::from(IssuerError::Unavailable {
                how: Transport::NotSent,
                at: Box::default(),
            }),
            RotationError::StoreAfterRotation {
                client_id: client_id.clone(),
                rotation_id,
                source: StoreError::Unavailable("503".into()),
            },
            RotationError::Vault(StoreError::Unavailable("503".into())),
            RotationError::from(IssuerError::MissingScope("update:client_keys")),
        ];
        for error in &failed {
            let outcome = Outcome::of(error);
            assert_eq!(outcome.class(), Class::Failed, "{}", outcome.name());
        }
        for ok in [
            Outcome::Rotated,
            Outcome::Staged,
            Outcome::Promoted,
            Outcome::Cancelled,
        ] {
            assert_eq!(ok.class(), Class::Ok, "{ok}");
        }
        assert_eq!(Outcome::CutOff.class(), Class::Failed);
    }
}
