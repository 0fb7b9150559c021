//! Runs the real binary in its production shape (TLS, bearer-token callers, policy, audit file)
//! with every crate logging at TRACE, drives rotations and failures through it, and checks that
//! no secret or private key issued or used during the run shows up in its output, its audit
//! trail, the spans it exports, its webhook notifications or any answer, in clear or base64. Also checks what the audit trail records.

use base64::Engine;
use secret_rotator::{
    emulator::{
        Emulator, EmulatorConfig, SEED_PRIVATE_KEY_PEM, m2m_client, m2m_key_client, pkjwt_client,
        random_client_id, regular_client,
    },
    proto::{
        CompleteRotationRequest, RotateSecretRequest, RotationStrategy,
        secret_rotation_service_client::SecretRotationServiceClient,
    },
};
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::{Request, transport::Channel};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

use crate::{
    helpers::{
        ALL_SCOPES, Bao, Collector, M2M_SECRET, ServiceProcess, VAULT_TOKEN, eventually,
        rotate_fault, vault_path,
    },
    pki::{AUDIENCE, Pki},
};

const CALLER: &str = "release-automation@corp.example";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

const POLICY: &str = r#"
[[allow]]
callers = ["jwt:release-automation@corp.example"]
clients = ["*"]
rpcs = ["RotateSecret", "GetRotationStatus", "CompleteRotation"]
"#;

fn call(id: &str, token: &str, traced: bool) -> Request<RotateSecretRequest> {
    let mut request = Request::new(RotateSecretRequest {
        client_id: id.to_owned(),
        reason: "leak test".into(),
        ..Default::default()
    });
    let md = request.metadata_mut();
    md.insert("authorization", format!("Bearer {token}").parse().unwrap());
    if traced {
        md.insert(
            "traceparent",
            format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
    }
    request
}

/// Asserts that no secret, in clear or base64, is in any haystack; returns how many
/// (secret, form, haystack) combinations were checked.
fn assert_none_leaked(secrets: &[String], haystacks: &[&str]) -> usize {
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut checked = 0;
    for secret in secrets {
        let mut forms = vec![secret.clone()];
        forms.extend(engines.iter().map(|e| e.encode(secret)));
        for form in forms {
            for hay in haystacks {
                assert!(!hay.contains(&form), "a secret leaked into the output");
                checked += 1;
            }
        }
    }
    checked
}

/// A private key whole, and each line of its base64 body.
fn key_forms(pem: &str) -> Vec<String> {
    let mut forms = vec![pem.to_owned()];
    forms.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 32)
            .map(str::to_owned),
    );
    forms
}

