//! How vaultrs's endpoints reach Vault: a `rustify` client (vaultrs's HTTP layer) that sends
//! each request through [`crate::upstream::execute`] on the service's reqwest client, so that
//! every Vault request is timed, traced and carries `traceparent` like an Auth0 request.
//! vaultrs's own `VaultClient` fixes its HTTP client and middleware to concrete types with no
//! place for either, and reads `VAULT_*` variables behind the configuration's back.
//!
//! Failures become [`Failure`]s here; `kv.rs` and `login.rs` say what each means.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use rustify::{
    endpoint::{Endpoint, EndpointResult},
    errors::ClientError,
};
use serde::de::DeserializeOwned;
use tracing::debug;

use super::Settings;

const TOKEN: HeaderName = HeaderName::from_static("x-vault-token");
const NAMESPACE: HeaderName = HeaderName::from_static("x-vault-namespace");
/// What Vault's own clients (and vaultrs) send: Vault refuses some requests without it.
const REQUEST: HeaderName = HeaderName::from_static("x-vault-request");

/// Built once; shared by the KV calls and the logins.
pub(super) struct Transport {
    http: reqwest::Client,
    /// `VAULT_ADDR` without a trailing slash: the base vaultrs's endpoint paths are put on.
    base: String,
    addr: reqwest::Url,
    /// Its path (empty, or a proxy's prefix); the API's version goes after it.
    prefix: String,
    /// Where Vault is (scheme, host and port only), for error messages.
    origin: String,
    namespace: Option<HeaderValue>,
}

/// Why a request got no useful answer.
pub(super) enum Failure {
    /// Vault answered with an error status; `errors` is its `{"errors": [...]}`.
    Refused { code: u16, errors: Vec<String> },
    /// No answer: the connection failed, timed out or was cut off.
    Unreachable(String),
    /// The request could not be built or the answer could not be read.
    Malformed,
}

impl Failure {
    pub(super) fn code(&self) -> Option<u16> {
        match self {
            Failure::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl Transport {
    pub(super) fn new(settings: &Settings) -> Result<Self, String> {
        let invalid = |what: &str| format!("invalid Vault settings: {what}");
        let mut http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            // Never follow a redirect: it would carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("secret-rotator/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_cert {
            let pem = std::fs::read(path).map_err(|_| invalid("VAULT_CACERT cannot be read"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| invalid("VAULT_CACERT is not a PEM bundle"))?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let namespace = match &settings.namespace {
            Some(ns) => Some(HeaderValue::from_str(ns).map_err(|_| invalid("VAULT_NAMESPACE"))?),
            None => None,
        };
        let base = settings.addr.as_str().trim_end_matches('/').to_owned();
        Ok(Self {
            http: http.build().map_err(|_| invalid("HTTP client"))?,
            prefix: settings.addr.path().trim_end_matches('/').to_owned(),
            origin: settings.addr.origin().ascii_serialization(),
            base,
            addr: settings.addr.clone(),
            namespace,
        })
    }

    /// Executes `endpoint` with `token`; `operation` names the request in metrics and spans.
    pub(super) async fn call<E: Endpoint>(
        &self,
        operation: &'static str,
        endpoint: &E,
        token: Option<&HeaderValue>,
    ) -> Result<EndpointResult<E::Response>, Failure> {
        let call = Call {
            transport: self,
            operation,
            token,
        };
        endpoint.exec(&call).await.map_err(|e| self.failure(e))
    }

    fn failure(&self, e: ClientError) -> Failure {
        match e {
            ClientError::ServerResponseError { code, content } => Failure::Refused {
                code,
                errors: content
                    .and_then(|c| serde_json::from_str::<vaultrs::api::EndpointError>(&c).ok())
                    .map(|e| e.errors)
                    .unwrap_or_default(),
            },
            ClientError::RequestError { source, .. } => {
                let cause = match source.downcast_ref::<reqwest::Error>() {
                    Some(e) if e.is_timeout() => "the request timed out".to_owned(),
                    Some(e) => {
                        debug!(error = %e, "Vault request failed");
                        crate::upstream::root_cause(e)
                    }
                    None => "the request failed".to_owned(),
                };
                Failure::Unreachable(format!("{} did not answer: {cause}", self.origin))
            }
            ClientError::ResponseError { .. } => {
                Failure::Unreachable(format!("{} cut its answer off", self.origin))
            }
            // Never formatted with `Debug`: a parse error carries the answer's body, which
            // may hold a secret.
            _ => Failure::Malformed,
        }
    }
}

/// `data` of Vault's answer envelope (vaultrs's [`vaultrs::api::EndpointResult`]), read
/// straight into `T`: secrets go into `SecretString`s without a detour through JSON values.
pub(super) fn data<T: DeserializeOwned, R: DeserializeOwned + Send + Sync>(
    answer: &EndpointResult<R>,
) -> Result<T, Failure> {
    serde_json::from_slice::<vaultrs::api::EndpointResult<T>>(answer.response.body())
        .ok()
        .and_then(|envelope| envelope.data)
        .ok_or(Failure::Malformed)
}

/// One request's view of the transport: rustify's [`rustify::client::Client`].
struct Call<'a> {
    transport: &'a Transport,
    operation: &'static str,
    token: Option<&'a HeaderValue>,
}

#[async_trait::async_trait]
impl rustify::client::Client for Call<'_> {
    fn base(&self) -> &str {
        &self.transport.base
    }

    async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, ClientError> {
        let transport = self.transport;
        let (parts, body) = request.into_parts();
        // vaultrs's paths are relative to the API's version, which its own middleware puts in
        // front of the whole path; here it goes after VAULT_ADDR's own path, if it has one.
        // Built on the parsed VAULT_ADDR rather than parsed again from rustify's URI.
        let path = parts.uri.path();
        let path = path
            .strip_prefix(transport.prefix.as_str())
            .unwrap_or(path)
            .trim_start_matches('/');
        let mut url = transport.addr.clone();
        url.set_path(&format!("{}/v1/{path}", transport.prefix));
        url.set_query(parts.uri.query());
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        *request.body_mut() = Some(body.into());
        let headers = request.headers_mut();
        headers.insert(REQUEST, HeaderValue::from_static("true"));
        if let Some(token) = self.token {
            headers.insert(TOKEN, token.clone());
        }
        if let Some(ns) = &transport.namespace {
            headers.insert(NAMESPACE, ns.clone());
        }
        let response = crate::upstream::execute("vault", self.operation, &transport.http, request)
            .await
            // The URL names the key: not for the log.
            .map_err(|e| ClientError::RequestError {
                source: e.without_url().into(),
                url: String::new(),
                method: String::new(),
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::ResponseError { source: e.into() })?;
        let mut answer = http::Response::new(Vec::from(body));
        *answer.status_mut() = status;
        Ok(answer)
    }
}
