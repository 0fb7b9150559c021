//! The Auth0 adapter's key credentials against the emulator: what a key rotation asks of
//! Auth0, step by step (register beside the key in use, verify, retire the old one), and the
//! scope a refusal names.

use std::time::Duration;

use secrecy::SecretString;
use secret_rotator::{
    auth0::{Auth0Client, CredentialSource, Credentials, Settings},
    emulator::{
        Emulator, EmulatorConfig, RunningEmulator, m2m_client, pkjwt_client, random_client_id,
    },
    rotation::{
        AuthMethod, ClientId, CredentialIssuer, IssuerError, KeyAlgorithm, KeyBits, KeyPair,
        NewCredential,
    },
};
use tokio::net::TcpListener;

use crate::helpers::M2M_SECRET;

async fn tenant(scopes: &[&str]) -> (RunningEmulator, Auth0Client, ClientId) {
    let m2m = random_client_id();
    let client = random_client_id();
    let emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_client(&m2m, M2M_SECRET, scopes))
        .with_client(pkjwt_client(&client))
        .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let auth0 = Auth0Client::new(&Settings {
        domain: emulator.domain(),
        base_url: emulator.base_url().parse().unwrap(),
        ca_cert: None,
        credentials: Credentials::ClientCredentials {
            client_id: m2m,
            source: CredentialSource::Secret(SecretString::from(M2M_SECRET)),
            audience: format!("https://{}/api/v2/", emulator.domain()),
        },
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        budget: Default::default(),
    })
    .unwrap();
    (emulator, auth0, ClientId::parse(&client).unwrap())
}

#[tokio::test]
async fn a_key_is_registered_beside_the_one_in_use_verified_and_the_old_one_retired() {
    let mut scopes = vec!["read:clients"];
    scopes.extend(secret_rotator::auth0::CREDENTIAL_SCOPES);
    let (emulator, auth0, client) = tenant(&scopes).await;
    let existing = auth0.credentials(&client).await.unwrap();
    assert_eq!(existing.len(), 1);
    let old = existing[0].id.clone();

    let key = KeyPair::generate(KeyBits::B2048).unwrap();
    let created = auth0
        .create_credential(
            &client,
            &NewCredential {
                name: "rotation 1".into(),
                method: AuthMethod::PrivateKeyJwt,
                pem: key.public_pem().to_owned(),
                alg: Some(KeyAlgorithm::Ps256),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        created.kid.as_deref(),
        Some(key.kid()),
        "Auth0's kid is the one the service computes"
    );
    assert_eq!(created.alg.as_deref(), Some("PS256"));

    let assertion = |key: &KeyPair| {
        key.assertion(
            client.as_str(),
            auth0.domain(),
            KeyAlgorithm::Ps256,
            Some(key.kid()),
        )
        .unwrap()
    };
    assert!(
        !auth0
            .authenticates(&client, &assertion(&key))
            .await
            .unwrap(),
        "registered but not attached: it authenticates nothing"
    );
    let both = vec![(
        AuthMethod::PrivateKeyJwt,
        vec![old.clone(), created.id.clone()],
    )];
    auth0.attach(&client, &both).await.unwrap();
    auth0.attach(&client, &both).await.unwrap();
    assert!(
        auth0
            .authenticates(&client, &assertion(&key))
            .await
            .unwrap()
    );

    // Retire the old key: detach, then delete (twice: already gone counts as deleted).
    let only_new = vec![(AuthMethod::PrivateKeyJwt, vec![created.id.clone()])];
    auth0.attach(&client, &only_new).await.unwrap();
    auth0.delete_credential(&client, &old).await.unwrap();
    auth0.delete_credential(&client, &old).await.unwrap();
    let left = emulator.credentials(client.as_str());
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].attached_to.as_deref(), Some("private_key_jwt"));
    assert!(
        auth0
            .authenticates(&client, &assertion(&key))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn without_the_credential_scopes_the_refusal_names_the_missing_one() {
    let (_emulator, auth0, client) = tenant(&["read:clients", "read:client_keys"]).await;
    let err = auth0.credentials(&client).await.unwrap_err();
    assert!(
        matches!(err, IssuerError::MissingScope("read:client_credentials")),
        "{err:?}"
    );
    let key = KeyPair::generate(KeyBits::B2048).unwrap();
    let err = auth0
        .create_credential(
            &client,
            &NewCredential {
                name: "rotation".into(),
                method: AuthMethod::PrivateKeyJwt,
                pem: key.public_pem().to_owned(),
                alg: None,
                expires_at: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, IssuerError::MissingScope("create:client_credentials")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_client_list_shows_key_clients_methods_and_does_without_them_when_not_readable() {
    use secret_rotator::rotation::{SecretIssuer, rotatable};
    let listed_key_client = |page: secret_rotator::rotation::ClientPage, id: &ClientId| {
        page.clients
            .into_iter()
            .find(|c| c.client_id.0.as_deref() == Some(id.as_str()))
            .expect("listed")
    };
    // A grant that may read keys lists which credentials a key client has attached.
    let (emulator, auth0, client) = tenant(&["read:clients", "read:client_keys"]).await;
    let page = auth0.list_clients(None, 100).await.unwrap();
    assert!(rotatable(&listed_key_client(page, &client)));
    assert_eq!(emulator.stats().list_requests, 1);

    // One that may not is refused that member once, and lists without it from then on.
    let (emulator, auth0, client) = tenant(&["read:clients"]).await;
    let page = auth0.list_clients(None, 100).await.unwrap();
    let listed = listed_key_client(page, &client);
    assert!(listed.client_authentication_methods.0.is_none());
    assert!(!rotatable(&listed));
    assert_eq!(
        emulator.stats().list_requests,
        2,
        "refused, then without it"
    );
    auth0.list_clients(None, 100).await.unwrap();
    assert_eq!(
        emulator.stats().list_requests,
        3,
        "one request a page again"
    );
}
