//! The Vault key of a client that authenticates with a key or a certificate: what consumers
//! read (`private_key`, `key_id`, `credential_id`, `algorithm`, `certificate`), the rotation's
//! `next_private_key`, and the `previous_` key during the overlap. Private keys are exposed only
//! while the request body is built, and read straight back into `SecretString`s.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer, ser::SerializeMap};

use crate::rotation::{
    BoxFuture, ClientId, CredentialId, KeyAlgorithm, KeyEntry, OwnCredential, StoreError, StoredKey,
};

/// The key's data as written: one map, the previous key's members prefixed `previous_`.
pub(super) struct KeyData<'a> {
    client_id: &'a ClientId,
    key: &'a StoredKey,
}

impl<'a> KeyData<'a> {
    pub(super) fn new(client_id: &'a ClientId, key: &'a StoredKey) -> Self {
        Self { client_id, key }
    }
}

impl Serialize for KeyData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("client_id", self.client_id.as_str())?;
        if let Some(key) = &self.key.current {
            entry(&mut map, "", key)?;
        }
        if let Some(next) = &self.key.next {
            map.serialize_entry("next_private_key", next.expose_secret())?;
        }
        if let Some(key) = &self.key.previous {
            entry(&mut map, "previous_", key)?;
        }
        map.end()
    }
}

/// One key's members, under `prefix`.
fn entry<M: SerializeMap>(map: &mut M, prefix: &str, key: &KeyEntry) -> Result<(), M::Error> {
    map.serialize_entry(
        &format!("{prefix}private_key"),
        key.private_key.expose_secret(),
    )?;
    map.serialize_entry(&format!("{prefix}key_id"), &key.key_id)?;
    map.serialize_entry(
        &format!("{prefix}credential_id"),
        key.credential_id.as_str(),
    )?;
    if let Some(alg) = key.algorithm {
        map.serialize_entry(&format!("{prefix}algorithm"), alg.as_str())?;
    }
    if let Some(cert) = &key.certificate {
        map.serialize_entry(&format!("{prefix}certificate"), cert)?;
    }
    Ok(())
}

/// What the service reads back of a key client's Vault key. A key whose members are
/// incomplete is no key.
#[derive(Deserialize)]
pub(super) struct StoredKeyData {
    private_key: Option<SecretString>,
    key_id: Option<String>,
    credential_id: Option<CredentialId>,
    algorithm: Option<String>,
    certificate: Option<String>,
    next_private_key: Option<SecretString>,
    previous_private_key: Option<SecretString>,
    previous_key_id: Option<String>,
    previous_credential_id: Option<CredentialId>,
    previous_algorithm: Option<String>,
    previous_certificate: Option<String>,
}

fn key_entry(
    private_key: Option<SecretString>,
    key_id: Option<String>,
    credential_id: Option<CredentialId>,
    algorithm: Option<String>,
    certificate: Option<String>,
) -> Option<KeyEntry> {
    Some(KeyEntry {
        private_key: private_key?,
        key_id: key_id?,
        credential_id: credential_id?,
        algorithm: algorithm.as_deref().and_then(KeyAlgorithm::parse),
        certificate,
    })
}

impl From<StoredKeyData> for StoredKey {
    fn from(d: StoredKeyData) -> Self {
        StoredKey {
            current: key_entry(
                d.private_key,
                d.key_id,
                d.credential_id,
                d.algorithm,
                d.certificate,
            ),
            next: d.next_private_key,
            previous: key_entry(
                d.previous_private_key,
                d.previous_key_id,
                d.previous_credential_id,
                d.previous_algorithm,
                d.previous_certificate,
            ),
        }
    }
}

/// The service's own credentials as its Vault key holds them: a client's secrets, or its keys
/// (read straight into `SecretString`s).
#[derive(serde::Deserialize)]
struct OwnData {
    client_secret: Option<SecretString>,
    next_client_secret: Option<SecretString>,
    previous_client_secret: Option<SecretString>,
    private_key: Option<SecretString>,
    key_id: Option<String>,
    algorithm: Option<String>,
    next_private_key: Option<SecretString>,
    previous_private_key: Option<SecretString>,
    previous_key_id: Option<String>,
    previous_algorithm: Option<String>,
}

impl crate::rotation::OwnCredentialStore for super::VaultStore {
    fn own_credentials<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OwnCredential>, StoreError>> {
        Box::pin(async move {
            let d = self
                .inner
                .kv
                .read::<OwnData>(path)
                .await?
                .ok_or_else(|| StoreError::Unexpected("no such key".into()))?
                .value;
            let key = |pem: Option<SecretString>, kid: Option<String>, alg: Option<String>| {
                pem.map(|private_key| OwnCredential::Key {
                    private_key,
                    key_id: kid,
                    algorithm: alg
                        .as_deref()
                        .and_then(KeyAlgorithm::parse)
                        .unwrap_or_default(),
                })
            };
            let found: Vec<OwnCredential> =
                match d.private_key.is_some() || d.next_private_key.is_some() {
                    // A key rotation's next key is attached before Vault hands it out: last.
                    true => [
                        key(d.private_key, d.key_id, d.algorithm.clone()),
                        key(
                            d.previous_private_key,
                            d.previous_key_id,
                            d.previous_algorithm,
                        ),
                        key(d.next_private_key, None, d.algorithm),
                    ]
                    .into_iter()
                    .flatten()
                    .collect(),
                    false => [
                        d.client_secret,
                        d.next_client_secret,
                        d.previous_client_secret,
                    ]
                    .into_iter()
                    .flatten()
                    .map(OwnCredential::Secret)
                    .collect(),
                };
            match found.is_empty() {
                true => Err(StoreError::Unexpected(
                    "the key holds neither client_secret nor private_key".into(),
                )),
                false => Ok(found),
            }
        })
    }
}
