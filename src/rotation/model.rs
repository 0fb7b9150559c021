//! Validated request values and the rotation record. Parsing happens here, once: the rest of the
//! service only sees values that are known to be safe to send to Auth0 and Vault.

use std::{fmt, time::SystemTime};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{audit::Origin, auth0::Client};

/// An Auth0 client id: 1 to 64 characters of `[A-Za-z0-9_]`. Real ids are 32 alphanumerics or
/// `tpc_`-prefixed; the wider pattern keeps future formats working while ruling out anything
/// that could change the meaning of a URL or Vault path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl TryFrom<String> for ClientId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, ValidationError> {
        Self::parse(&s)
    }
}

impl From<ClientId> for String {
    fn from(id: ClientId) -> String {
        id.0
    }
}

pub const CLIENT_ID_MAX: usize = 64;
pub const REASON_MAX: usize = 256;
pub const IDEMPOTENCY_KEY_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("client_id is required")]
    ClientIdMissing,
    #[error("client_id must be at most {CLIENT_ID_MAX} characters")]
    ClientIdTooLong,
    #[error("client_id may contain only letters A-Z and a-z, digits and underscores")]
    ClientIdCharacters,
    #[error("reason must be at most {REASON_MAX} characters")]
    ReasonTooLong,
    #[error("reason must not contain control characters")]
    ReasonControl,
    #[error(
        "idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX} characters of letters, digits, '.', '_', ':' and '-'"
    )]
    IdempotencyKey,
    #[error("idempotency_key was already used for another client")]
    IdempotencyKeyReused,
}

impl ClientId {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::ClientIdMissing);
        }
        if raw.chars().count() > CLIENT_ID_MAX {
            return Err(ValidationError::ClientIdTooLong);
        }
        if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ValidationError::ClientIdCharacters);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a rotation was asked for: at most 256 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason(String);

impl Reason {
    /// An empty reason is no reason.
    pub fn parse(raw: &str) -> Result<Option<Self>, ValidationError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.chars().count() > REASON_MAX {
            return Err(ValidationError::ReasonTooLong);
        }
        if raw.chars().any(char::is_control) {
            return Err(ValidationError::ReasonControl);
        }
        Ok(Some(Self(raw.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A caller's key that makes retries of one request safe: 1 to 128 characters of
/// `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// An empty key is no key.
    pub fn parse(raw: &str) -> Result<Option<Self>, ValidationError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let ok = raw.len() <= IDEMPOTENCY_KEY_MAX
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| Some(Self(raw.to_owned())))
            .ok_or(ValidationError::IdempotencyKey)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One validated RotateSecret request.
#[derive(Debug, Clone)]
pub struct RotateCommand {
    pub client_id: ClientId,
    pub reason: Option<Reason>,
    pub idempotency_key: Option<IdempotencyKey>,
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
            origin: Origin::default(),
        })
    }
}

/// Where a client's secret lives inside the KV mount. `{client_id}` is required so that no two
/// clients can ever share a key; `{domain}` is filled in once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    template: String,
}

impl PathTemplate {
    pub fn parse(template: &str, domain: &str) -> Result<Self, String> {
        let filled = template.replace("{domain}", domain);
        if !filled.contains("{client_id}") {
            return Err("it must contain {client_id}, or every client would share one key".into());
        }
        let probe = filled.replace("{client_id}", "x");
        if probe.contains(['{', '}']) {
            return Err("the only placeholders are {client_id} and {domain}".into());
        }
        if !probe
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        {
            return Err("use only letters, digits, '-', '_', '.' and '/'".into());
        }
        if probe
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(
                "segments must be non-empty, not '.' or '..', without leading or trailing '/'"
                    .into(),
            );
        }
        Ok(Self { template: filled })
    }

    pub fn render(&self, client_id: &ClientId) -> String {
        self.template.replace("{client_id}", client_id.as_str())
    }
}

/// What Auth0 handed back from a rotation: the client's metadata and its new secret.
pub struct IssuedSecret {
    pub client: Client,
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

/// Rotation facts kept next to the secret, in the KV key's custom_metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationMetadata {
    pub rotation_id: Uuid,
    pub rotated_at: SystemTime,
    pub reason: Option<Reason>,
    /// The secret was read back from Auth0 by recovery, not taken from rotate-secret's answer.
    pub recovered: bool,
}

/// A KV v2 version holding a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    pub mount: String,
    pub path: String,
    pub version: u64,
}

/// A completed rotation, as the caller is told about it. No secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rotation {
    pub client: Client,
    pub metadata: RotationMetadata,
    pub stored: StoredSecret,
}

/// What the service knows about a client (GetRotationStatus).
#[derive(Debug, Clone, Default)]
pub struct RotationStatus {
    /// The last rotation stored in Vault: its metadata and where it is.
    pub last: Option<(RotationMetadata, StoredSecret)>,
    pub open_intent: Option<Intent>,
    pub lease_active: bool,
}

