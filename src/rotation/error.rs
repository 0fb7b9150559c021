//! The errors of the protocol and of its ports. Adapters map their libraries' errors into
//! [`IssuerError`] and [`StoreError`]; each has one `kind()` that both the audit trail and the
//! gRPC status are derived from, so the two can never classify a failure differently.
//! Messages are the service's own: an upstream body never ends up here.

use std::{fmt, time::Duration};

use uuid::Uuid;

use super::{
    ids::{ClientId, CredentialId, ValidationError},
    keys::KeyError,
    records::StoredSecret,
};

/// What went wrong asking the issuer (Auth0) for a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    #[error("Auth0 has no client with this id")]
    ClientNotFound,
    #[error(
        "Auth0 refused to rotate this client: it authenticates with private_key_jwt or mTLS, which have no secret"
    )]
    ClientNotRotatable,
    #[error(
        "Auth0 rejected the service's own client credentials (AUTH0_CLIENT_ID / AUTH0_CLIENT_SECRET)"
    )]
    CredentialsRejected,
    #[error("Auth0 did not grant the service's application access to the Management API ({0})")]
    AccessDenied(&'static str),
    #[error("Auth0 rejected the service's Management API token")]
    TokenRejected,
    #[error("the service's Management API token lacks the {0} scope")]
    MissingScope(&'static str),
    /// The service's own credential could not be read from its source (a file, Vault).
    #[error("the service's own Auth0 credential cannot be read: {0}")]
    OwnCredential(String),
    #[error("Auth0 rate limit reached")]
    RateLimited { retry_after: Option<Duration> },
    /// No usable answer, and the request changed nothing: it was never sent, or it only read.
    #[error("Auth0 at {} is unavailable: {how}{}", .at.origin, .at.cause())]
    /// `at` is boxed: errors travel in every `Result` of the protocol, and are kept small.
    Unavailable { how: Transport, at: Box<Reached> },
    /// A rotation was sent and its answer lost (timeout, reset, 5xx, unreadable 200): it may
    /// have been carried out.
    #[error("Auth0's answer was lost ({0}); the rotation may have happened")]
    OutcomeUnknown(Transport),
    #[error("Auth0 answered in an unexpected way: {0}")]
    Protocol(String),
}

/// Where Auth0 was asked (scheme, host and port: never a path, a query or a token) and, when
/// the connection failed, the transport's own words (such as "Connection refused"): what an
/// operator needs to look in the right place.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reached {
    pub origin: String,
    pub cause: Option<String>,
}

impl Reached {
    fn cause(&self) -> String {
        self.cause
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default()
    }
}

/// How a request to Auth0 failed to bring back a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The connection failed: the request never left, so Auth0 did nothing.
    NotSent,
    TimedOut,
    /// Sent, then the exchange broke (reset, protocol error).
    Interrupted,
    /// Auth0 answered with this 5xx status.
    ServerError(u16),
    /// The answer's body was cut off.
    CutOff,
    /// A success whose body could not be read as the expected answer.
    Unreadable,
}

impl Transport {
    /// Whether the request reached Auth0, so that Auth0 may have acted on it.
    pub fn was_sent(self) -> bool {
        !matches!(self, Self::NotSent)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSent => f.write_str("connection failed"),
            Self::TimedOut => f.write_str("request timed out"),
            Self::Interrupted => f.write_str("request failed"),
            Self::ServerError(status) => write!(f, "Auth0 answered {status}"),
            Self::CutOff => f.write_str("the answer was cut off"),
            Self::Unreadable => f.write_str("the answer holds no readable client_secret"),
        }
    }
}

/// The classes of [`IssuerError`] callers and auditors tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerErrorKind {
    ClientNotFound,
    ClientNotRotatable,
    /// Auth0 refused the service itself (credentials, grant, token, scope) or spoke nonsense:
    /// an operator must act.
    RefusedService,
    RateLimited,
    Unavailable,
    OutcomeUnknown,
}

