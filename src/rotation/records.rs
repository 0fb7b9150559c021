//! The records the protocol reads and writes: commands, what Auth0 issued, what Vault holds, the
//! per-client coordination record and idempotency records. Versions are [`KvVersion`]s, never
//! bare numbers.

use std::{fmt, time::SystemTime};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    client::Client,
    ids::{ClientId, IdempotencyKey, Reason, ValidationError},
};
use crate::audit::Origin;

/// A KV v2 version number. `NONE` (0) is "the key does not exist yet", which is also the
/// check-and-set value that creates a key.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct KvVersion(pub u64);

impl KvVersion {
    pub const NONE: Self = Self(0);

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for KvVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A value as read, with the KV version it was read at (the check-and-set value for the next
/// write).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub version: KvVersion,
    pub value: T,
}

/// What taking a client's lease yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Acquired {
    /// The ledger record's version after the lease was written: every later write of the record
    /// by this holder is check-and-set against it, so a holder whose lease was taken over can no
    /// longer write.
    pub fence: KvVersion,
    /// The secret key's version as the last rotation left it (read from Vault when no
    /// rotation is recorded): the check-and-set value of the secret write.
    pub observed: KvVersion,
    /// The last rotation recorded before this one, kept in the record until this one closes.
    pub previous: Option<LastRotation>,
}

/// One validated RotateSecret request.
#[derive(Debug, Clone)]
pub struct RotateCommand {
    pub client_id: ClientId,
    pub reason: Option<Reason>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// Refuse to rotate unless Vault holds the secret Auth0 accepts now.
    pub require_in_sync: bool,
    /// Who asked, from where, under which trace (for the intent and the audit trail).
    pub origin: Origin,
}

impl RotateCommand {
    pub fn parse(
        client_id: &str,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            client_id: ClientId::parse(client_id)?,
            reason: Reason::parse(reason)?,
            idempotency_key: IdempotencyKey::parse(idempotency_key)?,
            require_in_sync: false,
            origin: Origin::default(),
        })
    }
}

/// What Auth0 handed back from a rotation: the client's metadata and its new secret.
pub struct IssuedSecret {
    /// Boxed: the Client is 2 KB, and rotation futures hold it across awaits.
    pub client: Box<Client>,
    pub secret: SecretString,
}

impl fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("client_id", &self.client.client_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// The facts of one rotation, recorded in the client's ledger record when it closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationMetadata {
    pub rotation_id: Uuid,
    pub rotated_at: SystemTime,
    pub reason: Option<Reason>,
    /// Who asked for it (the authenticated caller), when known.
    #[serde(default)]
    pub caller: Option<String>,
    /// The secret was read back from Auth0 by recovery, not taken from rotate-secret's answer.
    pub recovered: bool,
}

/// A KV v2 version holding a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    pub mount: String,
    pub path: String,
    pub version: KvVersion,
}

/// A completed rotation, as the caller is told about it. No secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rotation {
    pub client: Box<Client>,
    pub metadata: RotationMetadata,
    pub stored: StoredSecret,
    /// This answer replays an earlier request with the same idempotency key: nothing was
    /// rotated now. Never stored.
    #[serde(skip)]
    pub replayed: bool,
}

/// What a dry run found: a rotation would be allowed now. Nothing was changed.
#[derive(Debug, Clone)]
pub struct Validated {
    pub client: Box<Client>,
    /// Where the secret would be written, at the key's current version.
    pub stored: StoredSecret,
}

/// What the service knows about a client (GetRotationStatus).
#[derive(Debug, Clone, Default)]
pub struct RotationStatus {
    /// The last rotation stored in Vault: its metadata and where it is.
    pub last: Option<(RotationMetadata, StoredSecret)>,
    pub open_intent: Option<Intent>,
    pub lease_active: bool,
    /// Whether Vault holds the secret Auth0 accepts now, when it was checked.
    pub drift: Option<Drift>,
}

/// Whether Vault's `client_secret` is the secret Auth0 accepts now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    InSync,
    /// Vault holds another secret, or none.
    Drifted,
    /// Auth0 or Vault could not be read.
    Unknown,
}

/// Per-client coordination record, kept in Vault and only ever written with check-and-set. Its
/// KV version is the fencing value: every change bumps it, so a holder whose lease was taken
/// over can no longer write. The write that closes a rotation also records its facts here, so a
/// rotation costs no separate metadata write and GetRotationStatus one read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientState {
    pub lease: Option<Lease>,
    pub intent: Option<Intent>,
    /// The last rotation stored (absent in records written before this field existed).
    #[serde(default)]
    pub last: Option<LastRotation>,
}

impl ClientState {
    /// Whether a replica holds the client's lease right now.
    pub fn leased(&self) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|l| l.active(SystemTime::now()))
    }

    /// No lease and no open intent: how a settled rotation leaves the record.
    pub fn is_closed(&self) -> bool {
        self.lease.is_none() && self.intent.is_none()
    }

    /// The closed record after a rotation stored `last` (or after one that stored nothing,
    /// keeping the previous facts).
    pub fn closed(last: Option<LastRotation>) -> Self {
        Self {
            lease: None,
            intent: None,
            last,
        }
    }
}

/// The last rotation stored for a client, and the KV version of the secret it wrote: the
/// check-and-set value of the next rotation's secret write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRotation {
    #[serde(flatten)]
    pub metadata: RotationMetadata,
    pub kv_version: KvVersion,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Replica holding it.
    pub holder: String,
    /// Wall-clock expiry, milliseconds since the epoch.
    pub expires_at_ms: u64,
}

impl Lease {
    pub fn active(&self, now: SystemTime) -> bool {
        millis(now) < self.expires_at_ms
    }
}

/// Recorded before Auth0 is called, closed once the secret is stored: an intent still open
/// with no live lease is a rotation that must be healed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub rotation_id: Uuid,
    pub caller: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    pub reason: Option<Reason>,
    pub started_at: SystemTime,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// What an idempotency key is bound to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub client_id: ClientId,
    pub created_at: SystemTime,
    pub outcome: IdempotencyOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IdempotencyOutcome {
    /// A request with this key is rotating (or its rotation awaits recovery).
    Pending { rotation_id: Uuid },
    /// The answer to replay.
    Done { rotation: Box<Rotation> },
    /// The request failed without rotating: the key may be used again.
    Released,
}

pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
