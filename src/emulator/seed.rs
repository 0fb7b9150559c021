//! Clients the emulator starts with, shaped like real Management API answers (defaults of a
//! new client, legacy members, addons holding third-party credentials).

use rand::{Rng, distr::Alphanumeric};
use serde_json::{Map, Value, json};

/// A client to seed: its Client object, its secret, and its Management API grant if any.
#[derive(Debug, Clone)]
pub struct SeedClient {
    pub doc: Map<String, Value>,
    pub secret: Option<String>,
    pub grant_scopes: Option<Vec<String>>,
}

/// A fresh 32-character alphanumeric client id, like Auth0's.
pub fn random_client_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("seed documents are objects"),
    }
}

/// A regular web application with a secret.
pub fn regular_client(client_id: &str, name: &str) -> SeedClient {
    let doc = object(json!({
        "client_id": client_id,
        "name": name,
        "description": "Seeded by the emulator",
        "global": false,
        "app_type": "regular_web",
        "is_first_party": true,
        "oidc_conformant": true,
        "callbacks": ["https://app.example.com/callback"],
        "allowed_logout_urls": ["https://app.example.com/"],
        "web_origins": ["https://app.example.com"],
        "grant_types": ["authorization_code", "implicit", "refresh_token", "client_credentials"],
        "token_endpoint_auth_method": "client_secret_post",
        "is_token_endpoint_ip_header_trusted": false,
        "jwt_configuration": {"lifetime_in_seconds": 36000, "secret_encoded": false, "alg": "RS256"},
        "signing_keys": [{
            "cert": "-----BEGIN CERTIFICATE-----\r\nMIIDDTCCAfWgAwIBAgIJ\r\n-----END CERTIFICATE-----",
            "pkcs7": "-----BEGIN PKCS7-----\r\nMIIDPgYJ\r\n-----END PKCS7-----\r\n",
            "subject": "deprecated",
            "key": format!("-----BEGIN RSA PRIVATE KEY-----\r\n{}\r\n-----END RSA PRIVATE KEY-----", random_client_id()),
        }],
        "sso_disabled": false,
        "cross_origin_auth": false,
        "callback_url_template": false,
        "custom_login_page_on": true,
        "refresh_token": {
            "rotation_type": "non-rotating", "expiration_type": "non-expiring", "leeway": 0,
            "token_lifetime": 2592000, "infinite_token_lifetime": true,
            "infinite_idle_token_lifetime": true, "idle_token_lifetime": 1296000
        },
        "organization_usage": "allow",
        "client_metadata": {"team": "platform"},
        "addons": {
            "samlp": {"audience": "urn:example"},
            "firebase": {"client_email": "svc@example.iam", "private_key": format!("FIREBASE-{}", random_client_id())}
        },
        "native_social_login": {"apple": {"enabled": false}, "facebook": {"enabled": false}, "google": {"enabled": false}}
    }));
    SeedClient {
        doc,
        secret: Some(super::routes::new_secret()),
        grant_scopes: None,
    }
}

/// A machine-to-machine application granted `scopes` on the Management API (the service's own).
pub fn m2m_client(client_id: &str, secret: &str, scopes: &[&str]) -> SeedClient {
    let doc = object(json!({
        "client_id": client_id,
        "name": "secret-rotator (machine to machine)",
        "global": false,
        "app_type": "non_interactive",
        "is_first_party": true,
        "oidc_conformant": true,
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_post",
        "jwt_configuration": {"lifetime_in_seconds": 36000, "secret_encoded": false, "alg": "RS256"}
    }));
    SeedClient {
        doc,
        secret: Some(secret.to_owned()),
        grant_scopes: Some(scopes.iter().map(|s| (*s).to_owned()).collect()),
    }
}

/// The service's own application authenticating with Private Key JWT: the seed key attached,
/// no secret, a Management API grant of `scopes`.
pub fn m2m_key_client(client_id: &str, scopes: &[&str]) -> SeedClient {
    let mut client = pkjwt_client(client_id);
    client.doc.insert(
        "name".into(),
        Value::String("secret-rotator (machine to machine, Private Key JWT)".into()),
    );
    client.grant_scopes = Some(scopes.iter().map(|s| (*s).to_owned()).collect());
    client
}

/// A client that authenticates with private_key_jwt: it has no secret and cannot be rotated.
pub fn pkjwt_client(client_id: &str) -> SeedClient {
    let doc = object(json!({
        "client_id": client_id,
        "name": "Private Key JWT service",
        "app_type": "non_interactive",
        "is_first_party": true,
        "oidc_conformant": true,
        "grant_types": ["client_credentials"],
        "jwt_configuration": {"secret_encoded": false, "alg": "RS256"},
        // Registered inline, as POST /api/v2/clients takes it: the emulator puts it in the
        // pool and attaches it by id.
        "client_authentication_methods": {"private_key_jwt": {"credentials": [{
            "credential_type": "public_key", "name": "Seed key", "alg": "RS256",
            "pem": super::SEED_PUBLIC_KEY_PEM
        }]}}
    }));
    SeedClient {
        doc,
        secret: None,
        grant_scopes: None,
    }
}

/// Fixed clients for the local stack, so its printed commands stay valid across restarts.
pub fn demo_clients() -> Vec<SeedClient> {
    let mut third_party = regular_client("tpc_rhQfCQohbSxytKPKF987fE", "Third-party app");
    third_party
        .doc
        .insert("is_first_party".into(), Value::Bool(false));
    third_party.doc.insert(
        "third_party_security_mode".into(),
        Value::String("strict".into()),
    );
    vec![
        regular_client("Dm0WebApp4Rotation00000000000001", "Demo web app"),
        regular_client("Dm0WebApp4Rotation00000000000002", "Demo web app 2"),
        third_party,
        pkjwt_client("Dm0PrivateKeyJwt0000000000000001"),
    ]
}

/// A fleet of `count` clients for inventory, batch and schedule tests and benchmarks, with
/// ids `Fleet` + 27 digits (stable across runs): three in four are machine-to-machine
/// (`non_interactive`, `client_metadata.rotation = "auto"`), the rest regular web
/// applications (`rotation = "manual"`); every tenth authenticates with private_key_jwt and
/// has no secret.
pub fn fleet_clients(count: usize) -> Vec<SeedClient> {
    (0..count)
        .map(|i| {
            let id = format!("Fleet{i:027}");
            if i % 10 == 9 {
                return pkjwt_client(&id);
            }
            let mut client = regular_client(&id, &format!("Fleet app {i}"));
            let (app_type, rotation) = match i % 4 {
                3 => ("regular_web", "manual"),
                _ => ("non_interactive", "auto"),
            };
            client
                .doc
                .insert("app_type".into(), Value::String(app_type.into()));
            client.doc.insert(
                "client_metadata".into(),
                json!({ "team": format!("team-{}", i % 3), "rotation": rotation }),
            );
            client
        })
        .collect()
}
