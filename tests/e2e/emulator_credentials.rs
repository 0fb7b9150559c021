//! The emulator's client credentials, as `docs/auth0-emulator.md` records Auth0's: the pool of
//! 4, 2 attached per method, Auth0's `kid` (RFC 7638 thumbprint), delete only once detached,
//! and client authentication at /oauth/token by a client assertion (RS256, RS384, PS256;
//! single-use) or a self-signed certificate an mTLS edge forwards.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der},
    rsa::{KeyPair, KeySize},
};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use secret_rotator::emulator::{
    ASSERTION_TYPE, CONSUMER_API, Emulator, EmulatorConfig, RunningEmulator, SEED_PRIVATE_KEY_PEM,
    m2m_client, pkjwt_client, random_client_id,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::M2M_SECRET;

const CREDENTIAL_SCOPES: &[&str] = &[
    "read:clients",
    "update:clients",
    "create:client_credentials",
    "read:client_credentials",
    "update:client_credentials",
    "delete:client_credentials",
];
/// The seed key's RFC 7638 thumbprint, computed apart from the emulator (Python's
/// `cryptography`): what Auth0 answers as its `kid`.
const SEED_KID: &str = "5DTzBOYP0-fVQmOISufgMfMa8CNPR6nafqclDHO8XzQ";

struct Tenant {
    emulator: RunningEmulator,
    http: reqwest::Client,
    token: String,
    client: String,
}

impl Tenant {
    async fn start(scopes: &[&str]) -> Self {
        let m2m = random_client_id();
        let client = random_client_id();
        let emulator = Emulator::new(EmulatorConfig::default())
            .with_client(m2m_client(&m2m, M2M_SECRET, scopes))
            .with_client(pkjwt_client(&client))
            .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let http = reqwest::Client::new();
        let token: Value = http
            .post(format!("{}/oauth/token", emulator.base_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &m2m),
                ("client_secret", M2M_SECRET),
                (
                    "audience",
                    &format!("https://{}/api/v2/", emulator.domain()),
                ),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            token: token["access_token"].as_str().unwrap().to_owned(),
            emulator,
            http,
            client,
        }
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!(
            "{}/api/v2/clients/{}{path}",
            self.emulator.base_url(),
            self.client
        );
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn attach(&self, ids: &[&str]) -> (u16, Value) {
        let credentials: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
        self.api(
            Method::PATCH,
            "",
            Some(json!({"client_authentication_methods": {"private_key_jwt": {"credentials": credentials}}})),
        )
        .await
    }

    /// Asks for a token for the tenant's API with a client assertion.
    async fn token_with(&self, assertion: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/oauth/token", self.emulator.base_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", assertion),
                ("audience", CONSUMER_API),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn assertion(&self, key_pem: &str, alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let mut body = json!({
            "iss": self.client, "sub": self.client,
            "aud": format!("https://{}/", self.emulator.domain()),
            "iat": now(), "exp": now() + 60, "jti": uuid::Uuid::new_v4().to_string(),
        });
        for (k, v) in claims.as_object().unwrap() {
            body[k] = v.clone();
        }
        jsonwebtoken::encode(
            &header,
            &body,
            &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh RSA key: its PKCS#8 PEM and its SPKI PEM.
fn rsa_key() -> (String, String) {
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let pem = |label: &str, der: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let private: Pkcs8V1Der = key.as_der().unwrap();
    let public = aws_lc_rs::signature::KeyPair::public_key(&key)
        .as_der()
        .unwrap();
    (
        pem("PRIVATE KEY", private.as_ref()),
        pem("PUBLIC KEY", public.as_ref()),
    )
}

#[tokio::test]
async fn the_pool_holds_four_two_attach_and_an_attached_credential_is_not_deleted() {
    let tenant = Tenant::start(CREDENTIAL_SCOPES).await;
    let (status, listed) = tenant.api(Method::GET, "/credentials", None).await;
    assert_eq!(status, 200);
    let seed = &listed[0];
    assert_eq!(
        seed["kid"], SEED_KID,
        "Auth0's kid is the key's RFC 7638 thumbprint"
    );
    assert_eq!(seed["alg"], "RS256");
    assert_eq!(seed["expires_at"], Value::Null);
    let seed_id = seed["id"].as_str().unwrap().to_owned();

    // Three more fill the pool of four; a fifth is refused.
    let mut created = Vec::new();
    for alg in ["RS256", "RS384", "PS256"] {
        let (_, public) = rsa_key();
        let (status, credential) = tenant
            .api(
                Method::POST,
                "/credentials",
                Some(json!({"credential_type": "public_key", "name": alg, "pem": public, "alg": alg})),
            )
            .await;
        assert_eq!(status, 201, "{credential}");
        assert!(credential["id"].as_str().unwrap().starts_with("cred_"));
        assert_eq!(credential["alg"], alg);
        assert!(credential.get("expires_at").is_none(), "{credential}");
        created.push(credential["id"].as_str().unwrap().to_owned());
    }
    let (_, public) = rsa_key();
    let (status, refused) = tenant
        .api(
            Method::POST,
            "/credentials",
            Some(json!({"credential_type": "public_key", "pem": public})),
        )
        .await;
    assert_eq!(
        (status, refused["message"].as_str()),
        (400, Some("A client can have a maximum of 4 credentials."))
    );

    // Two attach; three do not.
    let (status, refused) = tenant.attach(&[&seed_id, &created[0], &created[1]]).await;
    assert_eq!(status, 400);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("Array is too long (3), maximum 2"),
        "{refused}"
    );
    let (status, client) = tenant.attach(&[&seed_id, &created[0]]).await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(
        client["client_authentication_methods"],
        json!({"private_key_jwt": {"credentials": [{"id": seed_id}, {"id": created[0]}]}})
    );

    // Attached: not deleted. Detached: deleted, and deleting it again is still 204.
    let (status, _) = tenant
        .api(Method::DELETE, &format!("/credentials/{seed_id}"), None)
        .await;
    assert_eq!(status, 400);
    tenant.attach(&[&created[0]]).await;
    for _ in 0..2 {
        let (status, _) = tenant
            .api(Method::DELETE, &format!("/credentials/{seed_id}"), None)
            .await;
        assert_eq!(status, 204);
    }
    let (status, _) = tenant
        .api(Method::GET, &format!("/credentials/{seed_id}"), None)
        .await;
    assert_eq!(status, 404);

    // Only expires_at changes.
    let path = format!("/credentials/{}", created[1]);
    let (status, updated) = tenant
        .api(
            Method::PATCH,
            &path,
            Some(json!({"expires_at": "2030-01-01T00:00:00.000Z"})),
        )
        .await;
    assert_eq!(
        (status, updated["expires_at"].as_str()),
        (200, Some("2030-01-01T00:00:00.000Z"))
    );
    let (status, _) = tenant
        .api(Method::PATCH, &path, Some(json!({"name": "renamed"})))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn credentials_need_their_scopes() {
    let tenant = Tenant::start(&["read:clients", "update:clients"]).await;
    let (_, public) = rsa_key();
    let (status, _) = tenant
        .api(
            Method::POST,
            "/credentials",
            Some(json!({"credential_type": "public_key", "pem": public})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = tenant.api(Method::GET, "/credentials", None).await;
    assert_eq!(status, 403);
    let (status, _) = tenant.attach(&["cred_x"]).await;
    assert_eq!(status, 403, "attaching needs update:client_credentials");
}

#[tokio::test]
async fn an_assertion_signed_by_an_attached_key_authenticates_once() {
    let tenant = Tenant::start(CREDENTIAL_SCOPES).await;
    let good = tenant.assertion(
        SEED_PRIVATE_KEY_PEM,
        Algorithm::RS256,
        Some(SEED_KID),
        json!({}),
    );
    let (status, answer) = tenant.token_with(&good).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = tenant.token_with(&good).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_client")),
        "a jti is single-use"
    );

    let refused = [
        (
            "wrong audience",
            json!({"aud": format!("https://{}/api/v2/", tenant.emulator.domain())}),
        ),
        ("over five minutes", json!({"exp": now() + 600})),
        ("expired", json!({"iat": now() - 120, "exp": now() - 60})),
        ("someone else's sub", json!({"sub": "another-client"})),
    ];
    for (why, claims) in refused {
        let assertion = tenant.assertion(SEED_PRIVATE_KEY_PEM, Algorithm::RS256, None, claims);
        assert_eq!(tenant.token_with(&assertion).await.0, 401, "{why}");
    }
    // The credential is RS256: the same key signing RS384 is refused.
    let other_alg = tenant.assertion(SEED_PRIVATE_KEY_PEM, Algorithm::RS384, None, json!({}));
    assert_eq!(tenant.token_with(&other_alg).await.0, 401);
    // A key Auth0 does not know.
    let (stranger, _) = rsa_key();
    let unknown = tenant.assertion(&stranger, Algorithm::RS256, None, json!({}));
    assert_eq!(tenant.token_with(&unknown).await.0, 401);

    // A second key, PS256, attached beside the first: both authenticate (the overlap).
    let (private, public) = rsa_key();
    let (_, credential) = tenant
        .api(
            Method::POST,
            "/credentials",
            Some(json!({"credential_type": "public_key", "pem": public, "alg": "PS256"})),
        )
        .await;
    let new_id = credential["id"].as_str().unwrap();
    let seed_id = tenant.emulator.credentials(&tenant.client)[0].id.clone();
    let detached = tenant.assertion(&private, Algorithm::PS256, None, json!({}));
    assert_eq!(
        tenant.token_with(&detached).await.0,
        401,
        "created but not attached"
    );
    tenant.attach(&[&seed_id, new_id]).await;
    for (key, alg) in [
        (private.as_str(), Algorithm::PS256),
        (SEED_PRIVATE_KEY_PEM, Algorithm::RS256),
    ] {
        let assertion = tenant.assertion(key, alg, None, json!({}));
        assert_eq!(tenant.token_with(&assertion).await.0, 200);
    }

    // The client has no secret to present.
    let (status, _) = {
        let response = tenant
            .http
            .post(format!("{}/oauth/token", tenant.emulator.base_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", tenant.client.as_str()),
                ("client_secret", "anything"),
                ("audience", CONSUMER_API),
            ])
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(status, 401);
    let stats = tenant.emulator.stats();
    assert_eq!(stats.key_authentications, 3);
    assert_eq!(stats.key_authentications_refused, 8);
}

#[tokio::test]
async fn a_self_signed_certificate_attached_for_mtls_authenticates() {
    let tenant = Tenant::start(CREDENTIAL_SCOPES).await;
    let cert = rcgen::generate_simple_self_signed(vec!["consumer.example".into()]).unwrap();
    let pem = cert.cert.pem();
    let (status, credential) = tenant
        .api(
            Method::POST,
            "/credentials",
            Some(json!({"credential_type": "x509_cert", "name": "mtls", "pem": pem})),
        )
        .await;
    assert_eq!(status, 201, "{credential}");
    let der = cert.cert.der();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    assert_eq!(
        credential["thumbprint_sha256"].as_str().unwrap(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
    );
    assert!(
        credential["expires_at"].is_string(),
        "a certificate's expiry is its notAfter"
    );
    let (status, _) = tenant
        .api(
            Method::PATCH,
            "",
            Some(json!({"client_authentication_methods": {"self_signed_tls_client_auth": {"credentials": [{"id": credential["id"]}]}}})),
        )
        .await;
    assert_eq!(status, 200);

    let present = |pem: String| {
        let tenant = &tenant;
        async move {
            let encoded =
                percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            tenant
                .http
                .post(format!("{}/oauth/token", tenant.emulator.base_url()))
                .header("client-certificate", encoded)
                .header("client-certificate-ca-verified", "FAILED")
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", tenant.client.as_str()),
                    ("audience", CONSUMER_API),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(present(pem).await, 200);
    let other = rcgen::generate_simple_self_signed(vec!["other.example".into()]).unwrap();
    assert_eq!(present(other.cert.pem()).await, 401);
}
