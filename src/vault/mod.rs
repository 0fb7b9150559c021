//! Vault KV v2 adapter (vaultrs), implementing the protocol's [`SecretStore`] and [`Ledger`]:
//! check-and-set writes of `{client_id, client_secret}`, rotation facts in the key's
//! custom_metadata, the ledger's records, and the start-up permission check. vaultrs's errors
//! become the protocol's [`StoreError`]; Vault's own error texts are logged only.

mod settings;

use std::{collections::HashMap, sync::Arc};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tracing::{instrument, warn};
use vaultrs::{
    api::kv2::{
        requests::{ReadSecretRequest, SetSecretMetadataRequest, SetSecretRequestOptions},
        responses::ReadSecretResponse,
    },
    client::{VaultClient, VaultClientSettingsBuilder},
    error::ClientError,
    kv2,
};

pub use settings::Settings;

use crate::rotation::{
    ClientId, ClientState, IdempotencyKey, IdempotencyRecord, IssuedSecret, KvVersion, Ledger,
    Reason, RotationMetadata, SecretStore, StoreError, Versioned,
};

/// Maps a vaultrs error to the protocol's; `what` names the thing asked for.
fn store_error(err: ClientError, what: &str) -> StoreError {
    match err {
        ClientError::APIError { code: 403, .. } => StoreError::PermissionDenied(what.to_owned()),
        ClientError::APIError { code: 400, errors }
            if errors.iter().any(|e| e.contains("check-and-set")) =>
        {
            StoreError::CasMismatch
        }
        ClientError::APIError { code, errors } if code >= 500 || code == 429 => {
            warn!(code, ?errors, "Vault error");
            StoreError::Unavailable(format!("HTTP {code}"))
        }
        ClientError::APIError { code, errors } => {
            warn!(code, ?errors, "Vault error");
            StoreError::Unexpected(format!("HTTP {code} for {what}"))
        }
        ClientError::RestClientError { .. } => StoreError::Unavailable("request failed".into()),
        _ => StoreError::Unexpected(format!("malformed answer for {what}")),
    }
}

/// KV v2 through vaultrs. Cheap to clone: clones share one client.
#[derive(Clone)]
pub struct VaultStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: VaultClient,
    mount: String,
    /// Where the ledger's records live inside the mount.
    state_prefix: String,
}

/// The KV data. Exposes the secret only while vaultrs serialises the request body.
#[derive(Serialize)]
struct SecretData<'a> {
    client_id: &'a str,
    #[serde(serialize_with = "expose")]
    client_secret: &'a SecretString,
}

fn expose<S: serde::Serializer>(secret: &&SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

#[derive(serde::Deserialize)]
struct StoredData {
    client_secret: SecretString,
}

impl VaultStore {
    pub fn new(config: &Settings) -> Result<Self, StoreError> {
        // Every setting explicit: the builder would otherwise read VAULT_* on its own.
        let mut settings = VaultClientSettingsBuilder::default();
        settings
            .address(config.addr.as_str())
            .token(config.token.expose_secret())
            .timeout(Some(config.timeout))
            .verify(true)
            .ca_certs(
                config
                    .ca_cert
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            )
            .namespace(config.namespace.clone());
        let settings = settings
            .build()
            .map_err(|_| StoreError::Unexpected("invalid client settings".into()))?;
        let client = VaultClient::new(settings)
            .map_err(|_| StoreError::Unexpected("cannot build the Vault client".into()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                mount: config.mount.clone(),
                state_prefix: config.state_prefix.clone(),
            }),
        })
    }

    /// Start-up check: Vault answers, and the token may create and update keys under the mount
    /// and their metadata.
    #[instrument(skip_all, fields(vault.mount = %self.inner.mount))]
    pub async fn check(&self, sample_path: &str) -> Result<(), StoreError> {
        let state = format!("{}/clients/capability_probe", self.inner.state_prefix);
        let paths = vec![
            format!("{}/data/{sample_path}", self.inner.mount),
            format!("{}/metadata/{sample_path}", self.inner.mount),
            format!("{}/data/{state}", self.inner.mount),
        ];
        let answer: HashMap<String, serde_json::Value> =
            capabilities_self(&self.inner.client, &paths)
                .await
                .map_err(|e| store_error(e, "sys/capabilities-self"))?;
        for path in &paths {
            let caps: Vec<String> = answer
                .get(path)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let can_write = caps.iter().any(|c| c == "root")
                || (caps.iter().any(|c| c == "create") && caps.iter().any(|c| c == "update"));
            if !can_write {
                return Err(StoreError::PermissionDenied(path.clone()));
            }
        }
        Ok(())
    }
}

impl SecretStore for VaultStore {
    fn mount(&self) -> &str {
        &self.inner.mount
    }