impl IssuerError {
    pub fn kind(&self) -> IssuerErrorKind {
        match self {
            Self::ClientNotFound => IssuerErrorKind::ClientNotFound,
            Self::ClientNotRotatable => IssuerErrorKind::ClientNotRotatable,
            Self::CredentialsRejected
            | Self::AccessDenied(_)
            | Self::TokenRejected
            | Self::MissingScope(_)
            | Self::OwnCredential(_)
            | Self::Protocol(_) => IssuerErrorKind::RefusedService,
            Self::RateLimited { .. } => IssuerErrorKind::RateLimited,
            Self::Unavailable { .. } => IssuerErrorKind::Unavailable,
            Self::OutcomeUnknown(_) => IssuerErrorKind::OutcomeUnknown,
        }
    }

    /// How long Auth0 asked to wait, for a rate limit.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Whether Auth0 may have carried the request out although it did not say so.
    pub fn outcome_unknown(&self) -> bool {
        self.kind() == IssuerErrorKind::OutcomeUnknown
    }
}

impl IssuerErrorKind {
    /// The audit trail's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientNotFound => "client_not_found",
            Self::ClientNotRotatable => "client_not_rotatable",
            Self::RefusedService => "auth0_refused_service",
            Self::RateLimited => "auth0_rate_limited",
            Self::Unavailable => "auth0_unavailable",
            Self::OutcomeUnknown => "auth0_outcome_unknown",
        }
    }
}

/// What went wrong talking to the store (Vault): the secret store and the ledger alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("Vault is unavailable: {0}")]
    Unavailable(String),
    #[error("Vault denied the service's token access to {0}")]
    PermissionDenied(String),
    #[error("Vault: a newer version was written to the key meanwhile (check-and-set mismatch)")]
    CasMismatch,
    #[error("Vault answered in an unexpected way: {0}")]
    Unexpected(String),
}

/// The classes of [`StoreError`] the protocol and callers tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The same request may succeed in a moment.
    Unavailable,
    /// Someone else wrote first (check-and-set).
    Conflict,
    /// Vault refused the request or answered nonsense: retrying will not help.
    Refused,
}

