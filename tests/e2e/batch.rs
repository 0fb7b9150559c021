//! RotateSecrets: a batch named or selected, streamed client by client, then summarized; sent
//! again with the same idempotency prefix it replays; a caller who hangs up stops new
//! rotations and loses none of those started.

use std::{collections::HashSet, time::Duration};

use secret_rotator::{
    emulator::{Faults, RotateFault, fleet_clients, random_client_id, regular_client},
    proto::{
        BatchSummary, ClientOutcome, ClientSelector, RotateSecretsRequest, client_outcome::Outcome,
        rotate_secrets_response::Event,
        secret_rotation_service_client::SecretRotationServiceClient,
    },
};
use tokio_stream::StreamExt;

use crate::{
    helpers::{ServiceProcess, Stack, authed, bare_stack, connect, eventually, vault_path},
    pki::{AUDIENCE, Pki},
};

/// Runs a batch to its end: the client messages and the summary.
pub async fn run(
    stack: &Stack,
    request: RotateSecretsRequest,
) -> (Vec<ClientOutcome>, BatchSummary) {
    let mut stream = stack
        .client()
        .await
        .rotate_secrets(request)
        .await
        .expect("batch accepted")
        .into_inner();
    let mut clients = Vec::new();
    while let Some(message) = stream.next().await {
        match message.expect("a message").event.expect("an event") {
            Event::Client(outcome) => clients.push(outcome),
            Event::Summary(summary) => {
                assert!(stream.next().await.is_none(), "the summary is last");
                return (clients, summary);
            }
        }
    }
    panic!("the stream ended without a summary");
}

#[tokio::test]
async fn a_named_batch_streams_each_client_and_replays_when_sent_again() {
    let stack = Stack::start().await;
    let ids: Vec<String> = (0..4)
        .map(|_| stack.seed(regular_client(&random_client_id(), "Batch app")))
        .collect();
    let unknown = random_client_id();
    let mut named = ids.clone();
    named.push(unknown.clone());
    let request = || RotateSecretsRequest {
        client_ids: named.clone(),
        reason: "incident 42".into(),
        idempotency_key_prefix: "incident-42-".into(),
        max_concurrency: 2,
        ..Default::default()
    };
    let (clients, summary) = run(&stack, request()).await;
    assert_eq!(clients.len(), 5);
    assert_eq!((summary.total, summary.rotated, summary.failed), (5, 4, 1));
    assert_eq!(summary.failed_by_code.get("NOT_FOUND"), Some(&1));
    for outcome in &clients {
        match outcome.outcome.as_ref().expect("an outcome") {
            Outcome::Rotated(answer) => {
                let live = stack.emulator.live_secret(&outcome.client_id).unwrap();
                let held = stack
                    .bao
                    .kv_data(&vault_path(&outcome.client_id))
                    .await
                    .unwrap();
                assert_eq!(
                    held["client_secret"],
                    live.as_str(),
                    "Vault holds Auth0's secret"
                );
                assert!(
                    !format!("{answer:?}").contains(&live),
                    "no secret in the stream"
                );
            }
            Outcome::Error(status) => {
                assert_eq!(outcome.client_id, unknown);
                assert_eq!(status.code, tonic::Code::NotFound as i32, "{status:?}");
            }
        }
    }
    let rotated: HashSet<&str> = clients
        .iter()
        .filter(|c| matches!(c.outcome, Some(Outcome::Rotated(_))))
        .map(|c| c.client_id.as_str())
        .collect();
    assert_eq!(rotated, ids.iter().map(String::as_str).collect());

    // Sent again, the same keys replay what was done: nothing is rotated twice.
    let (_, again) = run(&stack, request()).await;
    assert_eq!((again.rotated, again.replayed), (4, 4));
    for id in &ids {
        assert_eq!(stack.emulator.client(id).unwrap().rotations, 1, "{id}");
    }
}

