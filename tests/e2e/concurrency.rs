use std::time::Duration;

use secrecy::SecretString;
use secret_rotator::{
    auth0::{Auth0Client, CredentialSource, Credentials, Settings},
    emulator::{Emulator, EmulatorConfig, m2m_client, random_client_id, regular_client},
    proto::RotateSecretRequest,
    rotation::{ClientId, SecretIssuer},
};
use tokio::net::TcpListener;

use crate::helpers::{ALL_SCOPES, M2M_SECRET, Stack, vault_path};

#[tokio::test]
async fn fifty_concurrent_rotations_share_one_token_and_all_land() {
    let stack = Stack::start().await;
    let ids: Vec<String> = (0..50)
        .map(|i| stack.seed(regular_client(&random_client_id(), &format!("App {i}"))))
        .collect();
    let client = stack.client().await;

    let calls = ids.iter().map(|id| {
        let mut client = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .rotate_secret(RotateSecretRequest {
                    client_id: id,
                    reason: "bulk".into(),
                    ..Default::default()
                })
                .await
        })
    });
    for result in futures_join(calls).await {
        result.expect("task").expect("rotation succeeds");
    }

    let stats = stack.emulator.stats();
    assert_eq!(
        stats.token_requests, 1,
        "one /oauth/token call in all: {stats:?}"
    );
    assert_eq!(stats.rotations, 50);
    for id in &ids {
        let data = stack.bao.kv_data(&vault_path(id)).await.expect("written");
        assert_eq!(
            data["client_secret"],
            stack.emulator.live_secret(id).unwrap().as_str(),
            "{id}"
        );
    }
}

/// With an empty token cache, fifty simultaneous rotations make exactly one token request.
#[tokio::test]
async fn token_requests_are_single_flight() {
    let m2m = random_client_id();
    let mut emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_client(&m2m, M2M_SECRET, ALL_SCOPES));
    let ids: Vec<String> = (0..50).map(|_| random_client_id()).collect();
    for id in &ids {
        emulator = emulator.with_client(regular_client(id, "App"));
    }
    let emulator = emulator.start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let auth0 = Auth0Client::new(&Settings {
        domain: emulator.domain(),
        base_url: emulator.base_url().parse().unwrap(),
        ca_cert: None,
        credentials: Credentials::ClientCredentials {
            client_id: m2m,
            source: CredentialSource::Secret(SecretString::from(M2M_SECRET)),
            audience: format!("https://{}/api/v2/", emulator.domain()),
        },
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        budget: Default::default(),
    })
    .unwrap();
    // Clones share one token cache.
    let calls = ids.iter().map(|id| {
        let auth0 = auth0.clone();
        let id = ClientId::parse(id).unwrap();
        tokio::spawn(async move { auth0.rotate_secret(&id).await.map(|_| ()) })
    });
    for result in futures_join(calls).await {
        result.unwrap().expect("rotation at Auth0");
    }
    let stats = emulator.stats();
    assert_eq!(
        (stats.token_requests, stats.rotations),
        (1, 50),
        "{stats:?}"
    );
}

async fn futures_join<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await);
    }
    out
}
