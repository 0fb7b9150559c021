//! Validated request values and the rotation record. Parsing happens here, once: the rest of the
//! service only sees values that are known to be safe to send to Auth0 and Vault.

use std::{fmt, time::SystemTime};

use secrecy::SecretString;
use uuid::Uuid;

use crate::auth0::Client;

/// An Auth0 client id: 1 to 64 characters of `[A-Za-z0-9_]`. Real ids are 32 alphanumerics or
/// `tpc_`-prefixed; the wider pattern keeps future formats working while ruling out anything
/// that could change the meaning of a URL or Vault path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

pub const CLIENT_ID_MAX: usize = 64;
pub const REASON_MAX: usize = 256;

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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// One validated RotateSecret request.
#[derive(Debug, Clone)]
pub struct RotateCommand {
    pub client_id: ClientId,
    pub reason: Option<Reason>,
}

impl RotateCommand {
    pub fn parse(client_id: &str, reason: &str) -> Result<Self, ValidationError> {
        Ok(Self {
            client_id: ClientId::parse(client_id)?,
            reason: Reason::parse(reason)?,
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
#[derive(Debug, Clone)]
pub struct RotationMetadata {
    pub rotation_id: Uuid,
    pub rotated_at: SystemTime,
    pub reason: Option<Reason>,
}

/// A KV v2 version holding a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub mount: String,
    pub path: String,
    pub version: u64,
}

/// A completed rotation, as the caller is told about it. No secret.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub client: Client,
    pub metadata: RotationMetadata,
    pub stored: StoredSecret,
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