impl StoreError {
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            Self::Unavailable(_) => StoreErrorKind::Unavailable,
            Self::CasMismatch => StoreErrorKind::Conflict,
            Self::PermissionDenied(_) | Self::Unexpected(_) => StoreErrorKind::Refused,
        }
    }

    /// Worth retrying: the same request may succeed in a moment.
    pub fn is_transient(&self) -> bool {
        self.kind() == StoreErrorKind::Unavailable
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("invalid request: {0}")]
    InvalidArgument(#[from] ValidationError),
    /// Vault failed before Auth0 was called: nothing changed anywhere.
    #[error("Vault failed before the rotation started")]
    VaultBeforeRotation(#[source] StoreError),
    /// Vault failed on a read-only call.
    #[error("Vault failed")]
    Vault(#[source] StoreError),
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    /// Another rotation of the client held its lease for the whole deadline.
    #[error("another rotation of this client is in progress")]
    Busy,
    /// A request with the same idempotency key is still running.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyInProgress,
    /// The service could not read a secret back from Auth0, so a lost answer would be lost for good.
    #[error("recovery is unavailable")]
    RecoveryUnavailable,
    /// An earlier rotation of the client is open and could not be healed now.
    #[error("an earlier rotation of client {client_id} is still open and could not be healed")]
    RecoveryFailed {
        client_id: ClientId,
        #[source]
        source: Box<RotationError>,
    },
    /// Auth0's answer was lost; the secret Auth0 accepts now was read back and stored. Whether
    /// Auth0 had rotated cannot be known.
    #[error("Auth0's answer for client {client_id} was lost")]
    Recovered {
        client_id: ClientId,
        stored: StoredSecret,
        #[source]
        source: IssuerError,
    },
    /// Auth0's answer was lost and the live secret could not be read back yet: the intent stays
    /// open for the reconciler.
    #[error("Auth0's answer for client {client_id} was lost")]
    OutcomeUnknown {
        client_id: ClientId,
        rotation_id: Uuid,
        #[source]
        source: IssuerError,
    },
    /// Auth0 rotated, but the new secret could not be stored: the intent stays open for the
    /// reconciler.
    #[error("the new secret of client {client_id} could not be stored in Vault")]
    StoreAfterRotation {
        client_id: ClientId,
        rotation_id: Uuid,
        #[source]
        source: StoreError,
    },
    /// The caller asked for Vault to be in sync with Auth0 first, and it was not.
    #[error("Vault does not hold the secret Auth0 accepts for client {client_id}")]
    Drifted { client_id: ClientId },
    /// The client is the service's own Auth0 application: rotating it would cut the service
    /// off from Auth0 (it reads its secret from its own configuration, not from Vault).
    #[error("client {client_id} is the service's own Auth0 application")]
    OwnClient { client_id: ClientId },
    /// A staged rotation of the client waits for promotion: no other rotation may start.
    #[error("staged rotation {rotation_id} of client {client_id} is waiting for promotion")]
    StagedPending {
        client_id: ClientId,
        rotation_id: Uuid,
    },
    /// The client was rotated since whoever asked found it due (`RotateCommand::if_last`).
    #[error("client {client_id} was rotated since it was found due")]
    Superseded { client_id: ClientId },
    /// CompleteRotation or CancelRotation named no staged rotation of the client.
    #[error("client {client_id} has no staged rotation {rotation_id}")]
    NotStaged {
        client_id: ClientId,
        rotation_id: Uuid,
    },
    /// CancelRotation after the staged secret was promoted.
    #[error("rotation {rotation_id} of client {client_id} was already promoted")]
    AlreadyPromoted {
        client_id: ClientId,
        rotation_id: Uuid,
    },
    /// A self-rotation's new credential did not get the service a Management API token: the
    /// old one is kept and the new one withdrawn.
    #[error("the new credential of the service's own application {client_id} was not accepted")]
    OwnCredentialNotProved { client_id: ClientId },
    /// CancelRotation of a key rotation with no old key to go back to: its overlap ended (the
    /// old key was deleted), or the client had no key of the service's before it.
    #[error("key rotation {rotation_id} of client {client_id} has no old key to go back to")]
    KeySwitched {
        client_id: ClientId,
        rotation_id: Uuid,
    },
    /// RollbackRotation named a rotation the client's record never had.
    #[error("client {client_id} has no rotation {rotation_id}")]
    RotationNotFound {
        client_id: ClientId,
        rotation_id: Uuid,
    },
    /// RollbackRotation of a rotation that cannot be undone (now, or at all).
    #[error("rotation {rotation_id} of client {client_id} cannot be rolled back: {why}")]
    NotRollbackable {
        client_id: ClientId,
        rotation_id: Uuid,
        why: RollbackRefusal,
    },
    /// A staged rotation needs a current secret in Vault to stage the next one beside.
    #[error("Vault holds no secret for client {client_id} yet")]
    NothingToStage { client_id: ClientId },
    /// A key rotation's overlap is running: the old key is retired first (CompleteRotation),
    /// or when the overlap ends.
    #[error(
        "key rotation {rotation_id} of client {client_id} is in its overlap: complete it before rotating again"
    )]
    OverlapPending {
        client_id: ClientId,
        rotation_id: Uuid,
    },
    /// The client has two credentials attached and Vault holds neither as the service's: the
    /// new key would need a credential detached that a consumer may use.
    #[error(
        "client {client_id} has credential {credential} attached, which this service did not make: its keys are managed elsewhere"
    )]
    KeysManagedElsewhere {
        client_id: ClientId,
        credential: CredentialId,
    },
    /// The client holds 4 credentials, none of them one this service made and no longer uses.
    #[error(
        "client {client_id} holds 4 credentials (Auth0's limit), none of them one this service may delete"
    )]
    CredentialPoolFull { client_id: ClientId },
    /// Auth0 did not authenticate the client with the new key: consumers were not switched,
    /// and the new credential was withdrawn.
    #[error(
        "Auth0 did not authenticate client {client_id} with its new key; the old key stays in use"
    )]
    KeyNotVerified { client_id: ClientId },
    /// CA-signed mTLS certificates are issued by a CA, not by this service.
    #[error(
        "client {client_id} authenticates with CA-signed certificates (tls_client_auth), which a CA issues"
    )]
    CaSignedCertificates { client_id: ClientId },
    /// The service's Auth0 grant lacks a scope key rotations need (secrets need none of them).
    #[error(
        "rotating the key of client {client_id} needs {scope}, which the service's Auth0 grant lacks"
    )]
    KeyScopeMissing {
        client_id: ClientId,
        scope: &'static str,
    },
    /// A key pair or certificate could not be made.
    #[error("the new key could not be made: {0}")]
    KeyMaterial(#[from] KeyError),
    /// ROTATOR_MAX_CONCURRENT_ROTATIONS rotations were running for the whole deadline.
    #[error("too many rotations are in progress")]
    Overloaded,
    #[error("the rotation task stopped unexpectedly")]
    Internal,
}

