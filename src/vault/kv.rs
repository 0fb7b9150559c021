//! The five Vault calls the adapter makes, each a vaultrs endpoint (KV v2 read, write with
//! check-and-set, metadata, list; `sys/capabilities-self`, which vaultrs lacks, is an endpoint
//! of our own on the same rustify types), sent with the service's token and mapped to the
//! protocol's [`StoreError`]. Vault's own error texts are logged; callers get the mapping.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use rustify::endpoint::{Endpoint, EndpointResult};
use rustify_derive::Endpoint;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tracing::warn;
use vaultrs::api::kv2::{
    requests::{
        ListSecretsRequest, ReadSecretMetadataRequest, ReadSecretRequest, SetSecretRequest,
        SetSecretRequestOptions,
    },
    responses::{ListSecretsResponse, ReadSecretMetadataResponse, SecretVersionMetadata},
};

use super::{
    Settings,
    login::Auth,
    transport::{Failure, Transport, data},
};
use crate::rotation::{KvVersion, StoreError, Versioned};

pub(super) struct Kv {
    transport: Transport,
    /// The token, kept valid (`login.rs`).
    auth: Auth,
    mount: String,
    /// When Vault last answered a request, and whether the answer said it is well (reachable,
    /// unsealed, the token accepted): the readiness check takes a recent good answer for its own.
    last_answer: Mutex<Option<(Instant, bool)>>,
}

/// vaultrs's `ReadSecretResponse` with the data typed: secrets are read straight into
/// `SecretString`s rather than into a JSON value first.
#[derive(Deserialize)]
struct Read<T> {
    data: T,
    metadata: SecretVersionMetadata,
}

/// `POST sys/capabilities-self`: the token's capabilities on each of `paths`.
#[derive(Endpoint)]
#[endpoint(
    path = "sys/capabilities-self",
    method = "POST",
    response = "HashMap<String, Vec<String>>"
)]
struct CapabilitiesSelfRequest {
    paths: Vec<String>,
}

impl Kv {
    pub(super) fn new(settings: &Settings) -> Result<Self, StoreError> {
        let transport = Transport::new(settings).map_err(StoreError::Unexpected)?;
        let auth = Auth::new(&settings.token)
            .map_err(|e| StoreError::Unexpected(format!("invalid Vault settings: {e}")))?;
        Ok(Self {
            transport,
            auth,
            mount: settings.mount.clone(),
            last_answer: Mutex::new(None),
        })
    }

    /// Whether Vault's last answer, within `window`, said it is well.
    pub(super) fn answered_well_within(&self, window: Duration) -> bool {
        let last = *self.last_answer.lock().expect("last answer poisoned");
        last.is_some_and(|(at, well)| well && at.elapsed() <= window)
    }

    /// Keeps the token alive for the process's life (`login.rs`).
    pub(super) async fn keep_token_alive(&self) {
        self.auth.keep_alive(&self.transport).await;
    }

