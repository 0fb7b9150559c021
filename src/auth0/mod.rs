//! Auth0 Management API adapter, implementing the protocol's [`SecretIssuer`]:
//! `POST /api/v2/clients/{id}/rotate-secret`, `PATCH /api/v2/clients/{id}` (a staged
//! rotation's secret) and `GET /api/v2/clients/{id}`, with a token by
//! client credentials (cached, single-flight; `token.rs`). Failures become the protocol's
//! [`IssuerError`] in `errors.rs`; Auth0's bodies are read for their errorCode and never passed
//! on.

mod credentials;
mod errors;
mod governor;
mod list;
mod settings;
mod token;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tracing::{debug, warn};

pub use credentials::CREDENTIAL_SCOPES;
pub use governor::{Budget, Limit, Limits};
pub use settings::{CredentialSource, Credentials, Settings};
pub use token::TokenInfo;

use crate::rotation::{
    Client, ClientId, ClientPage, IssuedSecret, IssuerError, OwnCredentialStore, PageCursor,
    SecretIssuer, Transport,
};
use errors::{ambiguous, api_error, reached, retry_after, transport_error};
use governor::{Governor, RateGroup};
use token::TokenSource;

/// Everything but RFC 3986 unreserved characters is encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How often one request is sent again after a 429, at most.
const MAX_429_RETRIES: u32 = 3;

/// Scope the rotate-secret route requires.
pub const ROTATE_SCOPE: &str = "update:client_keys";
/// Scope the client list requires (ListClients).
pub const LIST_SCOPE: &str = "read:clients";

/// Scope that reveals a client's secret on GET: what recovery needs.
pub const READ_KEYS_SCOPE: &str = "read:client_keys";

/// The Management API client. Cheap to clone: clones share the connection pool and the token.
#[derive(Clone)]
pub struct Auth0Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    /// The tenant's domain: client assertions are addressed to `https://{domain}/`.
    domain: String,
    tokens: TokenSource,
    /// The tenant's Management API rate limits, shared by every request of this replica.
    governor: Governor,
    /// Auth0 refused to list `client_authentication_methods` to this grant once: later lists
    /// do not ask for it.
    methods_unlisted: AtomicBool,
}

enum SendError {
    /// No token, or no budget within the caller's deadline: the request was not sent.
    Token(IssuerError),
    Transport(reqwest::Error),
}

/// Only the secret of a rotate-secret answer; the rest is read separately into [`Client`].
#[derive(Deserialize)]
struct RotateSecretBody {
    client_secret: Option<SecretString>,
}

