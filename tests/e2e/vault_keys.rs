//! The Vault key of a client that authenticates with a key, in real OpenBao: the members a
//! consumer reads (`private_key`, `key_id`, `credential_id`, `algorithm`), the rotation's
//! `next_private_key` and the `previous_` key, read back into the same values, with
//! check-and-set and a retried write that finds its own.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use secret_rotator::{
    emulator::SEED_PRIVATE_KEY_PEM,
    rotation::{
        ClientId, CredentialId, KeyAlgorithm, KeyBits, KeyEntry, KeyPair, KvVersion, SecretStore,
        StoreError, StoredKey,
    },
    vault::{Settings, Token, VaultStore},
};

use crate::support::Bao;

fn entry(key: &KeyPair, credential: &str) -> KeyEntry {
    KeyEntry {
        private_key: key.private_pem().clone(),
        key_id: key.kid().to_owned(),
        credential_id: CredentialId::parse(credential).unwrap(),
        algorithm: Some(KeyAlgorithm::Rs256),
        certificate: None,
    }
}

#[tokio::test]
async fn a_key_clients_vault_key_holds_what_consumers_sign_with() {
    let bao = Bao::start().await;
    let store = VaultStore::new(&Settings {
        addr: bao.addr.parse().unwrap(),
        token: Token::Static(SecretString::from(bao.token.clone())),
        namespace: None,
        ca_cert: None,
        timeout: Duration::from_secs(5),
        mount: "secret".into(),
        state_prefix: "secret-rotator".into(),
    })
    .unwrap();
    let client = ClientId::parse("KeyClient0000000000000000000001").unwrap();
    let path = format!("auth0/clients/{client}");
    let old = KeyPair::from_private_pem(&SecretString::from(SEED_PRIVATE_KEY_PEM)).unwrap();
    let new = KeyPair::generate(KeyBits::B2048).unwrap();

    // First rotation of a client whose key was made elsewhere: only the next key.
    let staged = StoredKey {
        current: None,
        next: Some(new.private_pem().clone()),
        previous: None,
    };
    let v1 = store
        .write_key(&path, &client, &staged, KvVersion::NONE)
        .await
        .unwrap();
    // The write's answer lost, the same write again: it finds its own.
    assert_eq!(
        store
            .write_key(&path, &client, &staged, KvVersion::NONE)
            .await
            .unwrap(),
        v1
    );

    let switched = StoredKey {
        current: Some(entry(&new, "cred_New0000000000000000001")),
        next: None,
        previous: Some(entry(&old, "cred_Old0000000000000000001")),
    };
    let v2 = store
        .write_key(&path, &client, &switched, v1)
        .await
        .unwrap();
    let raw = bao.kv_data(&path).await.unwrap();
    assert_eq!(raw["client_id"], client.as_str());
    assert_eq!(raw["private_key"], new.private_pem().expose_secret());
    assert_eq!(raw["key_id"], new.kid());
    assert_eq!(raw["credential_id"], "cred_New0000000000000000001");
    assert_eq!(raw["algorithm"], "RS256");
    assert_eq!(raw["previous_key_id"], old.kid());
    assert!(raw.get("next_private_key").is_none());

    let read = store.read_key(&path).await.unwrap().unwrap();
    assert_eq!(read.version, v2);
    assert!(read.value.same_as(&switched));
    let current = read.value.current.as_ref().unwrap();
    assert_eq!(current.key_id, new.kid());
    assert_eq!(current.algorithm, Some(KeyAlgorithm::Rs256));
    // What was read signs: it is the same key.
    assert_eq!(
        KeyPair::from_private_pem(&current.private_key)
            .unwrap()
            .kid(),
        new.kid()
    );
    let shown = format!("{:?}", read.value);
    let body = new
        .private_pem()
        .expose_secret()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(!shown.contains(&body), "{shown}");

    // Someone else's write in between: a conflict, not an overwrite.
    let err = store
        .write_key(&path, &client, &staged, v1)
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::CasMismatch);
}
