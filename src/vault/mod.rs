//! Vault KV v2 adapter, implementing the protocol's [`SecretStore`] and [`Ledger`]:
//! check-and-set writes of `{client_id, client_secret}`, the ledger's records (leases, intents,
//! the last rotation's facts, idempotency keys), and the start-up permission check. Requests are
//! vaultrs's endpoints (`kv.rs`, `login.rs`), sent by `transport.rs` through the service's
//! reqwest stack; failures become the protocol's [`StoreError`].

mod catalogue;
mod key_data;
mod kv;
mod login;
mod settings;
mod transport;

use std::{sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use settings::{Settings, Token};

use crate::rotation::{
    Catalogue, ClientId, ClientState, IdempotencyRecord, KeySecrets, KvVersion, Ledger, OwnedKey,
    Presence, PreviousSecret, SecretStore, StoreError, StoredKey, Versioned,
};
use key_data::{KeyData, StoredKeyData};
use kv::Kv;

/// The capabilities a write needs.
const WRITE: &[&str] = &["create", "update"];

/// KV v2 for secrets and the ledger. Cheap to clone: clones share one HTTP client.
#[derive(Clone)]
pub struct VaultStore {
    inner: Arc<Inner>,
}

struct Inner {
    kv: Kv,
    mount: String,
    /// Where the ledger's records live inside the mount.
    state_prefix: String,
}

/// The KV data. Exposes the secrets only while the request body is serialised.
#[derive(Serialize)]
struct SecretData<'a> {
    client_id: &'a str,
    #[serde(serialize_with = "expose")]
    client_secret: &'a SecretString,
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    next_client_secret: Option<&'a SecretString>,
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    previous_client_secret: Option<&'a SecretString>,
    /// RFC 3339, UTC: consumers may read it, and a later write drops the secret after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_client_secret_expires_at: Option<String>,
}

impl<'a> SecretData<'a> {
    fn new(client_id: &'a ClientId, secrets: &'a KeySecrets) -> Self {
        let previous = secrets.previous.as_ref();
        Self {
            client_id: client_id.as_str(),
            client_secret: &secrets.current,
            next_client_secret: secrets.next.as_ref(),
            previous_client_secret: previous.map(|p| &p.secret),
            previous_client_secret_expires_at: previous
                .map(|p| humantime::format_rfc3339_seconds(p.expires_at).to_string()),
        }
    }
}

fn expose<S: serde::Serializer>(secret: &&SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_some<S: serde::Serializer>(
    secret: &Option<&SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_str(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

/// What the service reads back of a key: the secrets, straight into `SecretString`s.
#[derive(Deserialize)]
struct StoredData {
    client_secret: SecretString,
    next_client_secret: Option<SecretString>,
    previous_client_secret: Option<SecretString>,
    previous_client_secret_expires_at: Option<String>,
}

impl From<StoredData> for KeySecrets {
    fn from(d: StoredData) -> Self {
        // An unreadable expiry has passed: the previous secret is dropped at the next write.
        let expires_at = d
            .previous_client_secret_expires_at
            .and_then(|t| humantime::parse_rfc3339(&t).ok())
            .unwrap_or(std::time::UNIX_EPOCH);
        Self {
            current: d.client_secret,
            next: d.next_client_secret,
            previous: d
                .previous_client_secret
                .map(|secret| PreviousSecret { secret, expires_at }),
        }
    }
}

impl VaultStore {
    pub fn new(settings: &Settings) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(Inner {
                kv: Kv::new(settings)?,
                mount: settings.mount.clone(),
                state_prefix: settings.state_prefix.clone(),
            }),
        })
    }

    /// Keeps the Vault token alive for the process's life: a renewable `VAULT_TOKEN` is renewed
    /// at two thirds of its TTL; the expiry of any token is in the metrics.
    pub async fn keep_token_alive(&self) {
        self.inner.kv.keep_token_alive().await;
    }

    /// Whether Vault answered a request well (reachable, unsealed, the token accepted) within
    /// `window`, and nothing since said otherwise: at rest the replica's heartbeat is then the
    /// readiness check, and no request is sent for it.
    pub fn answered_well_within(&self, window: Duration) -> bool {
        self.inner.kv.answered_well_within(window)
    }

    /// Start-up check: Vault answers, and the token may create, update and read secrets,
    /// create and update ledger records, and read the secrets' metadata (their version).
    /// Not in a span of its own: readiness runs it every few seconds, and it is not worth a
    /// trace each time (`upstream.rs`).
    pub async fn check(&self, sample_path: &str) -> Result<(), StoreError> {
        let mount = &self.inner.mount;
        let state = format!("{}/clients/capability_probe", self.inner.state_prefix);
        let needs = [
            // Read too: a rotation keeps the secret it replaces, and a staged one reads the key.
            (
                format!("{mount}/data/{sample_path}"),
                &["create", "update", "read"][..],
            ),
            (format!("{mount}/metadata/{sample_path}"), &["read"][..]),
            (format!("{mount}/data/{state}"), WRITE),
        ];
        match self.inner.kv.first_denied(&needs).await? {
            Some(path) => Err(StoreError::PermissionDenied(path)),
            None => Ok(()),
        }
    }

    fn state_path(&self, client_id: &ClientId) -> String {
        format!("{}/clients/{client_id}", self.inner.state_prefix)
    }

    fn presence_path(&self) -> String {
        format!("{}/replicas", self.inner.state_prefix)
    }

    fn idempotency_path(&self, key: &OwnedKey) -> String {
        // The caller's identity, hashed: it may hold '/' and is not for the path to show. The
        // prefix keeps keys such as "." or ".." from being path segments of their own.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.caller.as_bytes());
        let caller: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "{}/idempotency/{caller}/k-{}",
            self.inner.state_prefix,
            key.key.as_str()
        )
    }

    /// A ledger record; `None` at [`KvVersion::NONE`] when there is none. Records are
    /// validated as they are read: ids, reasons and keys parse again.
    async fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Versioned<Option<T>>, StoreError> {
        Ok(match self.inner.kv.read::<T>(path).await? {
            None => Versioned {
                version: KvVersion::NONE,
                value: None,
            },
            Some(read) => Versioned {
                version: read.version,
                value: Some(read.value),
            },
        })
    }

    /// The current version, if it holds exactly `secrets`; a CAS mismatch otherwise.
    async fn version_holding(
        &self,
        path: &str,
        secrets: &KeySecrets,
    ) -> Result<KvVersion, StoreError> {
        match SecretStore::read_secret(self, path).await? {
            Some(held) if held.value.same_as(secrets) => Ok(held.version),
            _ => Err(StoreError::CasMismatch),
        }
    }
}

