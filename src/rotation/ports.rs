//! The ports the protocol is generic over: where secrets are issued (Auth0), where they are kept
//! (Vault KV), and the ledger of leases, intents and idempotency keys (also Vault). Adapters
//! implement them and are cheap to clone (an inner `Arc`), so the service owns them by value.

use std::{future::Future, time::SystemTime};

use secrecy::SecretString;

use super::{
    client::Client,
    error::{IssuerError, StoreError},
    ids::{AuthMethod, ClientId, CredentialId, OwnedKey, ValidationError},
    keys::KeyAlgorithm,
    records::{
        Catalogue, IdempotencyRecord, IssuedSecret, KeySecrets, KvVersion, Presence, StoredKey,
        Versioned,
    },
    state::ClientState,
};

/// Where the next page of Auth0's client list starts: Auth0's checkpoint, kept opaque but
/// checked (a short string of URL-safe characters) before it is sent back to Auth0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor(String);

impl PageCursor {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"-_.~=".contains(&b);
        match !raw.is_empty() && raw.len() <= 256 && raw.bytes().all(safe) {
            true => Ok(Self(raw.to_owned())),
            false => Err(ValidationError::PageToken),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which credentials are attached to which method: the whole of a client's
/// `client_authentication_methods`, as the service sends it back when it changes one method
/// (so that it never drops another).
pub type Attachments = Vec<(AuthMethod, Vec<CredentialId>)>;

/// A credential to register: a public key (Private Key JWT) or a certificate (mTLS).
#[derive(Debug, Clone)]
pub struct NewCredential {
    /// Named after the rotation, so that Auth0's dashboard says where it came from.
    pub name: String,
    pub method: AuthMethod,
    /// SPKI PEM of the public key, or the certificate's PEM.
    pub pem: String,
    /// Private Key JWT only; RS256 when `None`.
    pub alg: Option<KeyAlgorithm>,
    pub expires_at: Option<SystemTime>,
}

/// A credential as Auth0 describes it (never key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    pub id: CredentialId,
    pub name: Option<String>,
    pub credential_type: String,
    /// Public keys: the RFC 7638 thumbprint Auth0 computed.
    pub kid: Option<String>,
    pub alg: Option<String>,
    /// Certificates: base64url SHA-256 of the DER.
    pub thumbprint_sha256: Option<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
}

impl CredentialInfo {
    /// `created_at` as a time, when Auth0 gave a readable one.
    pub fn created(&self) -> Option<SystemTime> {
        timestamp(self.created_at.as_deref())
    }

