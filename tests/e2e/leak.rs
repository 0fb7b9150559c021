//! Runs the real binary with every crate logging at TRACE, drives rotations and failures
//! through it, and checks that no secret issued during the run shows up in its output or in
//! any answer, in clear or base64.

use crate::helpers::{ALL_SCOPES, Bao, M2M_SECRET, ServiceProcess, VAULT_TOKEN};
use base64::Engine;
use secret_rotator::{
    emulator::{
        Emulator, EmulatorConfig, Faults, RotateFault, m2m_client, pkjwt_client, random_client_id,
        regular_client,
    },
    proto::RotateSecretRequest,
};
use tokio::net::TcpListener;

#[tokio::test]
async fn no_secret_reaches_logs_or_answers_at_trace_level() {
    let bao = Bao::start().await;
    let m2m = random_client_id();
    let ids: Vec<String> = (0..3).map(|_| random_client_id()).collect();
    let pkjwt = random_client_id();
    let mut emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_client(&m2m, M2M_SECRET, ALL_SCOPES))
        .with_client(pkjwt_client(&pkjwt));
    for id in &ids {
        emulator = emulator.with_client(regular_client(id, "Leak test app"));
    }
    let emulator = emulator.start(TcpListener::bind("127.0.0.1:0").await.unwrap());

    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.push(("ROTATOR_LOG", "trace".to_owned()));
    let mut service = ServiceProcess::start(&env).await;
    let mut client = service.client().await;
    let mut secrets = vec![M2M_SECRET.to_owned(), VAULT_TOKEN.to_owned()];
    let mut answers = Vec::new();
    let mut rotations = 0;
    let call = |id: &str| RotateSecretRequest {
        client_id: id.to_owned(),
        reason: "leak test".into(),
        ..Default::default()
    };
    for _ in 0..2 {
        for id in &ids {
            answers.push(format!(
                "{:?}",
                client.rotate_secret(call(id)).await.expect("rotation")
            ));
            secrets.push(emulator.live_secret(id).unwrap());
            rotations += 1;
        }
    }
    // Failures too: unknown client, secret-less client, bad input, Auth0 committing then failing.
    for id in [random_client_id(), pkjwt.clone(), "../x".to_owned()] {
        answers.push(format!(
            "{:?}",
            client.rotate_secret(call(&id)).await.unwrap_err()
        ));
    }
    emulator.inject(Faults {
        rotate: vec![RotateFault {
            status: 502,
            commit: true,
            delay_ms: 0,
        }],
        ..Faults::default()
    });
    answers.push(format!(
        "{:?}",
        client.rotate_secret(call(&ids[0])).await.unwrap_err()
    ));
    secrets.push(emulator.live_secret(&ids[0]).unwrap());
    secrets.extend(emulator.access_tokens());

    // SIGTERM: the binary stops cleanly.
    service.signal("-TERM");
    let exit = service.wait_exit().await;
    assert!(exit.success(), "exit status {exit:?}");

    let output = service.output();
    assert!(
        output.contains("rotation stored"),
        "TRACE logs were not captured"
    );
    assert!(output.contains("SIGTERM received"), "no shutdown log");
    let haystacks = [output.as_str(), &answers.join("\n")];
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut checked = 0;
    for secret in &secrets {
        let mut forms = vec![secret.clone()];
        forms.extend(engines.iter().map(|e| e.encode(secret)));
        for form in forms {
            for hay in haystacks {
                assert!(!hay.contains(&form), "a secret leaked into the output");
                checked += 1;
            }
        }
    }
    eprintln!(
        "leak test: {rotations} rotations, {} secrets checked in {} forms over {} bytes of output",
        secrets.len(),
        checked,
        output.len()
    );
}
