//! The one place a `tonic::Status` is built from a domain error. Exhaustive on purpose: a new
//! error variant does not compile until it is given a code and a message. Codes follow the
//! errors' `kind()`, the same classification the audit trail uses. Messages are curated;
//! upstream bodies never reach a caller.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::warn;

use crate::{
    auth::{AuthError, AuthErrorKind},
    rotation::{IssuerError, IssuerErrorKind, RotationError, StoreError, StoreErrorKind},
};

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        auth_status(err)
    }
}

/// Authentication and authorization refusals. Public so that tests can check the mapping.
pub fn auth_status(err: AuthError) -> Status {
    let message = err.to_string();
    match err.kind() {
        AuthErrorKind::Unauthenticated => Status::unauthenticated(message),
        AuthErrorKind::PermissionDenied => Status::permission_denied(message),
        AuthErrorKind::RateLimited | AuthErrorKind::Throttled => {
            let wait = err.retry_after().unwrap_or(Duration::from_secs(1));
            retry_later(
                format!("{message}; nothing was changed, retry in {}s", secs(wait)),
                wait,
            )
        }
    }
}

/// Whether a code means the server failed (OpenTelemetry's gRPC conventions for server spans):
/// a refusal of the caller's request is not an error of the service.
pub fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// gRPC's canonical name of `code` (`NOT_FOUND` for `NotFound`): the spelling of batch
/// summaries, the CLI and the docs.
pub fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (n, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && n > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// A request over ROTATOR_MAX_REQUEST_BYTES, in the service's words.
pub fn too_large(limit: usize) -> Status {
    Status::out_of_range(format!(
        "the request is larger than ROTATOR_MAX_REQUEST_BYTES ({limit} bytes); nothing was rotated"
    ))
}

/// A RotateSecrets request over the batch limit.
pub fn batch_too_large(limit: usize) -> Status {
    Status::out_of_range(format!(
        "the batch request is larger than {limit} bytes (name at most 1000 clients, or use a selector); nothing was rotated"
    ))
}

/// Request bytes that are not the RPC's request message.
pub fn undecodable() -> Status {
    Status::invalid_argument(
        "the request is not a valid message of this RPC's request type (see the service's \
         reflection or proto/secretrotator/v1); nothing was rotated",
    )
}

fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn retry_later(message: String, wait: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(wait)),
    )
}

tokio::task_local! {
    /// The trace id of the RPC being answered (`Call::run` sets it): a failure of the service
    /// is answered with it, and logged with it and its cause.
    pub(super) static TRACE_ID: String;
}

impl From<RotationError> for Status {
    /// A failure of the service (UNAVAILABLE, INTERNAL, ...) is answered without the upstream's
    /// address or words, with the trace id; the WARN line with the same trace id keeps them.
    fn from(err: RotationError) -> Self {
        let detail = detailed(&err);
        let status = status_of(err);
        if !is_server_error(status.code()) {
            return status;
        }
        let trace_id = TRACE_ID.try_with(String::clone).unwrap_or_default();
        warn!(%trace_id, code = ?status.code(), error = %detail, "answered a failure of the service");
        if trace_id.is_empty() {
            return status;
        }
        Status::new(
            status.code(),
            format!("{} (trace {trace_id})", status.message()),
        )
    }
}