    /// `expires_at` as a time; `None` when it never expires.
    pub fn expires(&self) -> Option<SystemTime> {
        timestamp(self.expires_at.as_deref())
    }
}

fn timestamp(at: Option<&str>) -> Option<SystemTime> {
    at?.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// One page of the issuer's client list.
#[derive(Debug, Clone, Default)]
pub struct ClientPage {
    pub clients: Vec<Client>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageCursor>,
}

/// Port: issues secrets (Auth0), and manages the key credentials of the clients that have no
/// secret ([`CredentialIssuer`]).
pub trait SecretIssuer: CredentialIssuer + Send + Sync + 'static {
    /// Rotates the client's secret (rotate-secret).
    fn rotate_secret(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<IssuedSecret, IssuerError>> + Send;

    /// Sets the client's secret to `secret` (a staged rotation's promotion) and returns what
    /// Auth0 then holds: the caller checks it is `secret`.
    fn set_secret(
        &self,
        client_id: &ClientId,
        secret: &SecretString,
    ) -> impl Future<Output = Result<IssuedSecret, IssuerError>> + Send;

    /// Reads the client and the secret Auth0 accepts now, without rotating (recovery).
    fn read_secret(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<IssuedSecret, IssuerError>> + Send;

    /// Reads the client without its secret (a dry run's checks).
    fn read_client(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<Client, IssuerError>> + Send;

    /// One page of the tenant's clients, at most `size`, from `from` on (the first page
    /// without); never a secret.
    fn list_clients(
        &self,
        from: Option<&PageCursor>,
        size: usize,
    ) -> impl Future<Output = Result<ClientPage, IssuerError>> + Send;
}

/// Port: a client's key credentials (Auth0): public keys of Private Key JWT clients and
/// certificates of self-signed mTLS clients, registered, attached to the client's
/// authentication method, and deleted once detached.
pub trait CredentialIssuer: Send + Sync + 'static {
    /// Every credential the client holds, attached or not (at most 4).
    fn credentials(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<Vec<CredentialInfo>, IssuerError>> + Send;

    /// Registers a credential; it authenticates nothing until attached. Not idempotent: after
    /// a lost answer, find it by its `kid` or thumbprint in [`Self::credentials`].
    fn create_credential(
        &self,
        client_id: &ClientId,
        credential: &NewCredential,
    ) -> impl Future<Output = Result<CredentialInfo, IssuerError>> + Send;

    /// Makes `attachments` the client's `client_authentication_methods`: every method it
    /// lists, each with one or two credentials. Idempotent.
    fn attach(
        &self,
        client_id: &ClientId,
        attachments: &Attachments,
    ) -> impl Future<Output = Result<(), IssuerError>> + Send;

    /// Deletes a detached credential; one already gone counts as deleted.
    fn delete_credential(
        &self,
        client_id: &ClientId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<(), IssuerError>> + Send;

    /// Whether Auth0 authenticates the client by `assertion` (a client-credentials token
    /// request): `false` only when it refuses the authentication itself.
    fn authenticates(
        &self,
        client_id: &ClientId,
        assertion: &SecretString,
    ) -> impl Future<Output = Result<bool, IssuerError>> + Send;

    /// The tenant's domain: the audience of client assertions is `https://{domain}/`.
    fn domain(&self) -> &str;

    /// Whether Auth0 gives the service a Management API token for `credential` as its own
    /// (a self-rotation's proof of its new credential before the old one is retired).
    fn proves(
        &self,
        credential: &OwnCredential,
    ) -> impl Future<Output = Result<bool, IssuerError>> + Send;
}

/// Port: keeps secrets (Vault KV v2).
pub trait SecretStore: Send + Sync + 'static {
    /// The KV mount, reported back to callers.
    fn mount(&self) -> &str;

    /// Whether the service may write the key (a dry run's checks).
    fn writable(&self, path: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The key's current version; [`KvVersion::NONE`] when it does not exist yet.
    fn current_version(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<KvVersion, StoreError>> + Send;

    /// The secrets the key holds now; `None` when the key does not exist.
    fn read_secret(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<Versioned<KeySecrets>>, StoreError>> + Send;

    /// Writes the key (`client_id`, `client_secret` and, when present, `next_client_secret`
    /// and `previous_client_secret`) with check-and-set against `cas`; returns the new
    /// version. One request: the rotation's facts go to the ledger record.
    fn write_secret(
        &self,
        path: &str,
        client_id: &ClientId,
        secrets: &KeySecrets,
        cas: KvVersion,
    ) -> impl Future<Output = Result<KvVersion, StoreError>> + Send;

    /// The key credential a key client's Vault key holds; `None` when the key does not
    /// exist.
    fn read_key(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<Versioned<StoredKey>>, StoreError>> + Send;

    /// Writes a key client's Vault key (`private_key`, `key_id`, `credential_id`,
    /// `algorithm`, `certificate`, and the `next_` and `previous_` ones) with check-and-set
    /// against `cas`; returns the new version.
    fn write_key(
        &self,
        path: &str,
        client_id: &ClientId,
        key: &StoredKey,
        cas: KvVersion,
    ) -> impl Future<Output = Result<KvVersion, StoreError>> + Send;
}

/// Port: the coordination records, every write check-and-set against the version read.
pub trait Ledger: Send + Sync + 'static {
    /// The client's record (an empty one at [`KvVersion::NONE`] when there is none).
    fn read_state(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<Versioned<ClientState>, StoreError>> + Send;

    fn write_state(
        &self,
        client_id: &ClientId,
        state: &ClientState,
        cas: KvVersion,
    ) -> impl Future<Output = Result<KvVersion, StoreError>> + Send;

    /// Every client that has a record.
    fn clients(&self) -> impl Future<Output = Result<Vec<ClientId>, StoreError>> + Send;

    /// The replicas' shared record: the scanner lease and every replica's heartbeat
    /// (default at [`KvVersion::NONE`] when there is none).
    fn read_presence(&self)
    -> impl Future<Output = Result<Versioned<Presence>, StoreError>> + Send;

    fn write_presence(
        &self,
        presence: &Presence,
        cas: KvVersion,
    ) -> impl Future<Output = Result<KvVersion, StoreError>> + Send;

    /// The client catalogue the scheduler keeps, if it was listed after `listed_after` (`None`
    /// when none was written, it is older, or a part of it is missing).
    fn read_catalogue(
        &self,
        listed_after: SystemTime,
    ) -> impl Future<Output = Result<Option<Catalogue>, StoreError>> + Send;

    /// Replaces the client catalogue.
    fn write_catalogue(
        &self,
        catalogue: &Catalogue,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The record of a caller's idempotency key.
    fn read_idempotency(
        &self,
        key: &OwnedKey,
    ) -> impl Future<Output = Result<Versioned<Option<IdempotencyRecord>>, StoreError>> + Send;

    fn write_idempotency(
        &self,
        key: &OwnedKey,
        record: &IdempotencyRecord,
        cas: KvVersion,
    ) -> impl Future<Output = Result<KvVersion, StoreError>> + Send;
}

/// The service's own Auth0 credential, as it is presented at the token endpoint.
pub enum OwnCredential {
    Secret(SecretString),
    /// Private Key JWT: a client assertion signed with this key.
    Key {
        private_key: SecretString,
        key_id: Option<String>,
        algorithm: KeyAlgorithm,
    },
}

/// A boxed future, for the one port held as a trait object.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Port: where the service's own credential is kept when it is in Vault
/// (`AUTH0_CREDENTIALS_VAULT_PATH`), in the layout the service writes for any client. Read at
/// every token request, so that a rotated credential is used from the next one on.
pub trait OwnCredentialStore: Send + Sync + 'static {
    /// The credentials the key holds, in the order to present them: the one in use, then the
    /// next (a staged secret, promoted at Auth0 a moment before Vault) and the previous (a key
    /// still attached during its overlap).
    fn own_credentials<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OwnCredential>, StoreError>>;
}
