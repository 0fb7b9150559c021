//! The one place a `tonic::Status` is built from a domain error. Exhaustive on purpose: a new
//! error variant does not compile until it is given a code and a message. Messages are curated;
//! upstream bodies never reach a caller.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{auth0::Auth0Error, rotation::RotationError, vault::VaultError};

impl From<RotationError> for Status {
    fn from(err: RotationError) -> Self {
        match err {
            RotationError::InvalidArgument(e) => Status::invalid_argument(e.to_string()),
            RotationError::VaultBeforeRotation(e) => vault_before(e),
            RotationError::Auth0(e) => auth0(e),
            RotationError::StoreAfterRotation {
                client_id,
                rotation_id,
                source,
            } => {
                // Whatever Vault's failure, the caller's situation is the same: the secret is not
                // where it should be yet, and rotating again would not help.
                Status::unavailable(format!(
                    "Auth0 rotated the secret of {client_id} (rotation {rotation_id}) but it could not be \
                     stored in Vault ({source}); the client needs a resync, do not rotate it again"
                ))
            }
            RotationError::Internal => Status::internal("the rotation failed unexpectedly"),
        }
    }
}

fn vault_before(err: VaultError) -> Status {
    let message = format!("Vault: {err}; nothing was rotated");
    match err {
        VaultError::Unavailable(_) => Status::unavailable(message),
        VaultError::PermissionDenied(_) | VaultError::CasMismatch | VaultError::Unexpected(_) => {
            Status::internal(message)
        }
    }
}

fn auth0(err: Auth0Error) -> Status {
    let message = err.to_string();
    match err {
        Auth0Error::ClientNotFound => Status::not_found(message),
        Auth0Error::ClientNotRotatable => Status::failed_precondition(message),
        Auth0Error::CredentialsRejected
        | Auth0Error::AccessDenied(_)
        | Auth0Error::TokenRejected
        | Auth0Error::MissingScope(_)
        | Auth0Error::Protocol(_) => Status::internal(message),
        Auth0Error::RateLimited { retry_after } => {
            let wait = retry_after.unwrap_or(Duration::from_secs(1));
            Status::with_error_details(
                Code::ResourceExhausted,
                format!(
                    "Auth0 rate limit reached; nothing was rotated, retry in {}s",
                    wait.as_secs()
                ),
                ErrorDetails::with_retry_info(Some(wait)),
            )
        }
        Auth0Error::Unavailable(_) => Status::unavailable(message),
    }
}
