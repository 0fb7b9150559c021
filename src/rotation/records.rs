//! The values the protocol reads and writes: what Auth0 issued, what Vault holds, the parts of
//! the per-client coordination record (`state.rs`) and idempotency records. Versions are [`KvVersion`]s, never
//! bare numbers.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    client::Client,
    ids::{AuthMethod, ClientId, CredentialId, IdempotencyKey, Reason},
    keys::KeyAlgorithm,
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

/// What Auth0 handed back from a rotation: the client's metadata and its new secret.
pub struct IssuedSecret {
    /// Boxed: the Client is 2 KB, and rotation futures hold it across awaits.
    pub client: Box<Client>,
    pub secret: SecretString,
}

impl IssuedSecret {
    /// Whether Auth0 handed back exactly `secret`.
    pub fn secret_is(&self, secret: &SecretString) -> bool {
        self.secret.expose_secret() == secret.expose_secret()
    }
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
    #[serde(default)]
    pub strategy: Strategy,
}

impl RotationMetadata {
    /// Rotation `rotation_id` of `strategy`, stored now, as asked for.
    pub fn new(
        rotation_id: Uuid,
        strategy: Strategy,
        caller: Option<String>,
        reason: Option<Reason>,
    ) -> Self {
        Self {
            rotation_id,
            rotated_at: SystemTime::now(),
            reason,
            caller,
            recovered: false,
            strategy,
        }
    }
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
    /// A staged rotation: when its secret is promoted at the latest. `None` once promoted.
    #[serde(default)]
    pub promote_after: Option<SystemTime>,
    /// A key rotation: the credential consumers use now. `None` for a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<RotatedCredential>,
}

/// The credential a key rotation made (no key material).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotatedCredential {
    pub method: AuthMethod,
    pub credential_id: CredentialId,
    /// Vault's `key_id`: Auth0's `kid`, or a certificate's thumbprint.
    pub key_id: String,
    /// When Auth0 stops accepting it (`expires_at`), when it does: a schedule rule's
    /// `before_expiry` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<SystemTime>,
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
    /// A staged rotation waiting for promotion, and where its secret is.
    pub staged: Option<(Staged, StoredSecret)>,
    /// A key rotation in its overlap.
    pub overlap: Option<Overlap>,
    /// Whether Vault holds the secret Auth0 accepts now, when it was checked.
    pub drift: Option<Drift>,
}

/// Whether Vault's `client_secret` is the secret Auth0 accepts now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    InSync,
    /// Vault holds another secret than Auth0 accepts.
    Drifted,
    /// Vault holds no secret for the client: the service never rotated it (nothing to
    /// compare; Auth0 is not asked).
    NotHeld,
    /// Auth0 or Vault could not be read.
    Unknown,
}

/// The last rotation stored for a client, and the KV version of the secret it wrote: the
/// check-and-set value of the next rotation's secret write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRotation {
    #[serde(flatten)]
    pub metadata: RotationMetadata,
    pub kv_version: KvVersion,
    /// A key rotation's credential, which consumers use since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<RotatedCredential>,
}

/// The tenant's client list as the scheduler last listed it from Auth0: the members selectors
/// and `rotatable` read (id, name, app_type, client_metadata, authentication methods), never a
/// secret. Kept in the ledger, so that a replica taking the scheduler over starts from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    pub listed_at: SystemTime,
    pub clients: Vec<Client>,
}

/// The replicas' shared record (`presence.rs`): who scans, who runs the schedule, each
/// replica's heartbeat, and how fresh the client catalogue in the ledger is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// The replica that runs the reconciler's scans.
    #[serde(default)]
    pub scanner: Option<Lease>,
    /// The replica that runs the schedule's passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Lease>,
    /// When a scheduler last found the client catalogue in the ledger to be the tenant's
    /// clients, milliseconds since the epoch (a tenant at rest: nothing else is written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalogue_current_at_ms: Option<u64>,
    /// Each replica's heartbeat, by replica name.
    #[serde(default)]
    pub beats: std::collections::BTreeMap<String, Beat>,
}

/// A replica's heartbeat: alive until `expires_at_ms`, and which start of it (a replica
/// restarted under the same name is another incarnation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    pub expires_at_ms: u64,
    pub incarnation: Uuid,
    /// This incarnation found an earlier one's heartbeat under its name: that one stopped
    /// without leaving (it died), and what it left open is looked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
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
    /// What the rotation is doing: healing depends on it.
    #[serde(default)]
    pub step: Step,
    pub caller: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    pub reason: Option<Reason>,
    pub started_at: SystemTime,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Intent {
    /// Step `step` of rotation `rotation_id`, asked for by `origin`, starting now.
    pub fn new(rotation_id: Uuid, step: Step, origin: &Origin) -> Self {
        Self {
            rotation_id,
            step,
            caller: origin.caller.clone(),
            trace_id: Some(origin.trace_id.clone()),
            reason: None,
            started_at: SystemTime::now(),
            idempotency_key: None,
        }
    }
}

