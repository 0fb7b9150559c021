//! How the service gets its Vault token: a file Vault Agent rewrites, or an AppRole login kept
//! valid across short token lifetimes and revocation.

use std::time::Duration;

use secret_rotator::emulator::{random_client_id, regular_client};

use crate::helpers::{ServiceProcess, rotate};

/// The Vault policy the service needs (docs/configuration.md's), for tokens made in tests.
const SERVICE_POLICY: &str = r#"
path "secret/data/auth0/clients/*"     { capabilities = ["create", "update", "read"] }
path "secret/metadata/auth0/clients/*" { capabilities = ["read"] }
path "secret/data/secret-rotator/*"     { capabilities = ["create", "update", "read"] }
path "secret/metadata/secret-rotator/*" { capabilities = ["read", "list"] }
path "sys/capabilities-self"            { capabilities = ["update"] }
"#;

#[tokio::test]
async fn a_vault_token_file_is_read_again_when_it_changes() {
    let (bao, emulator, m2m) = crate::helpers::bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "App"));
    let first = bao.token_with_policy("rotator", SERVICE_POLICY).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{first}\n")).unwrap();
    let mut env: Vec<(&str, String)> = ServiceProcess::env_for(&bao, &emulator, &m2m)
        .into_iter()
        .filter(|(k, _)| *k != "VAULT_TOKEN")
        .collect();
    env.push(("VAULT_TOKEN_FILE", file.display().to_string()));
    let service = ServiceProcess::start(&env).await;
    let mut client = service.client().await;
    client
        .rotate_secret(rotate(&id))
        .await
        .expect("with the first token");

    // Vault Agent renews: a new token in the file, the old one revoked.
    let second = bao.token_with_policy("rotator", SERVICE_POLICY).await;
    let (status, _) = bao
        .api(
            reqwest::Method::POST,
            "auth/token/revoke",
            Some(serde_json::json!({ "token": first })),
        )
        .await;
    assert!(status < 300, "revoked: {status}");
    let next = dir.path().join("token.next");
    std::fs::write(&next, format!("{second}\n")).unwrap();
    std::fs::rename(&next, &file).unwrap();
    client
        .rotate_secret(rotate(&id))
        .await
        .expect("with the token the file holds now");
    let log = service.output();
    assert!(log.contains("the Vault token file changed"), "{log}");
    assert!(!log.contains(&first) && !log.contains(&second));
}

#[tokio::test]
async fn an_approle_login_is_renewed_and_made_again_when_its_token_is_revoked() {
    use reqwest::Method;

    let (bao, emulator, m2m) = crate::helpers::bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "App"));
    // AppRole with short-lived tokens: a few seconds, so that rotations span several.
    bao.token_with_policy("rotator", SERVICE_POLICY).await;
    let (status, _) = bao
        .api(
            Method::POST,
            "sys/auth/approle",
            Some(serde_json::json!({"type": "approle"})),
        )
        .await;
    assert!(status < 300, "approle enabled: {status}");
    let (status, _) = bao
        .api(
            Method::POST,
            "auth/approle/role/rotator",
            Some(serde_json::json!({"token_policies": ["rotator"], "token_ttl": "3s", "token_max_ttl": "60s"})),
        )
        .await;
    assert!(status < 300, "role written: {status}");
    let (_, role) = bao
        .api(Method::GET, "auth/approle/role/rotator/role-id", None)
        .await;
    let role_id = role["data"]["role_id"].as_str().unwrap().to_owned();
    let (_, secret) = bao
        .api(Method::POST, "auth/approle/role/rotator/secret-id", None)
        .await;
    let secret_id = secret["data"]["secret_id"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret-id");
    std::fs::write(&secret_file, &secret_id).unwrap();

    let mut env: Vec<(&str, String)> = ServiceProcess::env_for(&bao, &emulator, &m2m)
        .into_iter()
        .filter(|(k, _)| *k != "VAULT_TOKEN")
        .collect();
    env.extend([
        ("VAULT_AUTH_METHOD", "approle".to_owned()),
        ("VAULT_ROLE_ID", role_id),
        ("VAULT_SECRET_ID_FILE", secret_file.display().to_string()),
        ("ROTATOR_RECONCILE_INTERVAL", "1h".to_owned()),
        ("ROTATOR_READINESS_INTERVAL", "1h".to_owned()),
    ]);
    let service = ServiceProcess::start(&env).await;
    let mut client = service.client().await;

    // Rotations across three token lifetimes: the token is renewed (or replaced) as it goes.
    let until = tokio::time::Instant::now() + Duration::from_secs(9);
    let mut rotated = 0;
    while tokio::time::Instant::now() < until {
        client
            .rotate_secret(rotate(&id))
            .await
            .expect("a rotation while the token is kept valid");
        rotated += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(rotated >= 10);

    // Every token of the role revoked: the next request is refused, logs in again, succeeds.
    let list = Method::from_bytes(b"LIST").unwrap();
    let (_, accessors) = bao.api(list, "auth/token/accessors", None).await;
    for accessor in accessors["data"]["keys"].as_array().unwrap() {
        let (_, token) = bao
            .api(
                Method::POST,
                "auth/token/lookup-accessor",
                Some(serde_json::json!({"accessor": accessor})),
            )
            .await;
        if token["data"]["policies"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p == "rotator"))
        {
            bao.api(
                Method::POST,
                "auth/token/revoke-accessor",
                Some(serde_json::json!({"accessor": accessor})),
            )
            .await;
        }
    }
    client
        .rotate_secret(rotate(&id))
        .await
        .expect("logged in again after the token was revoked");
    let log = service.output();
    assert!(log.contains("logging in again"), "{log}");
    assert!(!log.contains(&secret_id), "the secret id was logged");
}

