//! In-memory ports: Auth0 with one secret per client, KV with check-and-set, and a ledger.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use secrecy::{ExposeSecret, SecretString};

use crate::rotation::{
    AuthMethod, Catalogue, Client, ClientId, ClientPage, ClientState, CredentialId, CredentialInfo,
    IdempotencyRecord, IssuedSecret, IssuerError, KeySecrets, KvVersion, Ledger, OwnedKey,
    PageCursor, Presence, PreviousSecret, SecretIssuer, SecretStore, StoreError, StoredKey,
    Transport, Versioned, public_pem_kid,
};

/// How the fake Auth0 loses the answer of its next rotate-secret call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAnswer {
    /// Auth0 rotates, then the answer is lost (a 502 after commit).
    AfterCommit,
    /// The answer is lost and Auth0 did not rotate.
    WithoutCommit,
}

pub use super::fake_keys::FakeKeys;

/// Auth0 with one secret per client, and a switch to lose the next answer; clients that
/// authenticate with keys have credentials instead.
#[derive(Default)]
pub struct FakeAuth0 {
    pub rotations: AtomicUsize,
    pub live: Mutex<HashMap<String, String>>,
    pub lose_next: Mutex<Option<LostAnswer>>,
    /// Key clients: their credentials and what is attached.
    pub keyed: Mutex<HashMap<String, FakeKeys>>,
    /// Auth0 refuses every client assertion (a verification that fails).
    pub refuse_assertions: AtomicBool,
    /// The n-th credential call (1-based) fails with this error.
    pub credential_fault: Mutex<Option<(usize, IssuerError)>>,
    /// Credential calls made (list, create, attach, delete, verify).
    pub credential_calls: AtomicUsize,
    /// Client list pages asked for.
    pub list_calls: AtomicUsize,
    /// Secrets and clients read.
    pub reads: AtomicUsize,
}

impl FakeAuth0 {
    pub fn live(&self, id: &str) -> Option<String> {
        self.live.lock().unwrap().get(id).cloned()
    }

    /// Adds a self-signed mTLS client whose certificate (`cert_pem`) was made elsewhere.
    pub fn add_mtls_client(&self, id: &str, cert_pem: &str) -> CredentialId {
        let credential = self.add_key_client(id, cert_pem);
        let mut keyed = self.keyed.lock().unwrap();
        let keys = keyed.get_mut(id).unwrap();
        keys.pool[0].0.credential_type = "x509_cert".into();
        keys.attached = vec![(AuthMethod::SelfSignedTls, vec![credential.clone()])];
        credential
    }

    /// Adds a Private Key JWT client whose key (`public_pem`) was made elsewhere.
    pub fn add_key_client(&self, id: &str, public_pem: &str) -> CredentialId {
        let credential = CredentialId::parse("cred_made0elsewhere").unwrap();
        let info = CredentialInfo {
            id: credential.clone(),
            name: Some("made elsewhere".into()),
            credential_type: "public_key".into(),
            kid: public_pem_kid(public_pem),
            alg: Some("RS256".into()),
            thumbprint_sha256: None,
            created_at: None,
            expires_at: None,
        };
        self.keyed.lock().unwrap().insert(
            id.to_owned(),
            FakeKeys {
                pool: vec![(info, public_pem.to_owned())],
                attached: vec![(AuthMethod::PrivateKeyJwt, vec![credential.clone()])],
            },
        );
        credential
    }