impl Auth0Client {
    /// Fails on an unreadable AUTH0_CACERT bundle; the message names the file, nothing else.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // Never follow a redirect: it would carry the token elsewhere, and checking every
            // answer for one costs a URL parse per request.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("secret-rotator/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_cert {
            let unreadable = || {
                format!(
                    "AUTH0_CACERT {} is not a PEM certificate bundle",
                    path.display()
                )
            };
            let pem = std::fs::read(path).map_err(|_| unreadable())?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| unreadable())?;
            if certs.is_empty() {
                return Err(unreadable());
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: settings.base_url.clone(),
                domain: settings.domain.clone(),
                tokens: TokenSource::new(&settings.credentials, &settings.domain),
                governor: Governor::new(settings.budget),
                methods_unlisted: AtomicBool::new(false),
            }),
        })
    }

    /// Where the service's own credential is read from when it is kept in Vault
    /// (`AUTH0_CREDENTIALS_VAULT_PATH`).
    pub fn read_own_credential_from(&self, store: Arc<dyn OwnCredentialStore>) {
        self.inner.tokens.read_from(store);
    }

    /// The service's own credential as its source holds it now: start-up checks it can be
    /// read, so that a bad source stops the service at once.
    pub async fn own_credential(&self) -> Result<(), IssuerError> {
        match self.inner.tokens.renewable() {
            true => self.inner.tokens.presented().await.map(|_| ()),
            false => Ok(()),
        }
    }

    /// Whether a Management API token is at hand: the cached one while it is valid, else a
    /// new one (the periodic readiness check; it does not spend Auth0's token quota).
    pub async fn ready(&self) -> Result<(), IssuerError> {
        self.inner
            .tokens
            .token(&self.inner.http, &self.url(&["oauth", "token"]))
            .await
            .map(|_| ())
    }

    /// Obtains a token now (start-up check) and reports what it grants.
    pub async fn check(&self) -> Result<TokenInfo, IssuerError> {
        self.inner
            .tokens
            .check(&self.inner.http, &self.url(&["oauth", "token"]))
            .await
    }

    async fn rotate(&self, client_id: &ClientId) -> Result<IssuedSecret, IssuerError> {
        let url = self.url(&["api", "v2", "clients", client_id.as_str(), "rotate-secret"]);
        let response = self
            .send(Method::POST, &url, "rotate-secret")
            .await
            .map_err(|e| match e {
                SendError::Token(e) => e,
                // Sent, perhaps carried out: only a failed connect proves it was not.
                SendError::Transport(e) => ambiguous(transport_error(e)),
            })?;
        if !response.status().is_success() {
            return Err(ambiguous(api_error(response, ROTATE_SCOPE, true).await));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|_| IssuerError::OutcomeUnknown(Transport::CutOff))?;
        // A 200 without a readable secret: Auth0 rotated and the secret is lost to us.
        parse_rotation(&bytes).map_err(|_| IssuerError::OutcomeUnknown(Transport::Unreadable))
    }

    /// `PATCH /api/v2/clients/{id}` with `{"client_secret": ...}` (needs update:client_keys):
    /// what Auth0 holds afterwards, from the answer or, when the answer leaves the secret out,
    /// from a GET.
    async fn patch_secret(
        &self,
        client_id: &ClientId,
        secret: &SecretString,
    ) -> Result<IssuedSecret, IssuerError> {
        let url = self.url(&["api", "v2", "clients", client_id.as_str()]);
        // The body holds the secret only for as long as the request is in flight.
        let body =
            serde_json::to_vec(&serde_json::json!({ "client_secret": secret.expose_secret() }))
                .map_err(|_| IssuerError::Protocol("the PATCH body could not be built".into()))?;
        let response = self
            .send_with(Method::PATCH, &url, "patch-client", Some(body))
            .await
            .map_err(|e| match e {
                SendError::Token(e) => e,
                SendError::Transport(e) => ambiguous(transport_error(e)),
            })?;
        if !response.status().is_success() {
            return Err(ambiguous(api_error(response, ROTATE_SCOPE, true).await));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|_| IssuerError::OutcomeUnknown(Transport::CutOff))?;
        match parse_rotation(&bytes) {
            Ok(issued) => Ok(issued),
            Err(_) => self.read(client_id).await,
        }
    }

    /// `GET /api/v2/clients/{id}`: the whole client, secret included (needs read:client_keys).
    async fn read(&self, client_id: &ClientId) -> Result<IssuedSecret, IssuerError> {
        let bytes = self.get_client(client_id).await?;
        // Without read:client_keys Auth0 silently leaves the secret out.
        parse_rotation(&bytes).map_err(|_| IssuerError::MissingScope(READ_KEYS_SCOPE))
    }

    /// `GET /api/v2/clients/{id}`: the answer's bytes.
    async fn get_client(&self, client_id: &ClientId) -> Result<bytes::Bytes, IssuerError> {
        let url = self.url(&["api", "v2", "clients", client_id.as_str()]);
        let response = self.get(&url, "get-client", READ_KEYS_SCOPE).await?;
        let at = reached(response.url(), None);
        response
            .bytes()
            .await
            .map_err(|_| IssuerError::Unavailable {
                how: Transport::CutOff,
                at,
            })
    }

    /// A Management API read: the response when it succeeded. A read changes nothing at
    /// Auth0, so no failure of it hides an outcome; a refusal names `scope`.
    async fn get(
        &self,
        url: &Url,
        operation: &'static str,
        scope: &'static str,
    ) -> Result<Response, IssuerError> {
        let response = self
            .send(Method::GET, url, operation)
            .await
            .map_err(|e| match e {
                SendError::Token(e) => e,
                SendError::Transport(e) => transport_error(e),
            })?;
        if !response.status().is_success() {
            return Err(api_error(response, scope, false).await);
        }
        Ok(response)
    }

    /// Sends a Management API request with the current token, when the tenant's rate limit
    /// for its endpoint group has room for it (`governor/`): it waits for the budget within the caller's deadline,
    /// and is refused with RateLimited (nothing sent) when the wait would pass it. A 401 means
    /// Auth0 did nothing: the token is renewed once and the request sent again; so does a 429,
    /// which is sent again after Retry-After when the deadline allows.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        operation: &'static str,
    ) -> Result<Response, SendError> {
        self.send_with(method, url, operation, None).await
    }

    /// [`Self::send`] with a JSON body.
    async fn send_with(
        &self,
        method: Method,
        url: &Url,
        operation: &'static str,
        json: Option<Vec<u8>>,
    ) -> Result<Response, SendError> {
        let work = crate::work::current();
        let group = RateGroup::of(&method, operation);
        let mut renewed = false;
        // Auth0 answered 429 this many times: another tool spends the tenant's budget.
        let mut refused = 0;
        loop {
            let permit = self
                .inner
                .governor
                .acquire(group, work.priority, work.deadline)
                .await
                .map_err(|wait| {
                    crate::metrics::rate_limited(crate::metrics::RateLimitedBy::Auth0Budget);
                    SendError::Token(IssuerError::RateLimited {
                        retry_after: Some(wait),
                    })
                })?;
            let token = self
                .inner
                .tokens
                .token(&self.inner.http, &self.url(&["oauth", "token"]))
                .await
                .map_err(SendError::Token)?;
            let mut request = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret());
            if let Some(json) = &json {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json.clone());
            }
            let sent = crate::upstream::send("auth0", operation, request).await;
            let response = sent.map_err(SendError::Transport)?;
            permit.answered(response.status().as_u16(), response.headers());
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                crate::metrics::rate_limited(crate::metrics::RateLimitedBy::Auth0);
                // Auth0 did nothing: once the governor's pause is over, the same request is
                // sent again, if the caller can wait that long.
                let wait = retry_after(response.headers()).unwrap_or(Duration::from_secs(1));
                if refused < MAX_429_RETRIES
                    && work
                        .deadline
                        .is_none_or(|d| tokio::time::Instant::now() + wait < d)
                {
                    refused += 1;
                    continue;
                }
                return Ok(response);
            }
            if response.status() == StatusCode::UNAUTHORIZED
                && !renewed
                && self.inner.tokens.renewable()
            {
                warn!("Management API token rejected; renewing it");
                self.inner.tokens.forget().await;
                renewed = true;
                continue;
            }
            return Ok(response);
        }
    }

    /// Joins percent-encoded segments onto the base URL, keeping any base path (proxies).
    fn url(&self, segments: &[&str]) -> Url {
        let base = &self.inner.base;
        let mut path = base.path().trim_end_matches('/').to_owned();
        for segment in segments {
            path.push('/');
            path.extend(utf8_percent_encode(segment, SEGMENT));
        }
        let mut url = base.clone();
        url.set_path(&path);
        url
    }
}