/// A token made for the test: `ttl`, renewable or not, with the service's policy (and Vault's
/// default policy, which lets a token look itself up and renew itself).
async fn short_token(bao: &crate::helpers::Bao, ttl: &str, renewable: bool) -> String {
    let (status, _) = bao
        .api(
            reqwest::Method::PUT,
            "sys/policies/acl/rotator",
            Some(serde_json::json!({ "policy": SERVICE_POLICY })),
        )
        .await;
    assert!(status < 300, "policy not written: {status}");
    let (status, body) = bao
        .api(
            reqwest::Method::POST,
            "auth/token/create",
            Some(serde_json::json!({
                "policies": ["rotator"], "ttl": ttl, "renewable": renewable,
            })),
        )
        .await;
    assert!(status < 300, "token not created: {status} {body}");
    body["auth"]["client_token"].as_str().unwrap().to_owned()
}

fn with_token(mut env: Vec<(&'static str, String)>, token: String) -> Vec<(&'static str, String)> {
    env.retain(|(k, _)| *k != "VAULT_TOKEN");
    env.push(("VAULT_TOKEN", token));
    env
}

/// An 8-second renewable VAULT_TOKEN is renewed at two thirds of its TTL, as Vault's own tools
/// renew one: rotations keep working across five of its TTLs, and the metrics say how long it
/// has left.
#[tokio::test]
async fn a_renewable_vault_token_is_renewed_and_rotations_work_across_five_of_its_ttls() {
    let (bao, emulator, m2m) = crate::helpers::bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "App"));
    let token = short_token(&bao, "8s", true).await;
    let admin = crate::helpers::free_port();
    let mut env = with_token(ServiceProcess::env_for(&bao, &emulator, &m2m), token);
    env.push(("ROTATOR_ADMIN_ADDR", format!("127.0.0.1:{admin}")));
    let service = ServiceProcess::start(&env).await;
    let mut client = service.client().await;
    let started = std::time::Instant::now();
    let mut rotations = 0;
    // The rotations are spread over 40 s on purpose: the token's TTL is what is under test.
    while started.elapsed() < Duration::from_secs(40) {
        client
            .rotate_secret(rotate(&id))
            .await
            .unwrap_or_else(|e| panic!("rotation {rotations} at {:?}: {e}", started.elapsed()));
        rotations += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(rotations >= 15, "{rotations}");
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let left: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("secret_rotator_vault_token_expiry_seconds "))
        .expect("the expiry gauge")
        .parse()
        .unwrap();
    assert!(left > 0.0 && left <= 8.0, "{left}");
    assert!(
        service.output().contains("VAULT_TOKEN is renewable"),
        "{}",
        service.output()
    );
}

/// A VAULT_TOKEN that cannot be renewed is said once, at WARN, with when it expires.
#[tokio::test]
async fn a_vault_token_that_cannot_be_renewed_is_logged_with_its_expiry() {
    let (bao, emulator, m2m) = crate::helpers::bare_stack().await;
    let token = short_token(&bao, "1h", false).await;
    let service = ServiceProcess::start(&with_token(
        ServiceProcess::env_for(&bao, &emulator, &m2m),
        token,
    ))
    .await;
    let line = crate::helpers::eventually("the warning", Duration::from_secs(10), || {
        let output = service.output();
        async move {
            output
                .lines()
                .find(|l| l.contains("VAULT_TOKEN is not renewable"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        line.contains("\"level\":\"WARN\"") && line.contains("expires_at"),
        "{line}"
    );
}