    pub fn keys(&self, id: &str) -> FakeKeys {
        self.keyed
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Makes the `n`-th credential call (1-based, counted from the start) fail with `error`.
    pub fn fail_credential_call(&self, n: usize, error: IssuerError) {
        *self.credential_fault.lock().unwrap() = Some((n, error));
    }

    /// Counts a credential call and fails it when scripted to.
    pub(super) fn credential_call(&self) -> Result<(), IssuerError> {
        let n = self.credential_calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut fault = self.credential_fault.lock().unwrap();
        match fault.take() {
            Some((at, error)) if at == n => Err(error),
            other => {
                *fault = other;
                Ok(())
            }
        }
    }

    fn issued(&self, id: &ClientId) -> Result<IssuedSecret, IssuerError> {
        let secret = self.live(id.as_str()).ok_or(IssuerError::ClientNotFound)?;
        Ok(IssuedSecret {
            client: Box::default(),
            secret: SecretString::from(secret),
        })
    }
}

impl SecretIssuer for FakeAuth0 {
    async fn rotate_secret(&self, id: &ClientId) -> Result<IssuedSecret, IssuerError> {
        // As Auth0: a client that authenticates with keys has no secret to rotate.
        if self.keyed.lock().unwrap().contains_key(id.as_str()) {
            return Err(IssuerError::ClientNotRotatable);
        }
        let lose = self.lose_next.lock().unwrap().take();
        if lose != Some(LostAnswer::WithoutCommit) {
            let n = self.rotations.fetch_add(1, Ordering::SeqCst) + 1;
            self.live
                .lock()
                .unwrap()
                .insert(id.to_string(), format!("secret-{n}"));
        }
        // Let other tasks run between "Auth0" and "Vault", as the network would.
        tokio::time::sleep(Duration::from_millis(5)).await;
        match lose {
            Some(_) => Err(IssuerError::OutcomeUnknown(Transport::ServerError(502))),
            None => self.issued(id),
        }
    }

    async fn set_secret(
        &self,
        id: &ClientId,
        secret: &SecretString,
    ) -> Result<IssuedSecret, IssuerError> {
        let lose = self.lose_next.lock().unwrap().take();
        if lose != Some(LostAnswer::WithoutCommit) {
            let mut live = self.live.lock().unwrap();
            if !live.contains_key(id.as_str()) {
                return Err(IssuerError::ClientNotFound);
            }
            live.insert(id.to_string(), secret.expose_secret().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        match lose {
            Some(_) => Err(IssuerError::OutcomeUnknown(Transport::ServerError(502))),
            None => self.issued(id),
        }
    }

    async fn read_secret(&self, id: &ClientId) -> Result<IssuedSecret, IssuerError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.issued(id)
    }

    async fn read_client(&self, id: &ClientId) -> Result<Client, IssuerError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some(keys) = self.keyed.lock().unwrap().get(id.as_str()) {
            return Ok(serde_json::from_value(keys.client_doc(id.as_str())).unwrap());
        }
        self.issued(id).map(|i| *i.client)
    }

    /// Every client by id: those with a secret as secret-based applications, key clients with
    /// their attachments.
    async fn list_clients(
        &self,
        from: Option<&PageCursor>,
        size: usize,
    ) -> Result<ClientPage, IssuerError> {
        self.list_calls.fetch_add(1, Ordering::SeqCst);
        let keyed = self.keyed.lock().unwrap().clone();
        let mut ids: Vec<String> = self.live.lock().unwrap().keys().cloned().collect();
        ids.extend(keyed.keys().cloned());
        ids.sort();
        let start = from.map_or(0, |f| ids.partition_point(|id| id.as_str() < f.as_str()));
        let clients = ids
            .iter()
            .skip(start)
            .take(size)
            .map(|id| match keyed.get(id) {
                Some(keys) => serde_json::from_value(keys.client_doc(id)).unwrap(),
                None => serde_json::from_value(serde_json::json!({
                    "client_id": id,
                    "token_endpoint_auth_method": "client_secret_post",
                }))
                .unwrap(),
            })
            .collect();
        let next = ids
            .get(start + size)
            .map(|id| PageCursor::parse(id).unwrap());
        Ok(ClientPage { clients, next })
    }
}

/// KV with check-and-set and scripted failures.
#[derive(Default)]
pub struct FakeVault {
    pub read_error: Option<StoreError>,
    /// Calls of `current_version`.
    pub version_reads: AtomicUsize,
    /// Calls of `read_secret`.
    pub secret_reads: AtomicUsize,
    pub write_errors: Mutex<VecDeque<StoreError>>,
    pub write_attempts: AtomicUsize,
    /// Every version of every key.
    pub keys: Mutex<HashMap<String, Vec<FakeKey>>>,
    /// Every version of every key client's key.
    pub key_credentials: Mutex<HashMap<String, Vec<StoredKey>>>,
}

/// One version of a key, in the clear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeKey {
    pub current: String,
    pub next: Option<String>,
    pub previous: Option<String>,
}

