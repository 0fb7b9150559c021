//! The adapter's edges that a dev-mode OpenBao does not show: a `VAULT_ADDR` with a path, the
//! headers every request carries, each refusal's mapping, redirects and an address that does
//! not answer. (Everything else runs against real OpenBao in `tests/e2e`.)

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{any, header, method, path},
};

use super::{Settings, Token, VaultStore};
use crate::rotation::{ClientId, ClientState, KvVersion, Ledger, SecretStore, StoreError};

const TOKEN: &str = "hvs.test-token-not-for-logs";

fn settings(addr: &str) -> Settings {
    Settings {
        addr: addr.parse().unwrap(),
        token: Token::Static(SecretString::from(TOKEN)),
        namespace: Some("team-a".into()),
        ca_cert: None,
        timeout: Duration::from_secs(5),
        mount: "secret".into(),
        state_prefix: "secret-rotator".into(),
    }
}

/// Vault's envelope around `data`, as OpenBao sends it.
fn envelope(data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "request_id": "5d7c8a4e-0000-0000-0000-000000000000",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    })
}

fn client() -> ClientId {
    ClientId::parse("AbCdEf0123456789AbCdEf0123456789").unwrap()
}

#[tokio::test]
async fn requests_go_under_vault_addrs_path_with_token_namespace_and_request_headers() {
    let vault = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/vault/v1/secret/data/auth0/clients/app"))
        .and(header("x-vault-token", TOKEN))
        .and(header("x-vault-namespace", "team-a"))
        .and(header("x-vault-request", "true"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(envelope(serde_json::json!({
                "data": { "client_id": "app", "client_secret": "s3cr3t" },
                "metadata": {
                    "created_time": "2026-12-07T03:00:00Z", "custom_metadata": null,
                    "deletion_time": "", "destroyed": false, "version": 7
                }
            }))),
        )
        .expect(1)
        .mount(&vault)
        .await;
    let store = VaultStore::new(&settings(&format!("{}/vault/", vault.uri()))).unwrap();

    let read = store
        .read_secret("auth0/clients/app")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.version, KvVersion(7));
    assert_eq!(read.value.current.expose_secret(), "s3cr3t");
}

#[tokio::test]
async fn a_key_vault_does_not_hold_is_none_and_its_version_zero() {
    let vault = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({"errors": []})))
        .mount(&vault)
        .await;
    let store = VaultStore::new(&settings(&vault.uri())).unwrap();

    assert!(
        store
            .read_secret("auth0/clients/app")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.current_version("auth0/clients/app").await.unwrap(),
        KvVersion::NONE
    );
    assert_eq!(store.clients().await.unwrap(), Vec::<ClientId>::new());
}

