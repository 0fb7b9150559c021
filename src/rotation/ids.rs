//! Validated ids and request values, one `parse` constructor each. Parsing happens here, once,
//! for requests and for records read back from Vault alike: the rest of the service only sees
//! values that are known to be safe to send to Auth0 and Vault.

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// Only a stored record can hold an empty reason: a request's empty reason is no reason.
    #[error("a stored reason must not be empty")]
    ReasonEmpty,
    #[error(
        "idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX} characters of letters, digits, '.', '_', ':' and '-'"
    )]
    IdempotencyKey,
    #[error("idempotency_key was already used for another client")]
    IdempotencyKeyReused,
    #[error(
        "distribute_for applies to a staged rotation, or to a client that authenticates with a key or a certificate; this client has a secret"
    )]
    DistributeForImmediate,
    #[error("distribute_for must be at least 1s and at most {max}")]
    DistributeForRange { max: String },
    #[error("distribute_for must not be negative")]
    DistributeForNegative,
    #[error("strategy must be ROTATION_STRATEGY_IMMEDIATE or ROTATION_STRATEGY_STAGED")]
    Strategy,
    #[error("rotation_id must be a UUID")]
    RotationId,
    #[error("page_token is not one this service answered; start again without it")]
    PageToken,
    #[error("a credential id is cred_ followed by 1 to 64 letters and digits")]
    CredentialId,
    #[error("page_size must not be negative")]
    PageSize,
    #[error("selector holds a pattern that is not a valid glob")]
    Selector,
    #[error("a batch names or selects at most 1000 clients")]
    BatchTooLarge,
    #[error("set either client_ids or selector")]
    BatchClients,
    #[error("client_ids[{0}] is not a client id: letters, digits and underscores, 1 to 64")]
    BatchClientId(usize),
    #[error("max_concurrency must be from 0 to 32")]
    BatchConcurrency,
    #[error(
        "idempotency_key_prefix must be at most 64 characters of letters, digits, '.', '_', ':' and '-'"
    )]
    BatchKeyPrefix,
}

/// An idempotency key as its caller owns it: the same string sent by two callers is two keys,
/// so no caller can learn of, replay or block another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedKey {
    /// The caller's typed identity.
    pub caller: String,
    pub key: IdempotencyKey,
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
#[serde(try_from = "String", into = "String")]
pub struct Reason(String);

impl TryFrom<String> for Reason {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, ValidationError> {
        Self::parse(&s)?.ok_or(ValidationError::ReasonEmpty)
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        r.0
    }
}

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
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl TryFrom<String> for IdempotencyKey {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, ValidationError> {
        Self::parse(&s)?.ok_or(ValidationError::IdempotencyKey)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> String {
        k.0
    }
}

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

/// A duration as it was configured: its value, and the spelling it was given in, which is how
/// it is printed back ("90d" and "24h", not humantime's "2months 29days 7h 41m 24s" and "1day").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spelled {
    value: std::time::Duration,
    spelling: String,
}

impl Spelled {
    /// `text` read as a duration (humantime's units: 90d, 12h, 30m, 500ms).
    pub fn parse(text: &str) -> Result<Self, humantime::DurationError> {
        Ok(Self {
            value: humantime::parse_duration(text)?,
            spelling: text.trim().to_owned(),
        })
    }

    /// A duration nobody spelled (a test's, a computed one): printed the way humantime does.
    pub fn of(value: std::time::Duration) -> Self {
        Self {
            value,
            spelling: humantime::format_duration(value).to_string(),
        }
    }

    pub fn get(&self) -> std::time::Duration {
        self.value
    }
}

impl fmt::Display for Spelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spelling)
    }
}

/// An Auth0 credential's id (`cred_` and letters and digits), checked before it goes into a
/// URL or a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CredentialId(String);

impl CredentialId {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let rest = raw.strip_prefix("cred_").unwrap_or_default();
        match !rest.is_empty()
            && rest.len() <= 64
            && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            true => Ok(Self(raw.to_owned())),
            false => Err(ValidationError::CredentialId),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CredentialId {
    type Error = ValidationError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<CredentialId> for String {
    fn from(id: CredentialId) -> Self {
        id.0
    }
}

impl std::fmt::Display for CredentialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The members of `client_authentication_methods`: the service rotates the first two and keeps
/// the third as it is (issuing CA-signed certificates belongs to a CA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Client assertions signed with a private key; credentials of type `public_key`.
    PrivateKeyJwt,
    /// Self-signed mTLS certificates; credentials of type `x509_cert`.
    SelfSignedTls,
    /// CA-signed mTLS certificates, matched by subject DN; credentials of type
    /// `cert_subject_dn`.
    CaSignedTls,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 3] = [Self::PrivateKeyJwt, Self::SelfSignedTls, Self::CaSignedTls];

    /// The member of `client_authentication_methods`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::SelfSignedTls => "self_signed_tls_client_auth",
            Self::CaSignedTls => "tls_client_auth",
        }
    }

    /// The `credential_type` its credentials have.
    pub fn credential_type(self) -> &'static str {
        match self {
            Self::PrivateKeyJwt => "public_key",
            Self::SelfSignedTls => "x509_cert",
            Self::CaSignedTls => "cert_subject_dn",
        }
    }
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
    fn records_read_back_are_validated_too() {
        let read = |json: &str| serde_json::from_str::<(ClientId, Reason, IdempotencyKey)>(json);
        assert!(read(r#"["abc", "quarterly", "deploy-1"]"#).is_ok());
        for bad in [
            r#"["a/b", "quarterly", "deploy-1"]"#,
            r#"["abc", "", "deploy-1"]"#,
            r#"["abc", "a\nb", "deploy-1"]"#,
            r#"["abc", "quarterly", ""]"#,
            r#"["abc", "quarterly", "../k"]"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
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