impl FakeVault {
    /// A write from outside the service: the key's next version holds `secret`.
    pub fn write_outside(&self, path: &str, secret: &str) {
        let mut keys = self.keys.lock().unwrap();
        keys.entry(path.to_owned()).or_default().push(FakeKey {
            current: secret.to_owned(),
            ..FakeKey::default()
        });
    }

    /// The `client_secret` of every version of the key.
    pub fn secrets(&self, path: &str) -> Vec<String> {
        self.versions(path).into_iter().map(|k| k.current).collect()
    }

    pub fn versions(&self, path: &str) -> Vec<FakeKey> {
        let keys = self.keys.lock().unwrap();
        keys.get(path).cloned().unwrap_or_default()
    }

    /// The key's latest version.
    pub fn key(&self, path: &str) -> Option<FakeKey> {
        self.versions(path).pop()
    }
}

fn version(n: usize) -> KvVersion {
    KvVersion(n as u64)
}

impl SecretStore for FakeVault {
    fn mount(&self) -> &str {
        "secret"
    }

    async fn writable(&self, _: &str) -> Result<bool, StoreError> {
        match &self.read_error {
            Some(e) => Err(e.clone()),
            None => Ok(true),
        }
    }

    async fn current_version(&self, path: &str) -> Result<KvVersion, StoreError> {
        self.version_reads.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = &self.read_error {
            return Err(e.clone());
        }
        // One KV key per client, whether it holds a secret or a key credential.
        let keys = self
            .key_credentials
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, Vec::len);
        Ok(version(self.secrets(path).len().max(keys)))
    }

    async fn read_secret(&self, path: &str) -> Result<Option<Versioned<KeySecrets>>, StoreError> {
        self.secret_reads.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = &self.read_error {
            return Err(e.clone());
        }
        let versions = self.versions(path);
        let secret = |s: &String| SecretString::from(s.clone());
        Ok(versions.last().map(|k| Versioned {
            version: version(versions.len()),
            value: KeySecrets {
                current: secret(&k.current),
                next: k.next.as_ref().map(secret),
                previous: k.previous.as_ref().map(|p| PreviousSecret {
                    secret: secret(p),
                    expires_at: SystemTime::now() + Duration::from_secs(600),
                }),
            },
        }))
    }

    async fn write_secret(
        &self,
        path: &str,
        _: &ClientId,
        secrets: &KeySecrets,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        self.write_attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.write_errors.lock().unwrap().pop_front() {
            return Err(e);
        }
        let mut keys = self.keys.lock().unwrap();
        let key = keys.entry(path.to_owned()).or_default();
        if version(key.len()) != cas {
            return Err(StoreError::CasMismatch);
        }
        let clear = |s: &SecretString| s.expose_secret().to_owned();
        key.push(FakeKey {
            current: clear(&secrets.current),
            next: secrets.next.as_ref().map(clear),
            previous: secrets.previous.as_ref().map(|p| clear(&p.secret)),
        });
        Ok(version(key.len()))
    }

    async fn read_key(&self, path: &str) -> Result<Option<Versioned<StoredKey>>, StoreError> {
        if let Some(e) = &self.read_error {
            return Err(e.clone());
        }
        let keys = self.key_credentials.lock().unwrap();
        let versions = keys.get(path).cloned().unwrap_or_default();
        Ok(versions.last().map(|k| Versioned {
            version: version(versions.len()),
            value: k.clone(),
        }))
    }

    async fn write_key(
        &self,
        path: &str,
        _: &ClientId,
        stored: &StoredKey,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        self.write_attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.write_errors.lock().unwrap().pop_front() {
            return Err(e);
        }
        let mut keys = self.key_credentials.lock().unwrap();
        let versions = keys.entry(path.to_owned()).or_default();
        if version(versions.len()) != cas {
            return Err(StoreError::CasMismatch);
        }
        versions.push(stored.clone());
        Ok(version(versions.len()))
    }
}