#[tokio::test]
async fn each_refusal_becomes_the_protocols_error_without_vaults_text() {
    let cases = [
        (
            400,
            r#"{"errors":["check-and-set parameter did not match the current version"]}"#,
            "conflict",
        ),
        (403, r#"{"errors":["permission denied"]}"#, "denied"),
        (
            429,
            r#"{"errors":["rate limit quota exceeded"]}"#,
            "unavailable",
        ),
        (503, r#"{"errors":["Vault is sealed"]}"#, "unavailable"),
        (400, r#"{"errors":["no data provided"]}"#, "unexpected"),
        // Nonsense with a success status: what it held stays out of the error.
        (
            200,
            r#"{"data": "hunter2-looks-like-a-secret""#,
            "unexpected",
        ),
    ];
    for (status, body, expected) in cases {
        let vault = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(
                "/v1/secret/data/secret-rotator/clients/AbCdEf0123456789AbCdEf0123456789",
            ))
            .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
            .mount(&vault)
            .await;
        let store = VaultStore::new(&settings(&vault.uri())).unwrap();

        let err = store
            .write_state(&client(), &ClientState::default(), KvVersion(3))
            .await
            .unwrap_err();
        let kind = match &err {
            StoreError::CasMismatch => "conflict",
            StoreError::PermissionDenied(_) => "denied",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Unexpected(_) => "unexpected",
        };
        assert_eq!(kind, expected, "HTTP {status} {body}: {err}");
        let said = err.to_string();
        for word in ["hunter2", "sealed", "quota", "no data"] {
            assert!(!said.contains(word), "Vault's text in the error: {said}");
        }
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed_with_the_token() {
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let vault = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/v1/secret/data/x", elsewhere.uri())),
        )
        .mount(&vault)
        .await;
    let store = VaultStore::new(&settings(&vault.uri())).unwrap();

    let err = store.read_secret("auth0/clients/app").await.unwrap_err();
    assert!(matches!(err, StoreError::Unexpected(_)), "{err}");
}

#[tokio::test]
async fn vault_not_answering_names_its_address_and_the_cause() {
    // A port nothing listens on: bound, then closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let store = VaultStore::new(&settings(&format!("http://{addr}"))).unwrap();

    let err = store
        .current_version("auth0/clients/app")
        .await
        .unwrap_err();
    let StoreError::Unavailable(said) = &err else {
        panic!("{err}")
    };
    assert!(
        said.starts_with(&format!("http://{addr} did not answer: ")),
        "{said}"
    );
    assert!(said.contains("refused"), "{said}");
    assert!(!said.contains("auth0/clients"), "the key's path: {said}");
}

/// A login's answer as Vault sends it (vaultrs's `AuthInfo` needs every member).
fn login_answer(token: &str, lease: u64) -> serde_json::Value {
    let mut answer = envelope(serde_json::Value::Null);
    answer["auth"] = serde_json::json!({
        "client_token": token, "accessor": "acc", "policies": ["rotator"],
        "token_policies": ["rotator"], "metadata": {"role": "rotator"},
        "lease_duration": lease, "renewable": true, "entity_id": "e", "token_type": "service",
        "orphan": true,
    });
    answer
}

#[tokio::test]
async fn a_kubernetes_login_sends_the_pods_token_and_its_token_is_used() {
    let vault = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    std::fs::write(&jwt, "eyJ.pod-service-account.jwt\n").unwrap();
    Mock::given(method("POST"))
        .and(path("/v1/auth/k8s/login"))
        .and(wiremock::matchers::body_json(serde_json::json!({
            "role": "rotator", "jwt": "eyJ.pod-service-account.jwt"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(login_answer("hvs.from-k8s", 3600)))
        .expect(1)
        .mount(&vault)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/secret/metadata/auth0/clients/app"))
        .and(header("x-vault-token", "hvs.from-k8s"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(envelope(serde_json::json!({
                "cas_required": false, "created_time": "2026-12-07T03:00:00Z", "current_version": 4,
                "custom_metadata": null, "delete_version_after": "0s", "max_versions": 0,
                "oldest_version": 0, "updated_time": "2026-12-07T03:00:00Z", "versions": {}
            }))),
        )
        .expect(2)
        .mount(&vault)
        .await;
    let mut settings = settings(&vault.uri());
    settings.namespace = None;
    settings.token = Token::Kubernetes {
        mount: "k8s".into(),
        role: "rotator".into(),
        jwt_file: jwt,
    };
    let store = VaultStore::new(&settings).unwrap();

    // One login, then its token for every request until two thirds of its lease.
    for _ in 0..2 {
        assert_eq!(
            store.current_version("auth0/clients/app").await.unwrap(),
            KvVersion(4)
        );
    }
}

#[tokio::test]
async fn a_refused_login_is_permission_denied_naming_the_method() {
    let vault = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_id = dir.path().join("secret-id");
    std::fs::write(&secret_id, "not-the-secret-id").unwrap();
    Mock::given(method("POST"))
        .and(path("/v1/auth/approle/login"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"errors": ["invalid role or secret ID"]})),
        )
        .mount(&vault)
        .await;
    let mut settings = settings(&vault.uri());
    settings.token = Token::AppRole {
        mount: "approle".into(),
        role_id: "role".into(),
        secret_id_file: secret_id,
    };
    let store = VaultStore::new(&settings).unwrap();

    let err = store.read_secret("auth0/clients/app").await.unwrap_err();
    let StoreError::PermissionDenied(what) = &err else {
        panic!("{err}")
    };
    assert_eq!(what, "auth/approle/login (AppRole)");
    assert!(!err.to_string().contains("not-the-secret-id"));
}