#[tokio::test]
async fn a_selector_picks_rotatable_clients_by_metadata_and_type() {
    let stack = Stack::start().await;
    let fleet = fleet_clients(20);
    for client in fleet.clone() {
        stack.seed(client);
    }
    let (clients, summary) = run(
        &stack,
        RotateSecretsRequest {
            selector: Some(ClientSelector {
                clients: vec!["Fleet*".into()],
                app_types: vec!["non_interactive".into()],
                metadata: [("rotation".to_owned(), "auto".to_owned())].into(),
                ..Default::default()
            }),
            max_concurrency: 8,
            ..Default::default()
        },
    )
    .await;
    // The fleet's rule: three in four are non_interactive with rotation = auto, every tenth
    // has no secret.
    let expected: HashSet<String> = (0..20)
        .filter(|i| i % 4 != 3 && i % 10 != 9)
        .map(|i| format!("Fleet{i:027}"))
        .collect();
    let rotated: HashSet<String> = clients.iter().map(|c| c.client_id.clone()).collect();
    assert_eq!(rotated, expected);
    assert_eq!(summary.failed, 0, "{summary:?}");
    for i in 0..20 {
        let id = format!("Fleet{i:027}");
        let rotations = stack.emulator.client(&id).unwrap().rotations;
        assert_eq!(rotations, u64::from(expected.contains(&id)), "{id}");
    }
}