    #[instrument(skip_all, fields(vault.path = %path))]
    async fn current_version(&self, path: &str) -> Result<KvVersion, StoreError> {
        match kv2::read_metadata(&self.inner.client, &self.inner.mount, path).await {
            Ok(meta) => Ok(KvVersion(meta.current_version)),
            Err(ClientError::APIError { code: 404, .. }) => Ok(KvVersion::NONE),
            Err(e) => Err(store_error(e, "the key's metadata")),
        }
    }

    #[instrument(skip_all, fields(vault.path = %path))]
    async fn read_secret(&self, path: &str) -> Result<Option<Versioned<SecretString>>, StoreError> {
        let Some(current) = self.read_current(path).await? else {
            return Ok(None);
        };
        let stored: StoredData = serde_json::from_value(current.value)
            .map_err(|_| StoreError::Unexpected("the key holds no client_secret".into()))?;
        Ok(Some(Versioned {
            version: current.version,
            value: stored.client_secret,
        }))
    }

    #[instrument(skip_all, fields(vault.path = %path))]
    async fn last_rotation(
        &self,
        path: &str,
    ) -> Result<Option<Versioned<RotationMetadata>>, StoreError> {
        let meta = match kv2::read_metadata(&self.inner.client, &self.inner.mount, path).await {
            Ok(meta) => meta,
            Err(ClientError::APIError { code: 404, .. }) => return Ok(None),
            Err(e) => return Err(store_error(e, "the key's metadata")),
        };
        let custom = meta.custom_metadata.unwrap_or_default();
        let parsed = (|| {
            Some(RotationMetadata {
                rotation_id: custom.get("rotation_id")?.parse().ok()?,
                rotated_at: custom
                    .get("rotated_at")?
                    .parse::<prost_types::Timestamp>()
                    .ok()?
                    .try_into()
                    .ok()?,
                reason: custom
                    .get("reason")
                    .and_then(|r| Reason::parse(r).ok().flatten()),
                recovered: custom.get("recovered").is_some_and(|r| r == "true"),
            })
        })();
        Ok(parsed.map(|value| Versioned {
            version: KvVersion(meta.current_version),
            value,
        }))
    }

    #[instrument(skip_all, fields(vault.path = %path, cas))]
    async fn write_secret(
        &self,
        path: &str,
        client_id: &ClientId,
        issued: &IssuedSecret,
        metadata: &RotationMetadata,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        let data = SecretData {
            client_id: client_id.as_str(),
            client_secret: &issued.secret,
        };
        let cas32 = cas32(cas)?;
        let version = match kv2::set_with_options(
            &self.inner.client,
            &self.inner.mount,
            path,
            &data,
            SetSecretRequestOptions { cas: cas32 },
        )
        .await
        {
            Ok(written) => KvVersion(written.version),
            // A retry after a write whose answer was lost finds its own write: that is success.
            Err(e) => match store_error(e, "the key") {
                StoreError::CasMismatch => self.version_holding(path, &issued.secret).await?,
                other => return Err(other),
            },
        };

        let mut custom = HashMap::from([
            ("rotation_id".to_owned(), metadata.rotation_id.to_string()),
            (
                "rotated_at".to_owned(),
                prost_types::Timestamp::from(metadata.rotated_at).to_string(),
            ),
            ("rotated_by".to_owned(), "secret-rotator".to_owned()),
            ("client_id".to_owned(), client_id.to_string()),
            ("recovered".to_owned(), metadata.recovered.to_string()),
        ]);
        if let Some(reason) = &metadata.reason {
            custom.insert("reason".to_owned(), reason.as_str().to_owned());
        }
        // The secret is stored; metadata failing must not turn that into an error. It is
        // idempotent, so a few quick retries cover a Vault that hiccups.
        let set = || {
            let custom = custom.clone();
            async move {
                let mut request = SetSecretMetadataRequest::builder();
                request.custom_metadata(custom);
                kv2::set_metadata(
                    &self.inner.client,
                    &self.inner.mount,
                    path,
                    Some(&mut request),
                )
                .await
            }
        };
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(50))
            .with_max_times(3);
        if let Err(e) = backon::Retryable::retry(set, backoff).await {
            warn!(
                error = %store_error(e, "the key's metadata"),
                rotation_id = %metadata.rotation_id,
                "secret stored, but its rotation metadata was not"
            );
        }
        Ok(version)
    }
}

impl VaultStore {
    /// The current data of a key and its version; `None` when the key does not exist (or its
    /// current version was deleted).
    async fn read_current(
        &self,
        path: &str,
    ) -> Result<Option<Versioned<serde_json::Value>>, StoreError> {
        let request = ReadSecretRequest::builder()
            .mount(&self.inner.mount)
            .path(path)
            .build()
            .map_err(|_| StoreError::Unexpected("invalid read request".into()))?;
        match vaultrs::api::exec_with_result::<ReadSecretRequest>(&self.inner.client, request).await
        {
            Ok(ReadSecretResponse { data, metadata }) => Ok(Some(Versioned {
                version: KvVersion(metadata.version),
                value: data,
            })),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(store_error(e, "a key")),
        }
    }