/// Why a rotation cannot be rolled back. Each says what the caller can do instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackRefusal {
    /// A later rotation replaced the secret since.
    Later { last: Uuid },
    /// A staged rotation waits after it.
    StagedAfter { staged: Uuid },
    /// It is itself staged, not promoted.
    Staged,
    /// It rotated a key or a certificate.
    Key,
    /// Vault no longer holds the secret before it.
    PreviousGone,
    /// It never stored a secret (refused or failed).
    NothingStored,
    /// The secret before it was put back already, by the rollback of `undone`.
    AlreadyRolledBack { undone: Uuid },
}

impl fmt::Display for RollbackRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Later { last } => write!(
                f,
                "a later rotation ({last}) replaced its secret; only the last rotation can be \
                 rolled back"
            ),
            Self::StagedAfter { staged } => write!(
                f,
                "rotation {staged} is staged after it; cancel that first (CancelRotation)"
            ),
            Self::Staged => f.write_str(
                "it is staged and was never promoted, so Auth0 still accepts the old secret; \
                 CancelRotation withdraws it",
            ),
            Self::Key => f.write_str(
                "it rotated a key, which has no previous secret to put back; while its overlap \
                 lasts CancelRotation withdraws the new key and gives consumers the old one again",
            ),
            Self::PreviousGone => f.write_str(
                "Vault no longer holds the secret before it (it is kept for \
                 ROTATOR_PREVIOUS_SECRET_TTL after a rotation); rotate again to replace the secret",
            ),
            Self::NothingStored => f.write_str("it never changed the secret"),
            Self::AlreadyRolledBack { undone } => write!(
                f,
                "the rollback of rotation {undone} already put the secret before that back, and \
                 nothing older is kept"
            ),
        }
    }
}

impl RotationError {
    /// Whether the rotation's intent stays open for recovery (its idempotency key stays bound).
    pub(super) fn leaves_open_intent(&self) -> bool {
        matches!(
            self,
            Self::OutcomeUnknown { .. } | Self::StoreAfterRotation { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::outcome::Outcome;

    #[test]
    fn only_a_request_that_was_sent_can_have_an_unknown_outcome() {
        assert!(!Transport::NotSent.was_sent());
        for sent in [
            Transport::TimedOut,
            Transport::Interrupted,
            Transport::ServerError(502),
            Transport::CutOff,
            Transport::Unreadable,
        ] {
            assert!(sent.was_sent(), "{sent}");
        }
    }

    #[test]
    fn kinds_drive_the_audit_names() {
        let cases = [
            (IssuerError::ClientNotFound, "client_not_found"),
            (IssuerError::MissingScope("x"), "auth0_refused_service"),
            (
                IssuerError::RateLimited { retry_after: None },
                "auth0_rate_limited",
            ),
            (
                IssuerError::Unavailable {
                    how: Transport::NotSent,
                    at: Box::default(),
                },
                "auth0_unavailable",
            ),
            (
                IssuerError::OutcomeUnknown(Transport::TimedOut),
                "auth0_outcome_unknown",
            ),
        ];
        for (err, name) in cases {
            assert_eq!(Outcome::of(&RotationError::from(err)).name(), name);
        }
        assert!(StoreError::Unavailable("503".into()).is_transient());
        assert!(!StoreError::CasMismatch.is_transient());
        assert!(!StoreError::PermissionDenied("p".into()).is_transient());
    }
}
