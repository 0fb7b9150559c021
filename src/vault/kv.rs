//! A lean KV v2 client on the service's reqwest stack: the five calls the adapter makes, with
//! the mount's base URL built once. It replaces vaultrs, whose per-call request building,
//! JSON round trips and error logging cost more CPU than the rest of a rotation (see
//! `docs/performance.md`). Vault's own error texts are logged at debug only; callers get the
//! protocol's [`StoreError`].

use std::{collections::HashMap, time::Duration};

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url, header::HeaderValue};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tracing::{debug, warn};

use super::{Settings, login::Auth};
use crate::rotation::{KvVersion, StoreError, Versioned};

pub(super) struct Kv {
    http: reqwest::Client,
    /// Where Vault is (scheme, host and port only), for error messages.
    origin: String,
    /// `{addr}/v1/`
    api: Url,
    /// `{addr}/v1/{mount}/data/` and `.../metadata/`
    data: Url,
    metadata: Url,
    /// The token, kept valid (`login.rs`).
    auth: Auth,
    namespace: Option<HeaderValue>,
}

/// `{"data": {"data": T, "metadata": {"version": n}}}`
#[derive(Deserialize)]
struct ReadAnswer<T> {
    data: ReadData<T>,
}

#[derive(Deserialize)]
struct ReadData<T> {
    data: T,
    metadata: VersionOnly,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

#[derive(Deserialize)]
struct WriteAnswer {
    data: VersionOnly,
}

#[derive(Deserialize)]
struct MetadataAnswer {
    data: CurrentVersion,
}

#[derive(Deserialize)]
struct CurrentVersion {
    current_version: u64,
}

#[derive(Deserialize)]
struct ListAnswer {
    data: Keys,
}

#[derive(Deserialize)]
struct Keys {
    keys: Vec<String>,
}

#[derive(Serialize)]
struct WriteBody<'a, T> {
    options: Cas,
    data: &'a T,
}

#[derive(Serialize)]
struct Cas {
    cas: u64,
}

/// Vault's error body: `{"errors": [...]}`.
#[derive(Deserialize, Default)]
struct Errors {
    #[serde(default)]
    errors: Vec<String>,
}

impl Kv {
    pub(super) fn new(settings: &Settings) -> Result<Self, StoreError> {
        let invalid =
            |what: &str| StoreError::Unexpected(format!("invalid Vault settings: {what}"));
        let mut http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            // Never follow a redirect: it would carry the token elsewhere, and checking every
            // answer for one costs a URL parse per request.
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
        let http = http.build().map_err(|_| invalid("HTTP client"))?;
        let mut api = settings.addr.clone();
        api.set_path(&format!("{}/v1/", api.path().trim_end_matches('/')));
        let mount = |kind: &str| {
            api.join(&format!("{}/{kind}/", settings.mount))
                .map_err(|_| invalid("ROTATOR_VAULT_MOUNT"))
        };
        let auth = Auth::new(&settings.token, http.clone(), api.clone()).map_err(invalid)?;
        let namespace = match &settings.namespace {
            Some(ns) => Some(HeaderValue::from_str(ns).map_err(|_| invalid("VAULT_NAMESPACE"))?),
            None => None,
        };
        Ok(Self {
            data: mount("data")?,
            metadata: mount("metadata")?,
            origin: settings.addr.origin().ascii_serialization(),
            auth,
            api,
            http,
            namespace,
        })
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.namespace {
            Some(ns) => request.header("X-Vault-Namespace", ns.clone()),
            None => request,
        }
    }

    fn url(base: &Url, path: &str) -> Result<Url, StoreError> {
        base.join(path)
            .map_err(|_| StoreError::Unexpected(format!("invalid key path {path}")))
    }