    async fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Versioned<Option<T>>, StoreError> {
        match self.read_current(path).await? {
            None => Ok(Versioned {
                version: KvVersion::NONE,
                value: None,
            }),
            Some(current) => {
                // Records are validated as they are read: ids, reasons and keys parse again.
                let record = serde_json::from_value(current.value)
                    .map_err(|_| StoreError::Unexpected(format!("malformed record at {path}")))?;
                Ok(Versioned {
                    version: current.version,
                    value: Some(record),
                })
            }
        }
    }

    async fn write_record<T: Serialize>(
        &self,
        path: &str,
        record: &T,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        kv2::set_with_options(
            &self.inner.client,
            &self.inner.mount,
            path,
            record,
            SetSecretRequestOptions { cas: cas32(cas)? },
        )
        .await
        .map(|written| KvVersion(written.version))
        .map_err(|e| store_error(e, "a ledger record"))
    }

    fn state_path(&self, client_id: &ClientId) -> String {
        format!("{}/clients/{client_id}", self.inner.state_prefix)
    }

    fn idempotency_path(&self, key: &IdempotencyKey) -> String {
        // The prefix keeps keys such as "." or ".." from being path segments of their own.
        format!("{}/idempotency/k-{}", self.inner.state_prefix, key.as_str())
    }

    /// The current version, if it holds exactly `secret`; a CAS mismatch otherwise.
    async fn version_holding(
        &self,
        path: &str,
        secret: &SecretString,
    ) -> Result<KvVersion, StoreError> {
        match SecretStore::read_secret(self, path).await? {
            Some(held) if held.value.expose_secret() == secret.expose_secret() => Ok(held.version),
            _ => Err(StoreError::CasMismatch),
        }
    }
}

impl Ledger for VaultStore {
    #[instrument(skip_all, fields(%client_id))]
    async fn read_state(&self, client_id: &ClientId) -> Result<Versioned<ClientState>, StoreError> {
        let read = self.read_record(&self.state_path(client_id)).await?;
        Ok(Versioned {
            version: read.version,
            value: read.value.unwrap_or_default(),
        })
    }

    #[instrument(skip_all, fields(%client_id, cas))]
    async fn write_state(
        &self,
        client_id: &ClientId,
        state: &ClientState,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        self.write_record(&self.state_path(client_id), state, cas)
            .await
    }

    async fn clients(&self) -> Result<Vec<ClientId>, StoreError> {
        let dir = format!("{}/clients", self.inner.state_prefix);
        match kv2::list(&self.inner.client, &self.inner.mount, &dir).await {
            Ok(keys) => Ok(keys
                .iter()
                .filter_map(|k| ClientId::parse(k).ok())
                .collect()),
            Err(ClientError::APIError { code: 404, .. }) => Ok(Vec::new()),
            Err(e) => Err(store_error(e, "the ledger")),
        }
    }

    async fn read_idempotency(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Versioned<Option<IdempotencyRecord>>, StoreError> {
        self.read_record(&self.idempotency_path(key)).await
    }

    async fn write_idempotency(
        &self,
        key: &IdempotencyKey,
        record: &IdempotencyRecord,
        cas: KvVersion,
    ) -> Result<KvVersion, StoreError> {
        self.write_record(&self.idempotency_path(key), record, cas)
            .await
    }
}

/// KV v2 takes check-and-set values as 32-bit numbers.
fn cas32(cas: KvVersion) -> Result<u32, StoreError> {
    u32::try_from(cas.get()).map_err(|_| StoreError::Unexpected("version overflow".into()))
}

/// `POST /v1/sys/capabilities-self`, which vaultrs does not wrap.
struct CapabilitiesSelf<'a> {
    paths: &'a [String],
}

impl rustify::Endpoint for CapabilitiesSelf<'_> {
    type Response = HashMap<String, serde_json::Value>;
    const REQUEST_BODY_TYPE: rustify::enums::RequestType = rustify::enums::RequestType::JSON;
    const RESPONSE_BODY_TYPE: rustify::enums::ResponseType = rustify::enums::ResponseType::JSON;

    fn path(&self) -> String {
        "sys/capabilities-self".into()
    }

    fn method(&self) -> rustify::enums::RequestMethod {
        rustify::enums::RequestMethod::POST
    }

    fn body(&self) -> Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        let body = serde_json::json!({ "paths": self.paths });
        Ok(Some(body.to_string().into_bytes()))
    }
}

async fn capabilities_self(
    client: &VaultClient,
    paths: &[String],
) -> Result<HashMap<String, serde_json::Value>, ClientError> {
    vaultrs::api::exec_with_result(client, CapabilitiesSelf { paths }).await
}