#[tokio::test]
async fn no_secret_reaches_logs_audit_or_answers_at_trace_level() {
    let bao = Bao::start().await;
    let m2m = random_client_id();
    let ids: Vec<String> = (0..3).map(|_| random_client_id()).collect();
    let pkjwt = random_client_id();
    // Key rotations too: the grant has the credential scopes.
    let mut scopes = ALL_SCOPES.to_vec();
    scopes.extend(secret_rotator::auth0::CREDENTIAL_SCOPES);
    let mut emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_client(&m2m, M2M_SECRET, &scopes))
        .with_client(pkjwt_client(&pkjwt));
    for id in &ids {
        emulator = emulator.with_client(regular_client(id, "Leak test app"));
    }
    let emulator = emulator.start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let pki = Pki::new(POLICY);
    let audit = tempfile::NamedTempFile::new().unwrap();

    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend(pki.env());
    // rustify (vaultrs's HTTP layer) is off unless named: named here, it is checked too.
    env.push(("ROTATOR_LOG", "trace,rustify=trace".to_owned()));
    env.push(("ROTATOR_AUDIT_LOG", audit.path().display().to_string()));
    let collector = Collector::start().await;
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.clone()));
    // Notifications too: every webhook body is searched.
    let hooks = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&hooks)
        .await;
    env.push(("ROTATOR_WEBHOOK_URL", format!("{}/hooks", hooks.uri())));
    env.push((
        "ROTATOR_WEBHOOK_SECRET",
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        ),
    ));
    let mut service = ServiceProcess::start_tls(&env, Some(pki.tls())).await;
    let channel: Channel = crate::helpers::connect(service.addr, Some(pki.tls()))
        .await
        .unwrap();
    let mut client = SecretRotationServiceClient::new(channel);

    let token = pki.signer.token(CALLER, AUDIENCE, 600);
    let stranger = pki.signer.token("stranger@corp.example", AUDIENCE, 600);
    let mut secrets = vec![
        M2M_SECRET.to_owned(),
        VAULT_TOKEN.to_owned(),
        token.clone(),
        stranger.clone(),
    ];
    let mut answers = Vec::new();
    let mut rotations = 0;
    for round in 0..2 {
        for id in &ids {
            let answer = client
                .rotate_secret(call(id, &token, round == 0))
                .await
                .expect("rotation");
            answers.push(format!("{answer:?}"));
            secrets.push(emulator.live_secret(id).unwrap());
            rotations += 1;
        }
    }
    // Failures too: unknown client, secret-less client, bad input, a caller the policy does
    // not know, and Auth0 committing then failing (recovered from Auth0's live secret).
    for id in [random_client_id(), "../x".to_owned()] {
        answers.push(format!(
            "{:?}",
            client
                .rotate_secret(call(&id, &token, false))
                .await
                .unwrap_err()
        ));
    }
    answers.push(format!(
        "{:?}",
        client
            .rotate_secret(call(&ids[1], &stranger, false))
            .await
            .unwrap_err()
    ));
    let anonymous = RotateSecretRequest {
        client_id: ids[2].clone(),
        ..Default::default()
    };
    answers.push(format!(
        "{:?}",
        client.rotate_secret(anonymous).await.unwrap_err()
    ));
    emulator.inject(rotate_fault(502, true, 0));
    let recovered = client
        .rotate_secret(call(&ids[0], &token, false))
        .await
        .expect("recovered: Auth0's secret is not the one Vault held")
        .into_inner();
    assert!(recovered.recovered);
    answers.push(format!("{recovered:?}"));
    rotations += 1;
    secrets.push(emulator.live_secret(&ids[0]).unwrap());

    // A staged rotation: the service generates the secret and PATCHes it to Auth0.
    let mut staged = call(&ids[2], &token, false);
    staged.get_mut().strategy = RotationStrategy::Staged as i32;
    let staged = client
        .rotate_secret(staged)
        .await
        .expect("staged")
        .into_inner();
    answers.push(format!("{staged:?}"));
    let key = bao.kv_data(&vault_path(&ids[2])).await.unwrap();
    secrets.push(
        key["next_client_secret"]
            .as_str()
            .expect("staged")
            .to_owned(),
    );
    let mut promote = Request::new(CompleteRotationRequest {
        client_id: ids[2].clone(),
        rotation_id: staged.rotation_id.clone(),
    });
    promote
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let promoted = client.complete_rotation(promote).await.expect("promoted");
    answers.push(format!("{promoted:?}"));
    rotations += 1;

    // A key rotation: the service makes a private key, registers its public key, verifies it
    // with a signed assertion, then retires the key made elsewhere.
    let keyed = client
        .rotate_secret(call(&pkjwt, &token, false))
        .await
        .expect("key rotated")
        .into_inner();
    answers.push(format!("{keyed:?}"));
    let key = bao.kv_data(&vault_path(&pkjwt)).await.unwrap();
    let private_key = key["private_key"].as_str().expect("a key").to_owned();
    let mut retire = Request::new(CompleteRotationRequest {
        client_id: pkjwt.clone(),
        rotation_id: keyed.rotation_id.clone(),
    });
    retire
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    answers.push(format!(
        "{:?}",
        client.complete_rotation(retire).await.expect("retired")
    ));
    // Private keys, whole and by each line of their base64 body.
    for pem in [private_key.as_str(), SEED_PRIVATE_KEY_PEM] {
        secrets.extend(key_forms(pem));
    }
    secrets.extend(emulator.access_tokens());
    // The key rotation's notifications (rotated, retired) were delivered.
    let webhooks = eventually(
        "the key rotation's notifications",
        std::time::Duration::from_secs(20),
        || async {
            let bodies: Vec<String> = hooks
                .received_requests()
                .await?
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .collect();
            let keyed_events = bodies
                .iter()
                .filter(|b| b.contains(&keyed.rotation_id))
                .count();
            (keyed_events >= 2).then_some(bodies)
        },
    )
    .await;

    // SIGTERM: the binary stops cleanly.
    service.signal("-TERM");
    let exit = service.wait_exit().await;
    assert!(exit.success(), "exit status {exit:?}");

    let output = service.output();
    let trail = std::fs::read_to_string(audit.path()).unwrap();
    assert!(
        output.contains("rotation stored"),
        "TRACE logs were not captured"
    );
    assert!(output.contains("SIGTERM received"), "no shutdown log");
    // Shutting down exported the last spans.
    let spans: Vec<String> = collector.spans().into_iter().map(|s| s.raw).collect();
    assert!(
        spans
            .iter()
            .filter(|s| s.contains("name: \"rotation\""))
            .count()
            >= 6,
        "the rotations' spans were exported"
    );
    let spans = spans.join("\n");
    let webhooks = webhooks.join("\n");
    let haystacks = [
        output.as_str(),
        trail.as_str(),
        &answers.join("\n"),
        spans.as_str(),
        webhooks.as_str(),
    ];
    let checked = assert_none_leaked(&secrets, &haystacks);

    // The audit trail: its own file, one JSON line per attempt and outcome.
    let events: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .collect::<Vec<_>>()
    };
    let staged_steps: Vec<&Value> = of("succeeded")
        .into_iter()
        .filter(|e| e["rotation_id"] == staged.rotation_id.as_str())
        .collect();
    assert_eq!(staged_steps.len(), 2, "stage and promotion: {trail}");
    assert!(
        staged_steps
            .iter()
            .all(|e| e["rotation_id"] == staged.rotation_id.as_str())
    );
    let key_steps: Vec<&Value> = of("succeeded")
        .into_iter()
        .filter(|e| e["rotation_id"] == keyed.rotation_id.as_str())
        .collect();
    let key_outcomes: Vec<&str> = key_steps
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        key_outcomes,
        ["ok", "retired"],
        "the key rotation, then its retirement: {trail}"
    );
    let succeeded: Vec<&Value> = of("succeeded")
        .into_iter()
        .filter(|e| !staged_steps.contains(e) && !key_steps.contains(e))
        .collect();
    assert_eq!(succeeded.len(), 6, "{trail}");
    for e in &succeeded {
        assert_eq!(e["caller"], format!("jwt:{CALLER}"));
        assert_eq!(e["outcome"], "ok");
        assert!(
            e["rotation_id"].as_str().is_some_and(|r| r.len() == 36),
            "{e}"
        );
        assert!(e["kv_version"].as_u64().is_some_and(|v| v >= 1), "{e}");
        assert!(
            e["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{e}"
        );
        assert_eq!(e["reason"], "leak test");
        assert_eq!(e["target"], "audit");
    }
    assert_eq!(
        succeeded
            .iter()
            .filter(|e| e["trace_id"] == TRACE_ID)
            .count(),
        3
    );
    let started = of("started");
    assert_eq!(started.len(), 10, "every admitted attempt starts: {trail}");
    for e in &succeeded {
        assert!(
            started.iter().any(|s| s["rotation_id"] == e["rotation_id"]),
            "{e}"
        );
    }
    assert_eq!(
        of("recovered").len(),
        2,
        "the inline heal and the caller's outcome: {trail}"
    );
    let failed = of("failed");
    assert!(
        failed.iter().any(|e| e["outcome"] == "client_not_found"),
        "{trail}"
    );
    let denied = of("denied");
    assert_eq!(denied.len(), 2, "{trail}");
    assert_eq!(denied[0]["caller"], "jwt:stranger@corp.example");
    assert_eq!(denied[0]["outcome"], "permission_denied");
    assert_eq!(denied[1]["caller"], "");
    assert_eq!(denied[1]["outcome"], "unauthenticated");
    assert_eq!(denied[1]["client_id"], ids[2].as_str());
    assert!(
        !output.contains("rotation audit event"),
        "audit events are routed to their own file"
    );

    eprintln!(
        "leak test: {rotations} rotations, {} secrets checked in {checked} (secret, form, output) combinations over {} bytes of logs, {} bytes of audit trail and {} bytes of exported spans; {} audit events",
        secrets.len(),
        output.len(),
        trail.len(),
        spans.len(),
        events.len()
    );
}