/// Records with versions and check-and-set.
#[derive(Default)]
pub struct FakeLedger {
    /// JSON text, as Vault keeps it.
    records: Mutex<HashMap<String, (KvVersion, String)>>,
    /// Reads and writes of client records through the port.
    pub state_reads: AtomicUsize,
    pub state_writes: AtomicUsize,
    /// The n-th client-record write (1-based) fails as if Vault were down; 0: none does.
    pub fail_state_write: AtomicUsize,
    pub catalogue: Mutex<Option<Catalogue>>,
}

impl FakeLedger {
    pub fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Versioned<Option<T>> {
        match self.records.lock().unwrap().get(key) {
            Some((v, json)) => Versioned {
                version: *v,
                value: Some(serde_json::from_str(json).unwrap()),
            },
            None => Versioned {
                version: KvVersion::NONE,
                value: None,
            },
        }
    }

    fn write<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        let mut records = self.records.lock().unwrap();
        let current = records.get(key).map_or(KvVersion::NONE, |(v, _)| *v);
        if current != cas {
            return Err(StoreError::CasMismatch);
        }
        let next = KvVersion(cas.get() + 1);
        records.insert(
            key.to_owned(),
            (next, serde_json::to_string(value).unwrap()),
        );
        Ok(next)
    }
}

impl Ledger for FakeLedger {
    async fn read_state(&self, id: &ClientId) -> Result<Versioned<ClientState>, StoreError> {
        self.state_reads.fetch_add(1, Ordering::SeqCst);
        let read = self.read(&format!("c/{id}"));
        Ok(Versioned {
            version: read.version,
            value: read.value.unwrap_or_default(),
        })
    }

    async fn write_state(
        &self,
        id: &ClientId,
        state: &ClientState,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        let n = self.state_writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_state_write.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("503".into()));
        }
        self.write(&format!("c/{id}"), state, cas)
    }

    async fn clients(&self) -> Result<Vec<ClientId>, StoreError> {
        let records = self.records.lock().unwrap();
        Ok(records
            .keys()
            .filter_map(|k| k.strip_prefix("c/"))
            .map(|id| ClientId::parse(id).unwrap())
            .collect())
    }

    async fn read_presence(&self) -> Result<Versioned<Presence>, StoreError> {
        let read = self.read("replicas");
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
        self.write("replicas", presence, cas)
    }

    async fn read_catalogue(
        &self,
        listed_after: SystemTime,
    ) -> Result<Option<Catalogue>, StoreError> {
        Ok(self
            .catalogue
            .lock()
            .unwrap()
            .clone()
            .filter(|c| c.listed_at > listed_after))
    }

    async fn write_catalogue(&self, catalogue: &Catalogue) -> Result<(), StoreError> {
        *self.catalogue.lock().unwrap() = Some(catalogue.clone());
        Ok(())
    }

    async fn read_idempotency(
        &self,
        key: &OwnedKey,
    ) -> Result<Versioned<Option<IdempotencyRecord>>, StoreError> {
        Ok(self.read(&format!("k/{}/{}", key.caller, key.key.as_str())))
    }

    async fn write_idempotency(
        &self,
        key: &OwnedKey,
        record: &IdempotencyRecord,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        self.write(
            &format!("k/{}/{}", key.caller, key.key.as_str()),
            record,
            cas,
        )
    }
}
