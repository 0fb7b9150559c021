//! The real grpcurl binary, with no proto files: everything comes from reflection.

use secret_rotator::emulator::{random_client_id, regular_client};
use serde_json::Value;

use crate::helpers::{Stack, StackOptions, tool, vault_path};

/// Runs `grpcurl -plaintext <flags> <service address> <command...>`.
async fn grpcurl(stack: &Stack, flags: &[&str], command: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(tool("grpcurl"))
        .arg("-plaintext")
        .args(flags)
        .arg(stack.addr.to_string())
        .args(command)
        .output()
        .await
        .expect("run grpcurl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ROTATE: &str = "secretrotator.v1.SecretRotationService/RotateSecret";

#[tokio::test]
async fn grpcurl_lists_describes_and_rotates_without_proto_files() {
    let stack = Stack::start().await;

    let (ok, out, err) = grpcurl(&stack, &[], &["list"]).await;
    assert!(ok, "grpcurl list failed: {err}");
    let services: Vec<&str> = out.lines().collect();
    assert!(
        services.contains(&"secretrotator.v1.SecretRotationService"),
        "{out}"
    );
    assert!(services.contains(&"grpc.health.v1.Health"), "{out}");

    let (ok, out, err) = grpcurl(
        &stack,
        &[],
        &["describe", "secretrotator.v1.SecretRotationService"],
    )
    .await;
    assert!(ok, "describe failed: {err}");
    assert!(out.contains("rpc RotateSecret ( .secretrotator.v1.RotateSecretRequest ) returns ( .secretrotator.v1.RotateSecretResponse )"), "{out}");

    let (ok, out, err) = grpcurl(&stack, &[], &["describe", "secretrotator.v1.Client"]).await;
    assert!(ok, "describe Client failed: {err}");
    assert!(out.contains("client_authentication_methods"), "{out}");
    assert!(
        !out.contains("string client_secret"),
        "Client must not carry a secret: {out}"
    );

    let (ok, out, err) = grpcurl(&stack, &[], &["describe", "grpc.health.v1.Health"]).await;
    assert!(
        ok && out.contains("rpc Check"),
        "health descriptor missing: {out} {err}"
    );

    let id = stack.seed(regular_client(&random_client_id(), "grpcurl app"));
    let body = format!(r#"{{"client_id": "{id}", "reason": "rotated with grpcurl"}}"#);
    let (ok, out, err) = grpcurl(&stack, &["-d", &body], &[ROTATE]).await;
    assert!(ok, "RotateSecret failed: {err}");
    let answer: Value = serde_json::from_str(&out).expect("JSON answer");
    assert_eq!(answer["client"]["clientId"], id.as_str());
    assert_eq!(answer["vaultSecret"]["path"], vault_path(&id).as_str());
    let live = stack.emulator.live_secret(&id).unwrap();
    assert!(!out.contains(&live), "the secret is in grpcurl's output");
    let data = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
    assert_eq!(data["client_secret"], live.as_str());

    let bad = r#"{"client_id": "../etc"}"#;
    let (ok, _, err) = grpcurl(&stack, &["-d", bad], &[ROTATE]).await;
    assert!(!ok);
    assert!(err.contains("InvalidArgument"), "{err}");
}

/// Error details (google.rpc.RetryInfo) are in the reflection data, so grpcurl prints them
/// instead of "not recognized".
#[tokio::test]
async fn grpcurl_prints_retry_info_of_a_refusal() {
    let stack = Stack::start_with(StackOptions {
        extra_args: [
            "--caller-rotations-per-minute",
            "1",
            "--caller-rotation-burst",
            "1",
        ]
        .map(String::from)
        .to_vec(),
        ..StackOptions::default()
    })
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "grpcurl app"));
    let body = format!(r#"{{"client_id": "{id}"}}"#);
    let (ok, _, err) = grpcurl(&stack, &["-d", &body], &[ROTATE]).await;
    assert!(ok, "the first rotation is within the limit: {err}");
    let (ok, _, err) = grpcurl(&stack, &["-d", &body], &[ROTATE]).await;
    assert!(!ok);
    assert!(err.contains("ResourceExhausted"), "{err}");
    assert!(err.contains("google.rpc.RetryInfo"), "{err}");
    assert!(!err.contains("not recognized"), "{err}");
}
