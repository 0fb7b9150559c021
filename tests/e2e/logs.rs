//! Logs an operator can trust: a normal start, rotation, replay, staged rotation and status
//! call of the production-shaped binary log no WARN or ERROR line, and addresses print as
//! addresses.

use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::{
        CompleteRotationRequest, GetRotationStatusRequest, RotateSecretRequest, RotationStrategy,
        secret_rotation_service_client::SecretRotationServiceClient,
    },
};
use serde_json::Value;

use crate::{
    helpers::{ServiceProcess, authed, bare_stack, connect},
    pki::{AUDIENCE, Pki},
};

const POLICY: &str = r#"
[[allow]]
callers = ["jwt:ops@corp.example"]
clients = ["*"]
rpcs = ["RotateSecret", "GetRotationStatus", "CompleteRotation"]
"#;

#[tokio::test]
async fn normal_operation_logs_no_warning_or_error() {
    let (bao, emulator, m2m) = bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "Quiet app"));
    let pki = Pki::new(POLICY);
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend(pki.env());
    let mut service = ServiceProcess::start_tls(&env, Some(pki.tls())).await;
    let mut client =
        SecretRotationServiceClient::new(connect(service.addr, Some(pki.tls())).await.unwrap());
    let token = pki.signer.token("ops@corp.example", AUDIENCE, 300);

    let keyed = || RotateSecretRequest {
        client_id: id.clone(),
        idempotency_key: "release-7".into(),
        ..Default::default()
    };
    client.rotate_secret(authed(keyed(), &token)).await.unwrap();
    let replay = client.rotate_secret(authed(keyed(), &token)).await.unwrap();
    assert!(replay.into_inner().replayed);
    let staged = client
        .rotate_secret(authed(
            RotateSecretRequest {
                client_id: id.clone(),
                strategy: RotationStrategy::Staged as i32,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    client
        .complete_rotation(authed(
            CompleteRotationRequest {
                client_id: id.clone(),
                rotation_id: staged.rotation_id,
            },
            &token,
        ))
        .await
        .unwrap();
    client
        .get_rotation_status(authed(
            GetRotationStatusRequest {
                client_id: id.clone(),
                check_drift: true,
            },
            &token,
        ))
        .await
        .unwrap();
    service.signal("-TERM");
    service.wait_exit().await;

    let output = service.output();
    let lines: Vec<Value> = output
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "staged secret promoted"),
        "the log was captured: {output}"
    );
    let loud: Vec<&Value> = lines
        .iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .collect();
    assert!(loud.is_empty(), "WARN or ERROR on a normal run: {loud:#?}");
    let summary: Vec<String> = lines
        .iter()
        .map(|l| format!("{} {} {}", l["level"], l["target"], l["message"]))
        .collect();
    eprintln!("the normal run's log:\n  {}", summary.join("\n  "));
    assert!(
        !output.contains("Some("),
        "an Option printed as such: {output}"
    );
}
