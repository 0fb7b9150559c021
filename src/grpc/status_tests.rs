//! Every error the protocol returns, as the Status a caller gets: code, message, details.

use tonic_types::StatusExt;
use uuid::Uuid;

use super::*;
use crate::rotation::{ClientId, KvVersion, Reached, StoredSecret, Transport, ValidationError};

fn client() -> ClientId {
    ClientId::parse("Dm0WebApp4Rotation00000000000001").unwrap()
}

fn rotation() -> Uuid {
    Uuid::parse_str("63a206d6-b2c5-4540-a10e-8bac899bcbd3").unwrap()
}

fn unavailable() -> IssuerError {
    IssuerError::Unavailable {
        how: Transport::NotSent,
        at: Box::new(Reached {
            origin: "https://acme.eu.auth0.com".into(),
            cause: Some("Connection refused (os error 111)".into()),
        }),
    }
}

/// The code, whether it carries RetryInfo, and words its message must hold.
fn check(err: RotationError, code: Code, retry: bool, words: &[&str]) {
    let name = format!("{err:?}");
    let status = Status::from(err);
    assert_eq!(status.code(), code, "{name}: {}", status.message());
    assert_eq!(
        status.get_details_retry_info().is_some(),
        retry,
        "{name}: RetryInfo"
    );
    for w in words {
        assert!(
            status.message().contains(w),
            "{name}: {:?} lacks {w:?}",
            status.message()
        );
    }
    // Where an upstream is, and its words, are never a caller's.
    for internal in [
        "acme.eu.auth0.com",
        "os error",
        "Connection refused",
        "vault.internal",
    ] {
        assert!(
            !status.message().contains(internal),
            "{name}: {:?} names {internal:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn a_failure_of_the_service_is_answered_with_its_trace_id_and_a_refusal_is_not() {
    let answered = |err: RotationError| {
        TRACE_ID.scope("4bf92f3577b34da6a3ce929d0e0e4736".to_owned(), async move {
            Status::from(err)
        })
    };
    let down = StoreError::Unavailable("http://vault.internal:8200 did not answer".into());
    let status = answered(RotationError::VaultBeforeRotation(down)).await;
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "Vault is unavailable; nothing was rotated (trace 4bf92f3577b34da6a3ce929d0e0e4736)"
    );
    let refused = answered(RotationError::Issuer(IssuerError::ClientNotFound)).await;
    assert!(
        !refused.message().contains("trace"),
        "{}",
        refused.message()
    );
}

/// Every variant of RotationError: the code a caller's retry policy acts on, and a message
/// that says what happened to the secret.
#[test]
fn every_rotation_error_has_its_code_and_says_what_was_changed() {
    use Code::*;
    let id = client();
    let stored = StoredSecret {
        mount: "secret".into(),
        path: "auth0/clients/Dm0WebApp4Rotation00000000000001".into(),
        version: KvVersion(7),
    };
    let cases: Vec<(RotationError, Code, bool, Vec<&str>)> = vec![
        (
            ValidationError::BatchTooLarge.into(),
            InvalidArgument,
            false,
            vec!["at most 1000 clients"],
        ),
        (
            RotationError::VaultBeforeRotation(StoreError::Unavailable(
                "http://vault.internal:8200 did not answer: Connection refused (os error 111)"
                    .into(),
            )),
            Unavailable,
            false,
            vec!["nothing was rotated"],
        ),
        (
            RotationError::VaultBeforeRotation(StoreError::PermissionDenied("p".into())),
            Internal,
            false,
            vec!["denied", "nothing was rotated"],
        ),
        (
            RotationError::Vault(StoreError::CasMismatch),
            Internal,
            false,
            vec!["check-and-set"],
        ),
        (
            RotationError::Vault(StoreError::Unexpected("odd".into())),
            Internal,
            false,
            vec!["unexpected"],
        ),
        (
            IssuerError::ClientNotFound.into(),
            NotFound,
            false,
            vec!["no client"],
        ),
        (
            IssuerError::ClientNotRotatable.into(),
            FailedPrecondition,
            false,
            vec![],
        ),
        (
            IssuerError::CredentialsRejected.into(),
            Internal,
            false,
            vec![],
        ),
        (
            IssuerError::AccessDenied("update:client_keys").into(),
            Internal,
            false,
            vec!["update:client_keys"],
        ),
        (
            IssuerError::TokenRejected.into(),
            Internal,
            false,
            vec!["token"],
        ),
        (
            IssuerError::MissingScope("read:client_keys").into(),
            Internal,
            false,
            vec!["read:client_keys"],
        ),
        (
            IssuerError::RateLimited {
                retry_after: Some(Duration::from_millis(1500)),
            }
            .into(),
            ResourceExhausted,
            true,
            vec!["nothing was rotated", "retry in 2s"],
        ),
        (
            unavailable().into(),
            Unavailable,
            false,
            vec!["Auth0 is unavailable: connection failed"],
        ),
        (
            IssuerError::OutcomeUnknown(Transport::TimedOut).into(),
            Unavailable,
            false,
            vec!["may have happened"],
        ),
        (
            IssuerError::Protocol("no client_secret".into()).into(),
            Internal,
            false,
            vec!["unexpected"],
        ),
        (
            RotationError::Busy,
            Aborted,
            false,
            vec!["nothing was rotated"],
        ),
        (
            RotationError::IdempotencyInProgress,
            Aborted,
            false,
            vec!["same key"],
        ),
        (
            RotationError::RecoveryUnavailable,
            FailedPrecondition,
            false,
            vec!["read:client_keys", "ROTATOR_ALLOW_UNRECOVERABLE_ROTATIONS"],
        ),
        (
            RotationError::RecoveryFailed {
                client_id: id.clone(),
                source: Box::new(RotationError::Vault(StoreError::Unavailable("down".into()))),
            },
            Unavailable,
            false,
            vec!["still open", "Vault is unavailable", "nothing was rotated"],
        ),
        (
            RotationError::Recovered {
                client_id: id.clone(),
                stored: stored.clone(),
                source: IssuerError::OutcomeUnknown(Transport::TimedOut),
            },
            Unavailable,
            false,
            vec!["nothing is lost", "version 7"],
        ),
        (
            RotationError::OutcomeUnknown {
                client_id: id.clone(),
                rotation_id: rotation(),
                source: IssuerError::OutcomeUnknown(Transport::ServerError(502)),
            },
            Unavailable,
            false,
            vec!["do not rotate again", "63a206d6"],
        ),
        (
            RotationError::StoreAfterRotation {
                client_id: id.clone(),
                rotation_id: rotation(),
                source: StoreError::Unavailable("down".into()),
            },
            Unavailable,
            false,
            vec!["do not rotate again"],
        ),
        (
            RotationError::Drifted {
                client_id: id.clone(),
            },
            FailedPrecondition,
            false,
            vec!["nothing was rotated"],
        ),
        (
            RotationError::OwnClient {
                client_id: id.clone(),
            },
            FailedPrecondition,
            false,
            vec!["AUTH0_CLIENT_ID", "nothing was rotated"],
        ),
        (
            RotationError::StagedPending {
                client_id: id.clone(),
                rotation_id: rotation(),
            },
            FailedPrecondition,
            false,
            vec!["CompleteRotation", "CancelRotation"],
        ),
        (
            RotationError::Superseded {
                client_id: id.clone(),
            },
            Aborted,
            false,
            vec!["nothing was rotated"],
        ),
        (
            RotationError::NotStaged {
                client_id: id.clone(),
                rotation_id: rotation(),
            },
            NotFound,
            false,
            vec!["GetRotationStatus"],
        ),
        (
            RotationError::AlreadyPromoted {
                client_id: id.clone(),
                rotation_id: rotation(),
            },
            FailedPrecondition,
            false,
            vec!["already promoted"],
        ),
        (
            RotationError::OwnCredentialNotProved {
                client_id: id.clone(),
            },
            FailedPrecondition,
            false,
            vec!["old credential is kept", "nothing changed"],
        ),
        (
            RotationError::KeySwitched {
                client_id: id.clone(),
                rotation_id: rotation(),
            },
            FailedPrecondition,
            false,
            vec![
                "no old key to go back to",
                "cannot be cancelled",
                "Rotate again",
            ],
        ),
        (
            RotationError::NothingToStage {
                client_id: id.clone(),
            },
            FailedPrecondition,
            false,
            vec!["immediate strategy"],
        ),
        (
            RotationError::OverlapPending {
                client_id: id.clone(),
                rotation_id: rotation(),
            },
            FailedPrecondition,
            false,
            vec!["overlap", "CompleteRotation"],
        ),
        (
            RotationError::KeysManagedElsewhere {
                client_id: id.clone(),
                credential: crate::rotation::CredentialId::parse("cred_other1").unwrap(),
            },
            FailedPrecondition,
            false,
            vec!["cred_other1", "managed elsewhere", "nothing was rotated"],
        ),
        (
            RotationError::CredentialPoolFull {
                client_id: id.clone(),
            },
            FailedPrecondition,
            false,
            vec!["4 credentials"],
        ),
        (
            RotationError::KeyNotVerified {
                client_id: id.clone(),
            },
            FailedPrecondition,
            false,
            vec!["did not authenticate", "old key stays in use"],
        ),
        (
            RotationError::CaSignedCertificates {
                client_id: id.clone(),
            },
            FailedPrecondition,
            false,
            vec!["tls_client_auth", "a CA"],
        ),
        (
            RotationError::KeyScopeMissing {
                client_id: id.clone(),
                scope: "read:client_credentials",
            },
            FailedPrecondition,
            false,
            vec![
                "read:client_credentials",
                "secrets are rotated without them",
            ],
        ),
        (
            RotationError::KeyMaterial(crate::rotation::KeyError::Generate),
            Internal,
            false,
            vec!["could not be generated"],
        ),
        (
            RotationError::Overloaded,
            ResourceExhausted,
            true,
            vec!["retry shortly"],
        ),
        (
            RotationError::Internal,
            Internal,
            false,
            vec!["unexpectedly"],
        ),
    ];
    for (err, code, retry, words) in cases {
        check(err, code, retry, &words);
    }
}

/// Refusals at the front door: who is refused, and when to come back.
#[test]
fn every_auth_error_has_its_code_and_a_wait_when_rate_limited() {
    let wait = Duration::from_secs(3);
    let cases = [
        (AuthError::NoIdentity, Code::Unauthenticated, false),
        (AuthError::TokensNotAccepted, Code::Unauthenticated, false),
        (
            crate::auth::CertificateIdentityError::None.into(),
            Code::Unauthenticated,
            false,
        ),
        (
            crate::auth::TokenError::Algorithm.into(),
            Code::Unauthenticated,
            false,
        ),
        (
            AuthError::Denied {
                caller: "jwt:bot".into(),
                rpc: crate::auth::Rpc::RotateSecret,
                client_id: "x".into(),
            },
            Code::PermissionDenied,
            false,
        ),
        (
            AuthError::RateLimited {
                caller: "jwt:bot".into(),
                retry_after: wait,
            },
            Code::ResourceExhausted,
            true,
        ),
        (
            AuthError::StatusRateLimited {
                caller: "jwt:bot".into(),
                retry_after: wait,
            },
            Code::ResourceExhausted,
            true,
        ),
        (
            AuthError::RefusalsThrottled { retry_after: wait },
            Code::ResourceExhausted,
            true,
        ),
    ];
    for (err, code, retry) in cases {
        let status = Status::from(err);
        assert_eq!(status.code(), code, "{}", status.message());
        let info = status.get_details_retry_info();
        assert_eq!(info.is_some(), retry, "{}", status.message());
        if retry {
            assert_eq!(info.unwrap().retry_delay, Some(wait));
            assert!(status.message().contains("retry in 3s"));
        }
    }
}

/// OpenTelemetry's rule for server spans: a refusal is the caller's, not an error of ours.
#[test]
fn only_the_services_own_failures_are_server_errors() {
    for code in [
        Code::Internal,
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Unknown,
    ] {
        assert!(is_server_error(code), "{code:?}");
    }
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::Aborted,
    ] {
        assert!(!is_server_error(code), "{code:?}");
    }
}