/// How a rotation replaces the secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// rotate-secret: Auth0 makes a new secret and the old one stops working at once.
    #[default]
    Immediate,
    /// The service makes the next secret, Vault holds it beside the current one for a while
    /// (consumers pick it up), then it is set at Auth0 and promoted in Vault.
    Staged,
    /// A client that authenticates with a key or a certificate: the service makes a new key,
    /// Auth0 accepts it beside the old one, consumers switch, and the old one is retired after
    /// the overlap.
    Key,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Staged => "staged",
            Self::Key => "key",
        }
    }
}

/// The step an open intent was taking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// An immediate rotation (rotate-secret).
    #[default]
    Rotate,
    /// Writing a staged rotation's next secret to Vault; Auth0 untouched.
    Stage,
    /// Setting the staged secret at Auth0 and promoting it in Vault.
    Promote,
    /// Removing a staged secret from Vault; Auth0 untouched.
    Cancel,
    /// A key rotation up to the switch: the new key in Vault, registered and attached beside
    /// the old one, verified, then what consumers read.
    KeyRotate,
    /// Putting a rotation's previous secret back at Auth0 (PATCH), then in Vault.
    Rollback,
}

impl Step {
    /// The kind of rotation the step belongs to.
    pub fn strategy(self) -> Strategy {
        match self {
            Self::Rotate => Strategy::Immediate,
            Self::Stage | Self::Promote | Self::Cancel => Strategy::Staged,
            Self::KeyRotate => Strategy::Key,
            // The previous secret is set at Auth0 at once, as rotate-secret sets a new one.
            Self::Rollback => Strategy::Immediate,
        }
    }
}

/// A staged rotation: its next secret is in Vault, Auth0 still accepts the current one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Staged {
    pub rotation_id: Uuid,
    pub caller: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    pub reason: Option<Reason>,
    pub staged_at: SystemTime,
    /// When any replica promotes it, unless CompleteRotation does first.
    pub promote_after: SystemTime,
    /// The KV version holding `next_client_secret`.
    pub kv_version: KvVersion,
}

/// A secret rotation undone (RollbackRotation): its previous secret is `client_secret` again
/// at `kv_version`, and itself `previous_client_secret`. No secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolledBack {
    pub rotation_id: Uuid,
    pub at: SystemTime,
    pub kv_version: KvVersion,
}

/// A key rotation between the switch and the old key's retirement: both keys are attached,
/// consumers have the new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overlap {
    pub rotation_id: Uuid,
    pub method: AuthMethod,
    /// The new credential consumers use now.
    pub credential: CredentialId,
    /// The credential retired when the overlap ends (none when the client had none attached).
    pub retiring: Option<CredentialId>,
    pub caller: Option<String>,
    pub reason: Option<Reason>,
    /// When any replica retires the old key, unless CompleteRotation does first.
    pub retire_after: SystemTime,
    /// Cancelled in its overlap: consumers went back to the old key (now `credential`), and
    /// the new one (now `retiring`) stays attached until the overlap ends, for consumers that
    /// read it just before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// What a client's Vault key holds: the secret Auth0 accepts, the next one during a staged
/// rotation, and the one before for a while after a rotation (Auth0's propagation window, and
/// consumers that read before the change reached them).
#[derive(Debug, Clone)]
pub struct KeySecrets {
    pub current: SecretString,
    pub next: Option<SecretString>,
    pub previous: Option<PreviousSecret>,
}

#[derive(Debug, Clone)]
pub struct PreviousSecret {
    pub secret: SecretString,
    /// A later write of the key drops it after this.
    pub expires_at: SystemTime,
}

impl KeySecrets {
    /// Only `current`.
    pub fn new(current: SecretString) -> Self {
        Self {
            current,
            next: None,
            previous: None,
        }
    }

    /// `new` replaces the secret in `before` (if any), which is kept as the previous one for
    /// `keep`. Any staged secret is dropped.
    pub fn replaced(before: Option<&Self>, new: SecretString, keep: Duration) -> Self {
        let now = SystemTime::now();
        let previous = before.and_then(|b| {
            if b.current.expose_secret() == new.expose_secret() {
                b.previous_unexpired(now)
            } else {
                Some(PreviousSecret {
                    secret: b.current.clone(),
                    expires_at: now + keep,
                })
            }
        });
        Self {
            current: new,
            next: None,
            previous,
        }
    }

