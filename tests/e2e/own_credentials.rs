//! Where the service's own Auth0 credential comes from: a secret file read again at every
//! token request, a private key (Private Key JWT for the service itself), or a key in Vault.
//! Exactly one source; a bad one stops the service at start in one line, with status 2.

use std::time::Duration;

use secret_rotator::emulator::{
    Emulator, EmulatorConfig, SEED_PRIVATE_KEY_PEM, m2m_client, m2m_key_client, random_client_id,
    regular_client,
};
use tokio::net::TcpListener;

use crate::helpers::{ALL_SCOPES, Bao, M2M_SECRET, ServiceProcess, eventually, rotate};

/// The environment of `env_for` with the service's credential from `source` instead of
/// AUTH0_CLIENT_SECRET.
fn with_source(
    mut env: Vec<(&'static str, String)>,
    source: (&'static str, String),
) -> Vec<(&'static str, String)> {
    env.retain(|(k, _)| *k != "AUTH0_CLIENT_SECRET");
    env.push(source);
    env
}

#[tokio::test]
async fn a_secret_file_replaced_on_disk_is_used_for_the_next_token() {
    let bao = Bao::start().await;
    let m2m = random_client_id();
    let id = random_client_id();
    // Management API tokens live 2 s: the service asks for a new one every couple of seconds.
    let emulator = Emulator::new(EmulatorConfig {
        token_lifetime: Duration::from_secs(2),
        ..EmulatorConfig::default()
    })
    .with_client(m2m_client(&m2m, M2M_SECRET, ALL_SCOPES))
    .with_client(regular_client(&id, "App"))
    .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth0-client-secret");
    std::fs::write(&file, format!("{M2M_SECRET}\n")).unwrap();
    let env = with_source(
        ServiceProcess::env_for(&bao, &emulator, &m2m),
        ("AUTH0_CLIENT_SECRET_FILE", file.display().to_string()),
    );
    let service = ServiceProcess::start(&env).await;
    let mut client = service.client().await;
    client
        .rotate_secret(rotate(&id))
        .await
        .expect("first rotation");

    // The service's secret is rotated outside it (Auth0 stops accepting the old one at once)
    // and the new one written to the file: every later rotation works, including those after
    // the next token request.
    let fresh = emulator.rotate_outside(&m2m).unwrap();
    std::fs::write(&file, format!("{fresh}\n")).unwrap();
    let asked = emulator.stats().token_requests;
    let mut rotations = 0;
    eventually(
        "a token asked for with the new secret",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            let id = id.clone();
            rotations += 1;
            let emulator = &emulator;
            async move {
                client
                    .rotate_secret(rotate(&id))
                    .await
                    .expect("every rotation works");
                (emulator.stats().token_requests > asked).then_some(())
            }
        },
    )
    .await;
    client
        .rotate_secret(rotate(&id))
        .await
        .expect("with the new token");
    assert!(!service.output().contains("Auth0 refused the token request"));
}

#[tokio::test]
async fn the_service_authenticates_with_its_own_private_key() {
    let bao = Bao::start().await;
    let m2m = random_client_id();
    let id = random_client_id();
    let emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_key_client(&m2m, ALL_SCOPES))
        .with_client(regular_client(&id, "App"))
        .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("auth0-client-key.pem");
    std::fs::write(&key, SEED_PRIVATE_KEY_PEM).unwrap();
    let env = with_source(
        ServiceProcess::env_for(&bao, &emulator, &m2m),
        ("AUTH0_CLIENT_ASSERTION_KEY_FILE", key.display().to_string()),
    );
    let service = ServiceProcess::start(&env).await;
    service
        .client()
        .await
        .rotate_secret(rotate(&id))
        .await
        .expect("rotated with a token got by a client assertion");
    assert!(
        emulator.stats().key_authentications >= 1,
        "{:?}",
        emulator.stats()
    );
    assert_eq!(emulator.stats().key_authentications_refused, 0);
}

#[tokio::test]
async fn the_services_secret_in_vault_is_used_and_a_missing_one_stops_it_at_start() {
    let bao = Bao::start().await;
    let m2m = random_client_id();
    let id = random_client_id();
    let emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_client(&m2m, M2M_SECRET, ALL_SCOPES))
        .with_client(regular_client(&id, "App"))
        .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let (status, _) = bao
        .api(
            reqwest::Method::POST,
            &format!("secret/data/auth0/clients/{m2m}"),
            Some(serde_json::json!({"data": {"client_id": m2m, "client_secret": M2M_SECRET}})),
        )
        .await;
    assert!(status < 300);
    let env = with_source(
        ServiceProcess::env_for(&bao, &emulator, &m2m),
        (
            "AUTH0_CREDENTIALS_VAULT_PATH",
            format!("auth0/clients/{m2m}"),
        ),
    );
    let service = ServiceProcess::start(&env).await;
    service
        .client()
        .await
        .rotate_secret(rotate(&id))
        .await
        .expect("rotated with the secret read from Vault");
    drop(service);

    // A key that is not there: one line, status 2, before serving.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_secret-rotator"));
    cmd.arg("serve");
    for (k, v) in with_source(
        ServiceProcess::env_for(&bao, &emulator, &m2m),
        (
            "AUTH0_CREDENTIALS_VAULT_PATH",
            "auth0/clients/nobody".to_owned(),
        ),
    ) {
        cmd.env(k, v);
    }
    cmd.env("ROTATOR_LISTEN_ADDR", "127.0.0.1:0");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("secret-rotator: the service's own Auth0 credential cannot be read")
            && last.contains("auth0/clients/nobody"),
        "{err}"
    );
}