/// Per-client coordination record, kept in Vault and only ever written with check-and-set. Its
/// KV version is the fencing value: every change bumps it, so a holder whose lease was taken
/// over can no longer write.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientState {
    pub lease: Option<Lease>,
    pub intent: Option<Intent>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        for ok in [
            "aNXX5MSsNYV1Xn342GzeVF9hqOzbnQrS",
            "tpc_rhQfCQohbSxytKPKF987fE",
            "a",
            &"x".repeat(64),
        ] {
            assert!(ClientId::parse(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("", ValidationError::ClientIdMissing),
            (&"x".repeat(65), ValidationError::ClientIdTooLong),
            ("../x", ValidationError::ClientIdCharacters),
            ("a/b", ValidationError::ClientIdCharacters),
            ("%2e%2e", ValidationError::ClientIdCharacters),
            ("clïent", ValidationError::ClientIdCharacters),
            ("a b", ValidationError::ClientIdCharacters),
            ("a\n", ValidationError::ClientIdCharacters),
            ("a?x=1", ValidationError::ClientIdCharacters),
        ];
        for (raw, want) in cases {
            assert_eq!(ClientId::parse(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(Reason::parse(""), Ok(None));
        assert_eq!(
            Reason::parse("quarterly rotation")
                .unwrap()
                .unwrap()
                .as_str(),
            "quarterly rotation"
        );
        assert!(
            Reason::parse(&"é".repeat(256)).is_ok(),
            "counted in characters"
        );
        assert_eq!(
            Reason::parse(&"r".repeat(257)),
            Err(ValidationError::ReasonTooLong)
        );
        assert_eq!(
            Reason::parse("a\u{7}b"),
            Err(ValidationError::ReasonControl)
        );
        assert_eq!(Reason::parse("a\nb"), Err(ValidationError::ReasonControl));
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(IdempotencyKey::parse(""), Ok(None));
        for ok in ["a", "deploy-42:retry.1_x", &"k".repeat(128)] {
            assert!(IdempotencyKey::parse(ok).unwrap().is_some(), "{ok}");
        }
        for bad in [&"k".repeat(129), "a/b", "a b", "ключ", "a\n"] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(ValidationError::IdempotencyKey),
                "{bad}"
            );
        }
    }

    #[test]
    fn path_templates() {
        let id = ClientId::parse("abc").unwrap();
        let t = PathTemplate::parse("auth0/{domain}/{client_id}", "acme.auth0.com").unwrap();
        assert_eq!(t.render(&id), "auth0/acme.auth0.com/abc");
        for bad in [
            "auth0/shared",
            "/auth0/{client_id}",
            "auth0/{client_id}/",
            "auth0//{client_id}",
            "auth0/../{client_id}",
            "auth0/{tenant}/{client_id}",
            "auth0/{client_id}?x",
        ] {
            assert!(PathTemplate::parse(bad, "d").is_err(), "{bad}");
        }
    }
}

/// Request validation against arbitrary input: never a panic, never an id that could change
/// the meaning of a URL or a Vault path.
#[cfg(test)]
mod hostile {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn only_safe_client_ids_are_accepted(raw in "\\PC{0,80}|[A-Za-z0-9_]{0,70}|.{0,200}") {
            if let Ok(id) = ClientId::parse(&raw) {
                prop_assert!((1..=64).contains(&id.as_str().len()));
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            }
        }

        #[test]
        fn every_well_formed_id_is_accepted(raw in "[A-Za-z0-9_]{1,64}") {
            let id = ClientId::parse(&raw).unwrap();
            prop_assert_eq!(id.as_str(), raw.as_str());
        }

        #[test]
        fn reasons_and_keys_are_bounded(raw in "\\PC{0,300}|.{0,300}") {
            if let Ok(Some(reason)) = Reason::parse(&raw) {
                prop_assert!(reason.as_str().chars().count() <= REASON_MAX);
                prop_assert!(!reason.as_str().chars().any(char::is_control));
            }
            if let Ok(Some(key)) = IdempotencyKey::parse(&raw) {
                prop_assert!(key.as_str().len() <= IDEMPOTENCY_KEY_MAX);
                prop_assert!(!key.as_str().contains('/'));
            }
        }

        #[test]
        fn rendered_paths_stay_inside_the_template(raw in "[A-Za-z0-9_]{1,64}") {
            let template = PathTemplate::parse("auth0/{domain}/{client_id}", "acme.auth0.com").unwrap();
            let path = template.render(&ClientId::parse(&raw).unwrap());
            prop_assert_eq!(path, format!("auth0/acme.auth0.com/{raw}"));
        }
    }
}