impl SecretStore for VaultStore {
    fn mount(&self) -> &str {
        &self.inner.mount
    }

    async fn writable(&self, path: &str) -> Result<bool, StoreError> {
        let data = format!("{}/data/{path}", self.inner.mount);
        Ok(self
            .inner
            .kv
            .first_denied(&[(data, WRITE)])
            .await?
            .is_none())
    }

    async fn current_version(&self, path: &str) -> Result<KvVersion, StoreError> {
        self.inner.kv.current_version(path).await
    }

    async fn read_secret(&self, path: &str) -> Result<Option<Versioned<KeySecrets>>, StoreError> {
        let read = self.inner.kv.read::<StoredData>(path).await?;
        Ok(read.map(|r| Versioned {
            version: r.version,
            value: r.value.into(),
        }))
    }

    async fn write_secret(
        &self,
        path: &str,
        client_id: &ClientId,
        secrets: &KeySecrets,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        let data = SecretData::new(client_id, secrets);
        match self.inner.kv.write(path, &data, cas, "the key").await {
            // A retry after a write whose answer was lost finds its own write: that is success.
            Err(StoreError::CasMismatch) => self.version_holding(path, secrets).await,
            done => done,
        }
    }

    async fn read_key(&self, path: &str) -> Result<Option<Versioned<StoredKey>>, StoreError> {
        let read = self.inner.kv.read::<StoredKeyData>(path).await?;
        Ok(read.map(|r| Versioned {
            version: r.version,
            value: r.value.into(),
        }))
    }

    async fn write_key(
        &self,
        path: &str,
        client_id: &ClientId,
        key: &StoredKey,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        let data = KeyData::new(client_id, key);
        match self.inner.kv.write(path, &data, cas, "the key").await {
            // A retry after a write whose answer was lost finds its own write.
            Err(StoreError::CasMismatch) => match self.read_key(path).await? {
                Some(held) if held.value.same_as(key) => Ok(held.version),
                _ => Err(StoreError::CasMismatch),
            },
            done => done,
        }
    }
}

impl Ledger for VaultStore {
    async fn read_state(&self, client_id: &ClientId) -> Result<Versioned<ClientState>, StoreError> {
        let read = self.read_record(&self.state_path(client_id)).await?;
        Ok(Versioned {
            version: read.version,
            value: read.value.unwrap_or_default(),
        })
    }

    async fn write_state(
        &self,
        client_id: &ClientId,
        state: &ClientState,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        let path = self.state_path(client_id);
        self.inner
            .kv
            .write(&path, state, cas, "a ledger record")
            .await
    }

    async fn clients(&self) -> Result<Vec<ClientId>, StoreError> {
        let dir = format!("{}/clients", self.inner.state_prefix);
        let keys = self.inner.kv.list(&dir).await?;
        Ok(keys
            .iter()
            .filter_map(|k| ClientId::parse(k).ok())
            .collect())
    }

    async fn read_presence(&self) -> Result<Versioned<Presence>, StoreError> {
        let read = self.read_record(&self.presence_path()).await?;
        Ok(Versioned {
            version: read.version,
            value: read.value.unwrap_or_default(),
        })
    }

    async fn write_presence(
        &self,
        presence: &Presence,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        let path = self.presence_path();
        self.inner
            .kv
            .write(&path, presence, cas, "the replicas' record")
            .await
    }

    async fn read_catalogue(
        &self,
        listed_after: std::time::SystemTime,
    ) -> Result<Option<Catalogue>, StoreError> {
        catalogue::read(&self.inner.kv, &self.inner.state_prefix, listed_after).await
    }

    async fn write_catalogue(&self, catalogue: &Catalogue) -> Result<(), StoreError> {
        catalogue::write(&self.inner.kv, &self.inner.state_prefix, catalogue).await
    }

    async fn read_idempotency(
        &self,
        key: &OwnedKey,
    ) -> Result<Versioned<Option<IdempotencyRecord>>, StoreError> {
        self.read_record(&self.idempotency_path(key)).await
    }

    async fn write_idempotency(
        &self,
        key: &OwnedKey,
        record: &IdempotencyRecord,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        let path = self.idempotency_path(key);
        self.inner
            .kv
            .write(&path, record, cas, "a ledger record")
            .await
    }
}

#[cfg(test)]
mod tests;