impl SecretIssuer for Auth0Client {
    async fn rotate_secret(&self, client_id: &ClientId) -> Result<IssuedSecret, IssuerError> {
        self.rotate(client_id).await
    }

    async fn set_secret(
        &self,
        client_id: &ClientId,
        secret: &SecretString,
    ) -> Result<IssuedSecret, IssuerError> {
        self.patch_secret(client_id, secret).await
    }

    async fn read_secret(&self, client_id: &ClientId) -> Result<IssuedSecret, IssuerError> {
        self.read(client_id).await
    }

    async fn list_clients(
        &self,
        from: Option<&PageCursor>,
        size: usize,
    ) -> Result<ClientPage, IssuerError> {
        self.list(from, size).await
    }

    async fn read_client(&self, client_id: &ClientId) -> Result<Client, IssuerError> {
        let bytes = self.get_client(client_id).await?;
        // Cannot fail on content: every member of `Client` is lenient.
        Ok(serde_json::from_slice(&bytes).unwrap_or_default())
    }
}

/// Reads a rotate-secret (or GET client) answer: the secret, and the tolerant Client model.
/// Public for the fuzz target in `fuzz/`.
pub fn parse_rotation(bytes: &[u8]) -> Result<IssuedSecret, IssuerError> {
    let secret = serde_json::from_slice::<RotateSecretBody>(bytes)
        .ok()
        .and_then(|b| b.client_secret)
        .filter(|s| !s.expose_secret().is_empty())
        .ok_or_else(|| {
            IssuerError::Protocol("the rotate-secret answer has no client_secret".into())
        })?;
    // Cannot fail on content: every member of `Client` is lenient.
    let client = serde_json::from_slice::<Client>(bytes).unwrap_or_default();
    debug!("parsed the rotate-secret answer");
    Ok(IssuedSecret {
        client: Box::new(client),
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Auth0Client {
        Auth0Client::new(&Settings {
            domain: "acme.auth0.com".into(),
            base_url: base.parse().unwrap(),
            ca_cert: None,
            credentials: Credentials::StaticToken("t".into()),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            budget: Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_segments() {
        let c = client("https://proxy.example/auth0/");
        let url = c.url(&["api", "v2", "clients", "a/b?c", "rotate-secret"]);
        assert_eq!(
            url.as_str(),
            "https://proxy.example/auth0/api/v2/clients/a%2Fb%3Fc/rotate-secret"
        );
        let url = client("https://acme.auth0.com").url(&["oauth", "token"]);
        assert_eq!(url.as_str(), "https://acme.auth0.com/oauth/token");
    }

    #[test]
    fn rotation_answers_need_a_secret_but_tolerate_the_rest() {
        let ok =
            parse_rotation(br#"{"client_id":"abc","client_secret":"s3cr3t","name":7}"#).unwrap();
        assert_eq!(ok.secret.expose_secret(), "s3cr3t");
        assert_eq!(ok.client.client_id.0.as_deref(), Some("abc"));
        assert!(!format!("{ok:?}").contains("s3cr3t"));
        for bad in [
            &br#"{"client_id":"abc"}"#[..],
            br#"{"client_secret":""}"#,
            b"not json",
            b"[]",
        ] {
            assert!(matches!(parse_rotation(bad), Err(IssuerError::Protocol(_))));
        }
    }

    #[tokio::test]
    async fn an_unreachable_tenant_is_named_with_the_cause() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = client(&format!("http://127.0.0.1:{port}/base/"));
        let id = ClientId::parse("abcdefABCDEF0123456789").unwrap();
        let err = c.read_client(&id).await.unwrap_err();
        assert!(matches!(
            err,
            IssuerError::Unavailable {
                how: Transport::NotSent,
                ..
            }
        ));
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "Auth0 at http://127.0.0.1:{port} is unavailable: connection failed ("
            )),
            "{message}"
        );
        assert!(message.contains("refused"), "{message}");
        assert!(
            !message.contains("/base") && !message.contains(id.as_str()),
            "{message}"
        );
    }
}

/// Hostile input for the answer parser: it must never panic, whatever Auth0 (or something
/// pretending to be it) sends, and must only ever accept a non-empty string secret.
#[cfg(test)]
mod hostile {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::hash_map("[a-z_]{1,24}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// Members of the Client object, so that generated values land on real fields.
    const MEMBERS: &[&str] = &[
        "client_id",
        "name",
        "callbacks",
        "jwt_configuration",
        "signing_keys",
        "addons",
        "refresh_token",
        "client_metadata",
        "mobile",
        "client_authentication_methods",
        "par_request_expiry",
        "token_quota",
        "express_configuration",
        "oidc_logout",
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_rotation(&bytes);
        }

        #[test]
        fn any_shape_of_client_parses_when_the_secret_is_there(
            values in prop::collection::vec(json_value(), MEMBERS.len()),
            // Long enough never to occur by chance in the Debug text.
            secret in "[A-Za-z0-9_-]{24,64}",
        ) {
            let mut doc: Map<String, Value> =
                MEMBERS.iter().map(|m| (*m).to_owned()).zip(values).collect();
            doc.insert("client_secret".into(), Value::String(secret.clone()));
            let issued = parse_rotation(Value::Object(doc).to_string().as_bytes()).unwrap();
            prop_assert_eq!(issued.secret.expose_secret(), secret.as_str());
            let shown = format!("{issued:?}");
            prop_assert!(!shown.contains(&secret));
        }

        #[test]
        fn a_secret_of_the_wrong_type_is_refused(value in json_value()) {
            prop_assume!(!matches!(&value, Value::String(s) if !s.is_empty()));
            let doc = json!({"client_id": "abc", "client_secret": value});
            prop_assert!(parse_rotation(doc.to_string().as_bytes()).is_err());
        }
    }

    #[test]
    fn deep_nesting_and_huge_strings_are_survived() {
        let nested = |member: &str| {
            format!(
                "{{\"client_secret\":\"s\",\"{member}\":{}1{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
        };
        // Deep nesting where the parser skips (addons): survived, the secret is still read.
        let issued = parse_rotation(nested("addons").as_bytes()).unwrap();
        assert_eq!(issued.secret.expose_secret(), "s");
        assert!(issued.client.addons.0.is_empty());
        // Deep nesting where it would recurse: the depth limit stops it (no stack overflow), the
        // metadata is given up and the secret is still read.
        let issued = parse_rotation(nested("name").as_bytes()).unwrap();
        assert_eq!(issued.secret.expose_secret(), "s");
        assert_eq!(issued.client.name.0, None);
        let huge = json!({"client_secret": "s", "name": "n".repeat(4 << 20), "description": 5});
        let issued = parse_rotation(huge.to_string().as_bytes()).unwrap();
        assert_eq!(issued.client.name.0.map(|n| n.len()), Some(4 << 20));
    }
}