/// The error with every upstream detail (addresses, causes), for the log only.
fn detailed(err: &RotationError) -> String {
    match err {
        RotationError::Vault(e) | RotationError::VaultBeforeRotation(e) => format!("{err}: {e}"),
        RotationError::Issuer(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// What a caller may read of a Vault failure: what failed, not where or Vault's words.
fn store_message(err: &StoreError) -> &'static str {
    match err {
        StoreError::Unavailable(_) => "Vault is unavailable",
        StoreError::PermissionDenied(_) => {
            "Vault denied the service's token access to the client's key"
        }
        StoreError::CasMismatch => {
            "Vault: a newer version was written to the key meanwhile (check-and-set mismatch)"
        }
        StoreError::Unexpected(_) => "Vault answered in an unexpected way",
    }
}

fn status_of(err: RotationError) -> Status {
    match err {
        RotationError::InvalidArgument(e) => Status::invalid_argument(e.to_string()),
        RotationError::VaultBeforeRotation(e) => Status::new(
            store_code(&e),
            format!("{}; nothing was rotated", store_message(&e)),
        ),
        RotationError::Vault(e) => Status::new(store_code(&e), store_message(&e)),
        RotationError::Issuer(e) => issuer(e),
        RotationError::Busy => Status::aborted(
            "another rotation of this client is in progress and did not finish within the deadline; \
                 nothing was rotated, try again",
        ),
        RotationError::IdempotencyInProgress => Status::aborted(
            "a request with this idempotency key is still in progress; retry with the same key \
                 to get its answer",
        ),
        RotationError::RecoveryUnavailable => Status::failed_precondition(
            "the service's Auth0 token lacks read:client_keys, so a lost Auth0 answer could not \
                 be recovered; grant the scope or set ROTATOR_ALLOW_UNRECOVERABLE_ROTATIONS=true",
        ),
        RotationError::RecoveryFailed { client_id, source } => Status::unavailable(format!(
            "an earlier rotation of {client_id} is still open and could not be healed yet ({}); \
                 nothing was rotated, try again later",
            cause(&source)
        )),
        RotationError::Recovered {
            client_id,
            stored,
            source,
        } => Status::unavailable(format!(
            "{} for {client_id}; the secret Auth0 accepts now was read back and stored in \
                 Vault ({}/{} version {}), so nothing is lost; whether Auth0 rotated is unknown",
            issuer_message(&source),
            stored.mount,
            stored.path,
            stored.version
        )),
        RotationError::OutcomeUnknown {
            client_id,
            rotation_id,
            source,
        } => Status::unavailable(format!(
            "{} for {client_id} (rotation {rotation_id}); the live secret will be read back \
                 from Auth0 and stored by the reconciler: do not rotate again",
            issuer_message(&source)
        )),
        RotationError::StoreAfterRotation {
            client_id,
            rotation_id,
            source,
        } => {
            // Whatever Vault's failure, the caller's situation is the same: the secret is not
            // where it should be yet, and rotating again would not help.
            Status::unavailable(format!(
                "Auth0 rotated the secret of {client_id} (rotation {rotation_id}) but it could not be \
                     stored in Vault ({}); the reconciler will store the live secret: do not rotate again",
                store_message(&source)
            ))
        }
        RotationError::OwnClient { client_id } => Status::failed_precondition(format!(
            "{client_id} is this service's own Auth0 application (AUTH0_CLIENT_ID), and its \
                 credential is not in Vault: rotating it would cut the service off from Auth0; \
                 nothing was rotated. To let the service rotate its own credential, keep it in \
                 Vault and set AUTH0_CREDENTIALS_VAULT_PATH (docs/security.md, \"Who rotates the \
                 rotator\")"
        )),
        RotationError::Drifted { client_id } => Status::failed_precondition(format!(
            "Vault does not hold the secret Auth0 accepts for {client_id} (changed outside the \
                 service, or a rotation is still open); nothing was rotated. Rotate without \
                 require_in_sync to replace both"
        )),
        RotationError::StagedPending {
            client_id,
            rotation_id,
        } => Status::failed_precondition(format!(
            "staged rotation {rotation_id} of {client_id} is waiting for promotion; nothing was \
                 rotated. Complete it (CompleteRotation) or cancel it (CancelRotation) first"
        )),
        RotationError::Superseded { client_id } => Status::aborted(format!(
            "{client_id} was rotated since it was found due; nothing was rotated"
        )),
        RotationError::NotStaged {
            client_id,
            rotation_id,
        } => Status::not_found(format!(
            "{client_id} has no staged rotation {rotation_id} (GetRotationStatus shows the \
                 staged one, if any)"
        )),
        RotationError::RotationNotFound {
            client_id,
            rotation_id,
        } => Status::not_found(format!(
            "{client_id} has no rotation {rotation_id} (ListRotations shows its rotations)"
        )),
        RotationError::NotRollbackable {
            client_id,
            rotation_id,
            why,
        } => Status::failed_precondition(format!(
            "rotation {rotation_id} of {client_id} cannot be rolled back: {why}; nothing was \
                 changed"
        )),
        RotationError::AlreadyPromoted {
            client_id,
            rotation_id,
        } => Status::failed_precondition(format!(
            "rotation {rotation_id} of {client_id} was already promoted: Auth0 accepts only its \
                 secret now, so it cannot be cancelled; rotate again to replace it"
        )),
        RotationError::OwnCredentialNotProved { client_id } => {
            Status::failed_precondition(format!(
                "the new credential of {client_id}, this service's own application, did not get a \
             Management API token from Auth0: the old credential is kept and the new one \
             withdrawn, so nothing changed. Check the application's client grant"
            ))
        }
        RotationError::KeySwitched {
            client_id,
            rotation_id,
        } => Status::failed_precondition(format!(
            "key rotation {rotation_id} of {client_id} has no old key to go back to (its \
                 overlap ended and the old key was deleted, or Vault held no key of the service's \
                 before it), so it cannot be cancelled; nothing was changed. Rotate again to \
                 replace the new key"
        )),
        RotationError::NothingToStage { client_id } => Status::failed_precondition(format!(
            "Vault holds no secret for {client_id} yet, so there is nothing for consumers to use \
                 while the next one is distributed; nothing was rotated. Rotate it once with the \
                 immediate strategy first"
        )),
        RotationError::OverlapPending {
            client_id,
            rotation_id,
        } => Status::failed_precondition(format!(
            "key rotation {rotation_id} of {client_id} is in its overlap (both keys attached); \
                 nothing was rotated. Complete it (CompleteRotation) to retire the old key first"
        )),
        RotationError::KeysManagedElsewhere {
            client_id,
            credential,
        } => Status::failed_precondition(format!(
            "{client_id} has two credentials attached and {credential} is not one Vault holds: \
                 its keys are managed elsewhere, and a new key would need a credential detached \
                 that a consumer may use; nothing was rotated"
        )),
        RotationError::CredentialPoolFull { client_id } => Status::failed_precondition(format!(
            "{client_id} holds 4 credentials, Auth0's limit, and none is one this service made \
                 and no longer uses; delete an unused credential first. Nothing was rotated"
        )),
        RotationError::KeyNotVerified { client_id } => Status::failed_precondition(format!(
            "Auth0 did not authenticate {client_id} with its new key, so consumers were not \
                 switched and the new credential was withdrawn; the old key stays in use"
        )),
        RotationError::CaSignedCertificates { client_id } => Status::failed_precondition(format!(
            "{client_id} authenticates with CA-signed certificates (tls_client_auth): a CA \
                 issues those, not this service; nothing was rotated"
        )),
        RotationError::KeyMaterial(e) => Status::internal(format!("{e}; nothing was rotated")),
        RotationError::KeyScopeMissing { client_id, scope } => {
            Status::failed_precondition(format!(
                "{client_id} authenticates with a key or a certificate (private_key_jwt or mTLS), \
                 and rotating it needs {scope} in the service's Auth0 grant (with \
                 create:, read:, update: and delete:client_credentials); secrets are rotated \
                 without them. Nothing was rotated"
            ))
        }
        RotationError::Overloaded => retry_later(
            "too many rotations are in progress; nothing was rotated, retry shortly".into(),
            Duration::from_secs(1),
        ),
        RotationError::Internal => Status::internal("the rotation failed unexpectedly"),
    }
}

/// A Vault failure the caller can wait out is UNAVAILABLE; anything else needs an operator.
fn store_code(err: &StoreError) -> Code {
    match err.kind() {
        StoreErrorKind::Unavailable => Code::Unavailable,
        StoreErrorKind::Conflict | StoreErrorKind::Refused => Code::Internal,
    }
}

fn issuer(err: IssuerError) -> Status {
    let message = match &err {
        // Where Auth0 is, and the connection's words, are the log's.
        IssuerError::Unavailable { how, .. } => format!("Auth0 is unavailable: {how}"),
        IssuerError::Protocol(_) => "Auth0 answered in an unexpected way".to_owned(),
        IssuerError::OwnCredential(_) => {
            "the service's own Auth0 credential cannot be read; nothing was rotated".to_owned()
        }
        other => other.to_string(),
    };
    match err.kind() {
        IssuerErrorKind::ClientNotFound => Status::not_found(message),
        IssuerErrorKind::ClientNotRotatable => Status::failed_precondition(message),
        IssuerErrorKind::RefusedService => Status::internal(message),
        IssuerErrorKind::RateLimited => {
            let wait = err.retry_after().unwrap_or(Duration::from_secs(1));
            retry_later(
                format!(
                    "Auth0 rate limit reached; nothing was rotated, retry in {}s",
                    secs(wait)
                ),
                wait,
            )
        }
        IssuerErrorKind::Unavailable | IssuerErrorKind::OutcomeUnknown => {
            Status::unavailable(message)
        }
    }
}

/// A nested error's own message (ours, curated), for wrapping errors.
fn cause(err: &RotationError) -> String {
    match err {
        RotationError::Issuer(e) => issuer_message(e),
        RotationError::Vault(e) | RotationError::VaultBeforeRotation(e) => {
            store_message(e).to_owned()
        }
        other => other.to_string(),
    }
}

fn issuer_message(err: &IssuerError) -> String {
    issuer(err.clone()).message().to_owned()
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
