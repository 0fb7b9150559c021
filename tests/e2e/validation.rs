use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::RotateSecretRequest,
};
use tonic::Code;

use crate::helpers::Stack;

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
    // The reconciler's scanner lease, taken at start-up, is the only key allowed.
    let mut keys = stack.bao.kv_keys().await;
    keys.retain(|k| k != "secret-rotator/scanner");
    assert!(
        keys.is_empty(),
        "a hostile request wrote to Vault: {keys:?}"
    );
    assert_eq!(stack.emulator.client(&valid).unwrap().rotations, 0);
}