    /// The current data of a key and its version; `None` when the key does not exist (or its
    /// current version was deleted).
    pub(super) async fn read<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let endpoint = ReadSecretRequest {
            mount: self.mount.clone(),
            path: path.to_owned(),
            version: None,
        };
        let Some(answer) = self.exec("read", &endpoint, "a key").await? else {
            return Ok(None);
        };
        let read: Read<T> = data(&answer).map_err(|_| malformed(path))?;
        Ok(Some(Versioned {
            version: KvVersion(read.metadata.version),
            value: read.data,
        }))
    }

    /// Writes `data` with check-and-set against `cas`; returns the new version.
    pub(super) async fn write<T: Serialize>(
        &self,
        path: &str,
        value: &T,
        cas: KvVersion,
        what: &str,
    ) -> Result<KvVersion, StoreError> {
        let cas = u32::try_from(cas.get())
            .map_err(|_| StoreError::Unexpected(format!("version {} of {what}", cas.get())))?;
        // vaultrs takes the data as a JSON value: the secrets are plain text there, as they
        // are in the request's body, for as long as the request is sent.
        let endpoint = SetSecretRequest {
            mount: self.mount.clone(),
            path: path.to_owned(),
            data: serde_json::to_value(value).map_err(|_| malformed(path))?,
            options: Some(SetSecretRequestOptions { cas }),
        };
        let answer = self
            .exec("write", &endpoint, what)
            .await?
            .ok_or_else(|| StoreError::Unexpected(format!("HTTP 404 for {what}")))?;
        let written: SecretVersionMetadata = data(&answer).map_err(|_| malformed(path))?;
        Ok(KvVersion(written.version))
    }

    /// The key's current version; [`KvVersion::NONE`] when it does not exist.
    pub(super) async fn current_version(&self, path: &str) -> Result<KvVersion, StoreError> {
        let endpoint = ReadSecretMetadataRequest {
            mount: self.mount.clone(),
            path: path.to_owned(),
        };
        match self
            .exec("metadata", &endpoint, "the key's metadata")
            .await?
        {
            None => Ok(KvVersion::NONE),
            Some(answer) => {
                let metadata: ReadSecretMetadataResponse =
                    data(&answer).map_err(|_| malformed(path))?;
                Ok(KvVersion(metadata.current_version))
            }
        }
    }

    /// The keys directly under `dir`; empty when there are none.
    pub(super) async fn list(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let endpoint = ListSecretsRequest {
            mount: self.mount.clone(),
            path: format!("{}/", dir.trim_end_matches('/')),
        };
        match self.exec("list", &endpoint, "the ledger").await? {
            None => Ok(Vec::new()),
            Some(answer) => {
                let list: ListSecretsResponse = data(&answer).map_err(|_| malformed(dir))?;
                Ok(list.keys)
            }
        }
    }

    /// The first of `needs` (an API path and the capabilities wanted on it) the token lacks;
    /// `None` when it has them all.
    pub(super) async fn first_denied(
        &self,
        needs: &[(String, &[&str])],
    ) -> Result<Option<String>, StoreError> {
        let what = "sys/capabilities-self";
        let endpoint = CapabilitiesSelfRequest {
            paths: needs.iter().map(|(p, _)| p.clone()).collect(),
        };
        let answer = self
            .exec("capabilities", &endpoint, what)
            .await?
            .ok_or_else(|| StoreError::Unexpected(format!("HTTP 404 for {what}")))?;
        let granted: HashMap<String, Vec<String>> = data(&answer).map_err(|_| malformed(what))?;
        Ok(needs.iter().find_map(|(path, wanted)| {
            let caps = granted.get(path).map(Vec::as_slice).unwrap_or_default();
            let granted = caps.iter().any(|c| c == "root")
                || wanted.iter().all(|w| caps.iter().any(|c| c == w));
            (!granted).then(|| path.clone())
        }))
    }

    /// Sends `endpoint` with the service's token: `None` on 404, Vault's refusal mapped to a
    /// [`StoreError`] otherwise. A login's token Vault no longer accepts (revoked, expired)
    /// is replaced by a new login and the request sent once more.
    async fn exec<E: Endpoint>(
        &self,
        operation: &'static str,
        endpoint: &E,
        what: &str,
    ) -> Result<Option<EndpointResult<E::Response>>, StoreError> {
        let token = self.auth.header(&self.transport).await?;
        let mut sent = self.transport.call(operation, endpoint, Some(&token)).await;
        if let Err(refused) = &sent
            && refused.code() == Some(403)
            && self.auth.refused().await
        {
            let token = self.auth.header(&self.transport).await?;
            sent = self.transport.call(operation, endpoint, Some(&token)).await;
        }
        // A 404 or a check-and-set conflict is an answer the protocol expects.
        let well = match &sent {
            Ok(_) => true,
            Err(Failure::Refused { code, .. }) => !matches!(code, 403 | 429 | 500..),
            Err(Failure::Unreachable(_) | Failure::Malformed) => false,
        };
        *self.last_answer.lock().expect("last answer poisoned") = Some((Instant::now(), well));
        match sent {
            Ok(answer) => Ok(Some(answer)),
            Err(Failure::Refused { code: 404, .. }) => Ok(None),
            Err(failure) => Err(store_error(failure, what)),
        }
    }
}

/// Vault's refusal as the protocol's error.
fn store_error(failure: Failure, what: &str) -> StoreError {
    match failure {
        Failure::Unreachable(cause) => StoreError::Unavailable(cause),
        Failure::Malformed => malformed(what),
        Failure::Refused { code, errors } => match code {
            403 => StoreError::PermissionDenied(what.to_owned()),
            400 if errors.iter().any(|e| e.contains("check-and-set")) => StoreError::CasMismatch,
            429 | 500.. => {
                warn!(code, ?errors, "Vault error");
                StoreError::Unavailable(format!("HTTP {code}"))
            }
            _ => {
                warn!(code, ?errors, "Vault error");
                StoreError::Unexpected(format!("HTTP {code} for {what}"))
            }
        },
    }
}

fn malformed(what: &str) -> StoreError {
    StoreError::Unexpected(format!("malformed answer for {what}"))
}