    /// The current data of a key and its version; `None` when the key does not exist (or its
    /// current version was deleted).
    pub(super) async fn read<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let response = self
            .send(
                self.request(Method::GET, Self::url(&self.data, path)?),
                "read",
            )
            .await?;
        let Some(response) = found(response, "a key").await? else {
            return Ok(None);
        };
        let answer: ReadAnswer<T> = json(response, path).await?;
        Ok(Some(Versioned {
            version: KvVersion(answer.data.metadata.version),
            value: answer.data.data,
        }))
    }

    /// Writes `data` with check-and-set against `cas`; returns the new version.
    pub(super) async fn write<T: Serialize>(
        &self,
        path: &str,
        data: &T,
        cas: KvVersion,
        what: &str,
    ) -> Result<KvVersion, StoreError> {
        let body = WriteBody {
            options: Cas { cas: cas.get() },
            data,
        };
        let request = self
            .request(Method::POST, Self::url(&self.data, path)?)
            .json(&body);
        let response = self.send(request, "write").await?;
        let response = succeeded(response, what).await?;
        let answer: WriteAnswer = json(response, path).await?;
        Ok(KvVersion(answer.data.version))
    }

    /// The key's current version; [`KvVersion::NONE`] when it does not exist.
    pub(super) async fn current_version(&self, path: &str) -> Result<KvVersion, StoreError> {
        let url = Self::url(&self.metadata, path)?;
        let response = self
            .send(self.request(Method::GET, url), "metadata")
            .await?;
        match found(response, "the key's metadata").await? {
            None => Ok(KvVersion::NONE),
            Some(response) => {
                let answer: MetadataAnswer = json(response, path).await?;
                Ok(KvVersion(answer.data.current_version))
            }
        }
    }

    /// The keys directly under `dir`; empty when there are none.
    pub(super) async fn list(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let url = Self::url(&self.metadata, &format!("{}/", dir.trim_end_matches('/')))?;
        let list = Method::from_bytes(b"LIST").expect("a valid method");
        let response = self.send(self.request(list, url), "list").await?;
        match found(response, "the ledger").await? {
            None => Ok(Vec::new()),
            Some(response) => Ok(json::<ListAnswer>(response, dir).await?.data.keys),
        }
    }

    /// `POST sys/capabilities-self`: the first of `needs` (an API path and the capabilities
    /// wanted on it) the token lacks; `None` when it has them all.
    pub(super) async fn first_denied(
        &self,
        needs: &[(String, &[&str])],
    ) -> Result<Option<String>, StoreError> {
        let paths: Vec<&str> = needs.iter().map(|(p, _)| p.as_str()).collect();
        let url = Self::url(&self.api, "sys/capabilities-self")?;
        let request = self
            .request(Method::POST, url)
            .json(&serde_json::json!({ "paths": paths }));
        let what = "sys/capabilities-self";
        let response = succeeded(self.send(request, "capabilities").await?, what).await?;
        // Besides one member per path, the answer holds Vault's usual envelope.
        let answer: HashMap<String, serde_json::Value> = json(response, what).await?;
        Ok(needs.iter().find_map(|(path, wanted)| {
            let caps: Vec<String> = answer
                .get(path)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let granted = caps.iter().any(|c| c == "root")
                || wanted.iter().all(|w| caps.iter().any(|c| c == w));
            (!granted).then(|| path.clone())
        }))
    }

    /// Sends a request; a failure names Vault's address and the cause (the request's own
    /// URL is left out: it names the key).
    async fn send(
        &self,
        request: RequestBuilder,
        operation: &'static str,
    ) -> Result<Response, StoreError> {
        let retry = request.try_clone();
        let response = self.send_once(request, operation).await?;
        // A login's token that Vault no longer accepts (revoked, expired): log in again and
        // send once more.
        if response.status() == StatusCode::FORBIDDEN
            && let Some(retry) = retry
            && self.auth.refused().await
        {
            return self.send_once(retry, operation).await;
        }
        Ok(response)
    }

    async fn send_once(
        &self,
        request: RequestBuilder,
        operation: &'static str,
    ) -> Result<Response, StoreError> {
        let request = request.header("X-Vault-Token", self.auth.header().await?);
        crate::upstream::send("vault", operation, request)
            .await
            .map_err(|e| {
                let cause = if e.is_timeout() {
                    "the request timed out".to_owned()
                } else {
                    crate::upstream::root_cause(&e)
                };
                debug!(error = %e.without_url(), operation, "Vault request failed");
                StoreError::Unavailable(format!("{} did not answer: {cause}", self.origin))
            })
    }
}

/// `None` on 404; the response on success; the mapped error otherwise.
async fn found(response: Response, what: &str) -> Result<Option<Response>, StoreError> {
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    succeeded(response, what).await.map(Some)
}

/// The response on success; Vault's refusal mapped to a [`StoreError`] otherwise.
async fn succeeded(response: Response, what: &str) -> Result<Response, StoreError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Errors = response.json().await.unwrap_or_default();
    Err(match status.as_u16() {
        403 => StoreError::PermissionDenied(what.to_owned()),
        400 if body.errors.iter().any(|e| e.contains("check-and-set")) => StoreError::CasMismatch,
        code @ (429 | 500..) => {
            warn!(code, errors = ?body.errors, "Vault error");
            StoreError::Unavailable(format!("HTTP {code}"))
        }
        code => {
            warn!(code, errors = ?body.errors, "Vault error");
            StoreError::Unexpected(format!("HTTP {code} for {what}"))
        }
    })
}

async fn json<T: DeserializeOwned>(response: Response, what: &str) -> Result<T, StoreError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|_| StoreError::Unavailable("the answer was cut off".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| StoreError::Unexpected(format!("malformed answer for {what}")))
}