#[tokio::test]
async fn a_caller_who_hangs_up_stops_new_rotations_and_loses_none() {
    let stack = Stack::start().await;
    let ids: Vec<String> = (0..10)
        .map(|_| stack.seed(regular_client(&random_client_id(), "Slow app")))
        .collect();
    // Auth0 rotates at once and answers a second later, for every rotation.
    stack.emulator.inject(Faults {
        rotate: vec![
            RotateFault {
                status: 200,
                commit: true,
                delay_ms: 1000,
            };
            10
        ],
        ..Faults::default()
    });
    let mut stream = stack
        .client()
        .await
        .rotate_secrets(RotateSecretsRequest {
            client_ids: ids.clone(),
            max_concurrency: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.expect("a first outcome").unwrap();
    assert!(matches!(first.event, Some(Event::Client(_))));
    drop(stream);

    // Every rotation Auth0 made ends up in Vault; a batch that went on would keep one in
    // flight (rotated at Auth0, not yet in Vault) until all ten were done.
    let rotated = eventually(
        "the rotations started to settle",
        Duration::from_secs(20),
        || async {
            let mut rotated = 0;
            for id in &ids {
                let live = stack.emulator.live_secret(id).unwrap();
                let inspection = stack.emulator.client(id).unwrap();
                if inspection.rotations == 0 {
                    continue;
                }
                let held = stack.bao.kv_data(&vault_path(id)).await?;
                if held["client_secret"] != live.as_str() {
                    return None;
                }
                rotated += 1;
            }
            Some(rotated)
        },
    )
    .await;
    assert!(
        (2..=4).contains(&rotated),
        "{rotated} of 10 rotated after the hang-up"
    );
}

#[tokio::test]
async fn named_clients_the_caller_may_not_rotate_are_denied_and_selected_ones_never_seen() {
    const POLICY: &str = r#"
[[allow]]
callers = ["jwt:release@corp.example"]
clients = ["Allowed*"]
rpcs = ["RotateSecret"]
"#;
    let (bao, emulator, m2m) = bare_stack().await;
    let allowed = format!("Allowed{}", &random_client_id()[..20]);
    let other = random_client_id();
    emulator.add_client(regular_client(&allowed, "Allowed app"));
    emulator.add_client(regular_client(&other, "Someone else's app"));
    let pki = Pki::new(POLICY);
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend(pki.env());
    let service = ServiceProcess::start_tls(&env, Some(pki.tls())).await;
    let token = pki.signer.token("release@corp.example", AUDIENCE, 300);
    let mut client =
        SecretRotationServiceClient::new(connect(service.addr, Some(pki.tls())).await.unwrap());
    let mut stream = client
        .rotate_secrets(authed(
            RotateSecretsRequest {
                client_ids: vec![allowed.clone(), other.clone()],
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("the batch itself is allowed")
        .into_inner();
    let mut outcomes = Vec::new();
    let mut summary = None;
    while let Some(message) = stream.next().await {
        match message.unwrap().event.unwrap() {
            Event::Client(outcome) => outcomes.push(outcome),
            Event::Summary(s) => summary = Some(s),
        }
    }
    let of = |id: &str| outcomes.iter().find(|o| o.client_id == id).unwrap();
    assert!(matches!(of(&allowed).outcome, Some(Outcome::Rotated(_))));
    match &of(&other).outcome {
        Some(Outcome::Error(status)) => {
            assert_eq!(
                status.code,
                tonic::Code::PermissionDenied as i32,
                "{status:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    let summary = summary.expect("a summary");
    assert_eq!(summary.failed_by_code.get("PERMISSION_DENIED"), Some(&1));
    assert_eq!(emulator.client(&other).unwrap().rotations, 0, "not touched");

    // A selector over everything considers only what this caller may rotate: the others are
    // neither rotated nor named, as ListClients would not show them.
    let mut stream = client
        .rotate_secrets(authed(
            RotateSecretsRequest {
                selector: Some(ClientSelector {
                    clients: vec!["*".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("the batch itself is allowed")
        .into_inner();
    let mut named = Vec::new();
    let mut summary = None;
    while let Some(message) = stream.next().await {
        match message.unwrap().event.unwrap() {
            Event::Client(outcome) => named.push(outcome.client_id),
            Event::Summary(s) => summary = Some(s),
        }
    }
    assert_eq!(named, vec![allowed], "only the granted client");
    let summary = summary.expect("a summary");
    assert_eq!((summary.total, summary.rotated, summary.failed), (1, 1, 0));
    assert_eq!(emulator.client(&other).unwrap().rotations, 0, "not touched");
}

#[tokio::test]
async fn a_batch_may_name_a_thousand_clients_and_no_more() {
    let stack = Stack::start().await;
    // 1001 ids: some 35 KB, far over ROTATOR_MAX_REQUEST_BYTES (4096), within a batch's limit.
    let ids: Vec<String> = (0..1001).map(|_| random_client_id()).collect();
    let status = stack
        .client()
        .await
        .rotate_secrets(RotateSecretsRequest {
            client_ids: ids,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("at most 1000 clients"),
        "{status:?}"
    );
    let neither = stack
        .client()
        .await
        .rotate_secrets(RotateSecretsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(neither.code(), tonic::Code::InvalidArgument);
    // Token requests are the readiness checks' (one every ROTATOR_READINESS_INTERVAL, which a
    // slow run can reach); nothing else reached Auth0.
    let stats = stack.emulator.stats();
    assert_eq!(
        stats.requests - stats.token_requests,
        0,
        "no Management API request"
    );
}

#[tokio::test]
async fn the_services_own_application_is_never_rotated() {
    let stack = Stack::start().await;
    let own = stack.m2m_client_id.clone();
    let other = stack.seed(regular_client(&random_client_id(), "Batch app"));
    let refused = stack.rotate_refused(&own).await;
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("own Auth0 application"),
        "{refused:?}"
    );
    // A selector over everything passes it by; ListClients says it is not rotatable.
    let (clients, _) = run(
        &stack,
        RotateSecretsRequest {
            selector: Some(ClientSelector {
                clients: vec!["*".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let rotated: Vec<&str> = clients.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(rotated, [other.as_str()]);
    let listed = stack
        .client()
        .await
        .list_clients(secret_rotator::proto::ListClientsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let own_entry = listed.clients.iter().find(|c| c.client_id == own).unwrap();
    assert!(!own_entry.rotatable);
    assert_eq!(stack.emulator.client(&own).unwrap().rotations, 0);
}
