//! Refusals are not free: past a burst, one address's refused attempts are throttled, and the
//! audit trail writes one line per kind of refusal per window, then their count.

use std::time::Duration;

use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::{
        GetRotationStatusRequest, secret_rotation_service_client::SecretRotationServiceClient,
    },
};
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    helpers::{ServiceProcess, authed, bare_stack, connect, eventually, rotate},
    pki::{AUDIENCE, Pki},
};

const POLICY: &str = r#"
[[allow]]
callers = ["jwt:ops@corp.example"]
clients = ["*"]
rpcs = ["RotateSecret", "GetRotationStatus"]
"#;

fn denied_events(trail: &str) -> Vec<Value> {
    trail
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "denied")
        .collect()
}

#[tokio::test]
async fn a_flood_of_refusals_is_throttled_and_audited_in_a_few_lines() {
    let (bao, emulator, m2m) = bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "Flooded app"));
    let pki = Pki::new(POLICY);
    let audit = tempfile::NamedTempFile::new().unwrap();
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend(pki.env());
    env.extend([
        ("ROTATOR_AUDIT_LOG", audit.path().display().to_string()),
        ("ROTATOR_REFUSAL_AUDIT_WINDOW", "1s".to_owned()),
        // No refill during the test: exactly the burst is refused as such.
        ("ROTATOR_PEER_REFUSALS_PER_MINUTE", "1".to_owned()),
        ("ROTATOR_CALLER_STATUS_PER_MINUTE", "1".to_owned()),
        ("ROTATOR_CALLER_STATUS_BURST", "3".to_owned()),
    ]);
    let service = ServiceProcess::start_tls(&env, Some(pki.tls())).await;
    let mut client =
        SecretRotationServiceClient::new(connect(service.addr, Some(pki.tls())).await.unwrap());

    // 200 calls without any identity, from one address.
    let (mut unauthenticated, mut throttled) = (0u64, 0u64);
    for _ in 0..200 {
        let status = client.rotate_secret(rotate(&id)).await.unwrap_err();
        match status.code() {
            Code::Unauthenticated => unauthenticated += 1,
            Code::ResourceExhausted => {
                assert!(status.get_details_retry_info().is_some(), "{status:?}");
                assert!(
                    status.message().contains("too many refused attempts"),
                    "{status:?}"
                );
                throttled += 1;
            }
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    assert_eq!(
        unauthenticated, 10,
        "the burst of 10 is refused as such, then throttled"
    );
    assert_eq!(unauthenticated + throttled, 200);

    // A legitimate caller from the same address is not held back by them.
    let token = pki.signer.token("ops@corp.example", AUDIENCE, 300);
    client
        .rotate_secret(authed(rotate(&id), &token))
        .await
        .expect("an authenticated caller is served");

    // GetRotationStatus has its own per-caller limit.
    let status_call = || {
        authed(
            GetRotationStatusRequest {
                client_id: id.clone(),
                check_drift: false,
            },
            &token,
        )
    };
    for _ in 0..3 {
        client.get_rotation_status(status_call()).await.unwrap();
    }
    let limited = client.get_rotation_status(status_call()).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(limited.message().contains("GetRotationStatus rate limit"));

    // The trail: each kind written once, then its repeats as one event with a count, once
    // its window has ended.
    let total = |denied: &[Value], outcome: &str| -> u64 {
        denied
            .iter()
            .filter(|e| e["outcome"] == outcome)
            // A first line stands for itself, an aggregate for its repeats.
            .map(|e| e["repeated"].as_u64().unwrap_or(1))
            .sum()
    };
    let denied = eventually("every refusal counted", Duration::from_secs(10), || async {
        let trail = std::fs::read_to_string(audit.path()).unwrap_or_default();
        let denied = denied_events(&trail);
        let all = total(&denied, "unauthenticated") == unauthenticated
            && total(&denied, "throttled") == throttled;
        all.then_some(denied)
    })
    .await;
    assert!(
        denied.len() <= 5,
        "{} audit lines for 200 refusals: {denied:?}",
        denied.len()
    );
    assert!(denied.iter().any(|e| e["repeated"] == throttled - 1));
    assert!(denied.iter().any(|e| e["outcome"] == "rate_limited"));
}
