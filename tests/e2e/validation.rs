use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::RotateSecretRequest,
};
use tonic::Code;

use crate::helpers::{Stack, vault_path};

#[tokio::test]
async fn hostile_requests_are_refused_before_any_upstream_call() {
    let stack = Stack::start().await;
    let valid = stack.seed(regular_client(&random_client_id(), "Target"));
    let baseline = stack.emulator.stats();
    let mut client = stack.client().await;

    let long_id = "a".repeat(65);
    let hostile_ids = [
        "",
        "../x",
        "a/b",
        "%2e%2e",
        long_id.as_str(),
        "clïent",
        "ключ",
        "abc\u{0}def",
        "abc\ndef",
        "abc\tdef",
        "a b",
        " abc",
        "abc?x=1",
        "abc#frag",
        "abc.def",
        "abc-def",
    ];
    for id in hostile_ids {
        let status = client
            .rotate_secret(RotateSecretRequest {
                client_id: id.to_owned(),
                reason: String::new(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "client_id {id:?}: {status:?}"
        );
        assert!(
            status.message().contains("client_id"),
            "{id:?}: {}",
            status.message()
        );
    }
    let long_reason = "r".repeat(257);
    for reason in [long_reason.as_str(), "line\nbreak", "bell\u{7}", "nul\u{0}"] {
        let status = client
            .rotate_secret(RotateSecretRequest {
                client_id: valid.clone(),
                reason: reason.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "reason {reason:?}: {status:?}"
        );
        assert!(status.message().contains("reason"), "{}", status.message());
    }

    assert_eq!(
        stack.emulator.stats(),
        baseline,
        "a hostile request reached Auth0"
    );
    // The replicas' record (heartbeats and the scanner lease), written at start-up, is the only
    // key allowed.
    let mut keys = stack.bao.kv_keys().await;
    keys.retain(|k| k != "secret-rotator/replicas");
    assert!(
        keys.is_empty(),
        "a hostile request wrote to Vault: {keys:?}"
    );
    assert_eq!(stack.emulator.client(&valid).unwrap().rotations, 0);
}

/// A dry run (issue #9, item 6): every check, no rotation, no write.
#[tokio::test]
async fn a_dry_run_checks_everything_and_changes_nothing() {
    use secret_rotator::emulator::pkjwt_client;
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let pkjwt = stack.seed(pkjwt_client(&random_client_id()));
    let dry = |client_id: &str| RotateSecretRequest {
        client_id: client_id.to_owned(),
        validate_only: true,
        ..Default::default()
    };
    let mut client = stack.client().await;
    let answer = client.rotate_secret(dry(&id)).await.unwrap().into_inner();
    assert_eq!(answer.client.unwrap().client_id, id);
    let vault = answer.vault_secret.unwrap();
    assert_eq!(
        (vault.path.as_str(), vault.version),
        (vault_path(&id).as_str(), 0)
    );
    assert!(answer.rotation_id.is_empty() && answer.rotated_at.is_none());

    let refused = client.rotate_secret(dry(&pkjwt)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let refused = client
        .rotate_secret(dry(&random_client_id()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    // A rotation of the client in progress elsewhere.
    stack.hold_lease_elsewhere(&id).await;
    let refused = client.rotate_secret(dry(&id)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");

    assert_eq!(
        stack.emulator.stats().rotate_requests,
        0,
        "Auth0 never rotated"
    );
    assert!(
        stack.bao.secret_keys().await.is_empty(),
        "no secret written"
    );
}

/// Field 1 of RotateSecretRequest is a string; this sends it as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct NotARotateRequest {
    #[prost(int64, tag = "1")]
    client_id: i64,
}

#[tokio::test]
async fn request_bytes_that_are_not_the_request_message_are_invalid_argument() {
    let stack = Stack::start().await;
    let baseline = stack.emulator.stats();
    let channel = stack.channel(None).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/secretrotator.v1.SecretRotationService/RotateSecret",
    );
    let codec = tonic_prost::ProstCodec::<
        NotARotateRequest,
        secret_rotator::proto::RotateSecretResponse,
    >::default();
    let status = grpc
        .unary(
            tonic::Request::new(NotARotateRequest { client_id: 7 }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    crate::helpers::assert_status(
        &status,
        Code::InvalidArgument,
        "not a valid message of this RPC's request type",
    );
    assert_eq!(stack.emulator.stats(), baseline, "Auth0 never called");
}