    /// The same secret with `next` staged beside it (or none); an expired previous dropped.
    pub fn with_next(&self, next: Option<SecretString>) -> Self {
        Self {
            current: self.current.clone(),
            next,
            previous: self.previous_unexpired(SystemTime::now()),
        }
    }

    fn previous_unexpired(&self, now: SystemTime) -> Option<PreviousSecret> {
        self.previous.clone().filter(|p| p.expires_at > now)
    }

    /// Whether `secret` is the current one.
    pub fn holds(&self, secret: &SecretString) -> bool {
        self.current.expose_secret() == secret.expose_secret()
    }

    /// Whether `secret` is the staged one.
    pub fn stages(&self, secret: &SecretString) -> bool {
        self.next
            .as_ref()
            .is_some_and(|n| n.expose_secret() == secret.expose_secret())
    }

    /// Same current and next secrets (what a retried write checks it finds).
    pub fn same_as(&self, other: &Self) -> bool {
        let next = |k: &Self| k.next.as_ref().map(|n| n.expose_secret().to_owned());
        self.holds(&other.current) && next(self) == next(other)
    }
}

/// A key credential as a client's Vault key holds it: what a consumer signs with (Private Key
/// JWT) or presents (mTLS).
#[derive(Clone)]
pub struct KeyEntry {
    /// PKCS#8 PEM.
    pub private_key: SecretString,
    /// Auth0's `kid` of the key (the certificate's `thumbprint_sha256` for mTLS).
    pub key_id: String,
    pub credential_id: CredentialId,
    /// Private Key JWT: the algorithm the credential was registered with.
    pub algorithm: Option<KeyAlgorithm>,
    /// mTLS: the self-signed certificate (PEM) Auth0 holds.
    pub certificate: Option<String>,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("key_id", &self.key_id)
            .field("credential_id", &self.credential_id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// What the Vault key of a client that authenticates with a key or a certificate holds.
#[derive(Debug, Clone, Default)]
pub struct StoredKey {
    /// The key consumers use; `None` before the service's first rotation of a client whose
    /// keys were made elsewhere.
    pub current: Option<KeyEntry>,
    /// A rotation's new private key, written before Auth0 knows its public key.
    pub next: Option<SecretString>,
    /// The key replaced, until the overlap ends and its credential is retired.
    pub previous: Option<KeyEntry>,
}

impl StoredKey {
    /// Same current, next and previous private keys (what a retried write checks it finds).
    pub fn same_as(&self, other: &Self) -> bool {
        let current = |k: &Self| {
            k.current
                .as_ref()
                .map(|e| e.private_key.expose_secret().to_owned())
        };
        let next = |k: &Self| k.next.as_ref().map(|n| n.expose_secret().to_owned());
        let previous = |k: &Self| {
            k.previous
                .as_ref()
                .map(|e| e.private_key.expose_secret().to_owned())
        };
        current(self) == current(other)
            && next(self) == next(other)
            && previous(self) == previous(other)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    fn previous(key: &KeySecrets) -> Option<&str> {
        key.previous.as_ref().map(|p| p.secret.expose_secret())
    }

    #[test]
    fn the_previous_secret_is_kept_for_its_time_then_dropped_by_the_next_write() {
        let keep = Duration::from_secs(600);
        let first = KeySecrets::new(secret("one"));
        let second = KeySecrets::replaced(Some(&first), secret("two"), keep);
        assert_eq!(previous(&second), Some("one"));
        let expires = second.previous.as_ref().unwrap().expires_at;
        assert!(expires > SystemTime::now() + Duration::from_secs(590));

        // Staging keeps an unexpired previous secret beside the next one.
        let staged = second.with_next(Some(secret("three")));
        assert_eq!(previous(&staged), Some("one"));
        assert!(staged.stages(&secret("three")) && staged.holds(&secret("two")));

        // Once expired, the next write drops it.
        let mut expired = staged.clone();
        expired.previous.as_mut().unwrap().expires_at = SystemTime::now() - Duration::from_secs(1);
        assert_eq!(previous(&expired.with_next(None)), None);
        let healed = KeySecrets::replaced(Some(&expired), secret("two"), keep);
        assert_eq!(previous(&healed), None, "same secret: nothing replaced");

        // Promotion: the staged secret becomes current, the current one previous.
        let promoted = KeySecrets::replaced(Some(&staged), secret("three"), keep);
        assert_eq!(previous(&promoted), Some("two"));
        assert!(promoted.next.is_none());
    }
}