/// The service's own credential, kept in Vault and rotated by the service itself: a secret
/// (staged, proved, promoted, then rolled back) and a private key (overlapped, proved, retired).
/// At TRACE, neither the old nor the new one, nor a token got with them, is in the logs, the
/// audit trail, an answer or a webhook body.
#[tokio::test]
async fn the_services_own_secret_and_key_never_reach_logs_audit_answers_or_webhooks() {
    let mut secrets = vec![M2M_SECRET.to_owned(), VAULT_TOKEN.to_owned()];
    let mut haystacks = Vec::new();
    let mut scopes = ALL_SCOPES.to_vec();
    scopes.extend(secret_rotator::auth0::CREDENTIAL_SCOPES);
    for by_key in [false, true] {
        let bao = Bao::start().await;
        let own = random_client_id();
        let other = random_client_id();
        let seed = match by_key {
            false => m2m_client(&own, M2M_SECRET, &scopes),
            true => m2m_key_client(&own, &scopes),
        };
        let emulator = Emulator::new(EmulatorConfig::default())
            .with_client(seed)
            .with_client(regular_client(&other, "Leak test app"))
            .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let held = match by_key {
            false => serde_json::json!({"client_id": own, "client_secret": M2M_SECRET}),
            true => {
                let seeded = emulator.credentials(&own)[0].clone();
                serde_json::json!({
                    "client_id": own, "private_key": SEED_PRIVATE_KEY_PEM, "algorithm": "RS256",
                    "key_id": seeded.kid, "credential_id": seeded.id,
                })
            }
        };
        let (status, _) = bao
            .api(
                reqwest::Method::POST,
                &format!("secret/data/{}", vault_path(&own)),
                Some(serde_json::json!({ "data": held })),
            )
            .await;
        assert!(status < 300);
        let audit = tempfile::NamedTempFile::new().unwrap();
        let hooks = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&hooks)
            .await;
        let mut env = ServiceProcess::env_for(&bao, &emulator, &own);
        env.retain(|(k, _)| *k != "AUTH0_CLIENT_SECRET");
        env.extend([
            ("AUTH0_CREDENTIALS_VAULT_PATH", vault_path(&own)),
            ("ROTATOR_LOG", "trace,rustify=trace".to_owned()),
            ("ROTATOR_AUDIT_LOG", audit.path().display().to_string()),
            ("ROTATOR_WEBHOOK_URL", format!("{}/hooks", hooks.uri())),
            (
                "ROTATOR_WEBHOOK_SECRET",
                format!(
                    "whsec_{}",
                    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
                ),
            ),
        ]);
        let mut service = ServiceProcess::start(&env).await;
        let mut client = service.client().await;
        let mut answers = Vec::new();
        let plain = |id: &str| RotateSecretRequest {
            client_id: id.to_owned(),
            reason: "own leak test".to_owned(),
            ..Default::default()
        };
        answers.push(format!(
            "{:?}",
            client.rotate_secret(plain(&other)).await.unwrap()
        ));
        let own_rotation = client
            .rotate_secret(plain(&own))
            .await
            .expect("the service rotates its own credential")
            .into_inner();
        answers.push(format!("{own_rotation:?}"));
        let key = bao.kv_data(&vault_path(&own)).await.unwrap();
        match by_key {
            false => secrets.push(
                key["next_client_secret"]
                    .as_str()
                    .expect("staged")
                    .to_owned(),
            ),
            true => secrets.extend(key_forms(key["private_key"].as_str().expect("a key"))),
        }
        let complete = CompleteRotationRequest {
            client_id: own.clone(),
            rotation_id: own_rotation.rotation_id.clone(),
        };
        answers.push(format!(
            "{:?}",
            client
                .complete_rotation(complete)
                .await
                .expect("promoted or retired")
        ));
        if !by_key {
            // The promoted secret undone: the one before is put back, proved again.
            let undone = client
                .rollback_rotation(secret_rotator::proto::RollbackRotationRequest {
                    client_id: own.clone(),
                    rotation_id: own_rotation.rotation_id.clone(),
                })
                .await
                .expect("rolled back");
            answers.push(format!("{undone:?}"));
            assert_eq!(emulator.live_secret(&own).as_deref(), Some(M2M_SECRET));
        }
        answers.push(format!(
            "{:?}",
            client.rotate_secret(plain(&other)).await.unwrap()
        ));
        secrets.push(emulator.live_secret(&other).unwrap());
        secrets.extend(emulator.access_tokens());
        // Staged, promoted, rolled back; or rotated, retired.
        let expected_events = if by_key { 2 } else { 3 };
        let webhooks = eventually(
            "the notifications",
            std::time::Duration::from_secs(20),
            || async {
                let bodies: Vec<String> = hooks
                    .received_requests()
                    .await?
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .filter(|b| b.contains(&own))
                    .collect();
                (bodies.len() >= expected_events).then_some(bodies)
            },
        )
        .await;
        service.signal("-TERM");
        assert!(service.wait_exit().await.success());
        let output = service.output();
        assert!(
            output.contains("TRACE") || output.contains("\"level\":\"TRACE\""),
            "TRACE logs were not captured"
        );
        haystacks.push(output);
        haystacks.push(std::fs::read_to_string(audit.path()).unwrap());
        haystacks.push(answers.join("\n"));
        haystacks.push(webhooks.join("\n"));
    }
    secrets.extend(key_forms(SEED_PRIVATE_KEY_PEM));
    let haystacks: Vec<&str> = haystacks.iter().map(String::as_str).collect();
    let checked = assert_none_leaked(&secrets, &haystacks);
    eprintln!(
        "leak test (own credentials): {} secrets checked in {checked} combinations",
        secrets.len()
    );
}
