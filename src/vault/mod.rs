//! Vault KV v2 adapter (vaultrs): check-and-set writes of `{client_id, client_secret}`, rotation
//! facts in the key's custom_metadata, and the start-up permission check.

use std::collections::HashMap;

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

use crate::{
    config::VaultConfig,
    rotation::{
        ClientId, ClientState, IdempotencyKey, IdempotencyRecord, IssuedSecret, Ledger, Reason,
        RotationMetadata, SecretStore,
    },
};

/// What went wrong talking to Vault. Messages are ours; Vault's own error texts are logged only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("Vault is unavailable: {0}")]
    Unavailable(String),
    #[error("Vault denied the service's token access to {0}")]
    PermissionDenied(String),
    #[error("a newer version was written to the key meanwhile (check-and-set mismatch)")]
    CasMismatch,
    #[error("Vault answered in an unexpected way: {0}")]
    Unexpected(String),
}

impl VaultError {
    /// Worth retrying: the same request may succeed in a moment.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    fn from_client(err: ClientError, what: &str) -> Self {
        match err {
            ClientError::APIError { code: 403, .. } => Self::PermissionDenied(what.to_owned()),
            ClientError::APIError { code: 400, errors }
                if errors.iter().any(|e| e.contains("check-and-set")) =>
            {
                Self::CasMismatch
            }
            ClientError::APIError { code, errors } if code >= 500 || code == 429 => {
                warn!(code, ?errors, "Vault error");
                Self::Unavailable(format!("HTTP {code}"))
            }
            ClientError::APIError { code, errors } => {
                warn!(code, ?errors, "Vault error");
                Self::Unexpected(format!("HTTP {code} for {what}"))
            }
            ClientError::RestClientError { .. } => Self::Unavailable("request failed".into()),
            _ => Self::Unexpected(format!("malformed answer for {what}")),
        }
    }
}

pub struct VaultStore {
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
    pub fn new(config: &VaultConfig) -> Result<Self, VaultError> {
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
            .map_err(|_| VaultError::Unexpected("invalid client settings".into()))?;
        let client = VaultClient::new(settings)
            .map_err(|_| VaultError::Unexpected("cannot build the Vault client".into()))?;
        Ok(Self {
            client,
            mount: config.mount.clone(),
            state_prefix: config.state_prefix.clone(),
        })
    }

    /// Start-up check: Vault answers, and the token may create and update keys under the mount
    /// and their metadata.
    #[instrument(skip_all, fields(vault.mount = %self.mount))]
    pub async fn check(&self, sample_path: &str) -> Result<(), VaultError> {
        let state = format!("{}/clients/capability_probe", self.state_prefix);
        let paths = vec![
            format!("{}/data/{sample_path}", self.mount),
            format!("{}/metadata/{sample_path}", self.mount),
            format!("{}/data/{state}", self.mount),
        ];
        let answer: HashMap<String, serde_json::Value> = capabilities_self(&self.client, &paths)
            .await
            .map_err(|e| VaultError::from_client(e, "sys/capabilities-self"))?;
        for path in &paths {
            let caps: Vec<String> = answer
                .get(path)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let can_write = caps.iter().any(|c| c == "root")
                || (caps.iter().any(|c| c == "create") && caps.iter().any(|c| c == "update"));
            if !can_write {
                return Err(VaultError::PermissionDenied(path.clone()));
            }
        }
        Ok(())
    }
}

impl SecretStore for VaultStore {
    fn mount(&self) -> &str {
        &self.mount
    }

    #[instrument(skip_all, fields(vault.path = %path))]
    async fn current_version(&self, path: &str) -> Result<u64, VaultError> {
        match kv2::read_metadata(&self.client, &self.mount, path).await {
            Ok(meta) => Ok(meta.current_version),
            Err(ClientError::APIError { code: 404, .. }) => Ok(0),
            Err(e) => Err(VaultError::from_client(e, "the key's metadata")),
        }
    }

    #[instrument(skip_all, fields(vault.path = %path))]
    async fn read_secret(&self, path: &str) -> Result<Option<(u64, SecretString)>, VaultError> {
        let Some((version, data)) = self.read_current(path).await? else {
            return Ok(None);
        };
        let stored: StoredData = serde_json::from_value(data)
            .map_err(|_| VaultError::Unexpected("the key holds no client_secret".into()))?;
        Ok(Some((version, stored.client_secret)))
    }

    #[instrument(skip_all, fields(vault.path = %path))]
    async fn last_rotation(
        &self,
        path: &str,
    ) -> Result<Option<(RotationMetadata, u64)>, VaultError> {
        let meta = match kv2::read_metadata(&self.client, &self.mount, path).await {
            Ok(meta) => meta,
            Err(ClientError::APIError { code: 404, .. }) => return Ok(None),
            Err(e) => return Err(VaultError::from_client(e, "the key's metadata")),
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
        Ok(parsed.map(|metadata| (metadata, meta.current_version)))
    }

    #[instrument(skip_all, fields(vault.path = %path, cas))]
    async fn write_secret(
        &self,
        path: &str,
        client_id: &ClientId,
        issued: &IssuedSecret,
        metadata: &RotationMetadata,
        cas: u64,
    ) -> Result<u64, VaultError> {
        let data = SecretData {
            client_id: client_id.as_str(),
            client_secret: &issued.secret,
        };
        let cas32 =
            u32::try_from(cas).map_err(|_| VaultError::Unexpected("version overflow".into()))?;
        let version = match kv2::set_with_options(
            &self.client,
            &self.mount,
            path,
            &data,
            SetSecretRequestOptions { cas: cas32 },
        )
        .await
        {
            Ok(written) => written.version,
            // A retry after a write whose answer was lost finds its own write: that is success.
            Err(e) => match VaultError::from_client(e, "the key") {
                VaultError::CasMismatch => self.version_holding(path, &issued.secret).await?,
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
                kv2::set_metadata(&self.client, &self.mount, path, Some(&mut request)).await
            }
        };
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(50))
            .with_max_times(3);
        if let Err(e) = backon::Retryable::retry(set, backoff).await {
            warn!(
                error = %VaultError::from_client(e, "the key's metadata"),
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
    ) -> Result<Option<(u64, serde_json::Value)>, VaultError> {
        let request = ReadSecretRequest::builder()
            .mount(&self.mount)
            .path(path)
            .build()
            .map_err(|_| VaultError::Unexpected("invalid read request".into()))?;
        match vaultrs::api::exec_with_result::<ReadSecretRequest>(&self.client, request).await {
            Ok(ReadSecretResponse { data, metadata }) => Ok(Some((metadata.version, data))),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(VaultError::from_client(e, "a key")),
        }
    }

    async fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(u64, Option<T>), VaultError> {
        match self.read_current(path).await? {
            None => Ok((0, None)),
            Some((version, data)) => {
                let record = serde_json::from_value(data)
                    .map_err(|_| VaultError::Unexpected(format!("malformed record at {path}")))?;
                Ok((version, Some(record)))
            }
        }
    }

    async fn write_record<T: Serialize>(
        &self,
        path: &str,
        record: &T,
        cas: u64,
    ) -> Result<u64, VaultError> {
        let cas =
            u32::try_from(cas).map_err(|_| VaultError::Unexpected("version overflow".into()))?;
        kv2::set_with_options(
            &self.client,
            &self.mount,
            path,
            record,
            SetSecretRequestOptions { cas },
        )
        .await
        .map(|written| written.version)
        .map_err(|e| VaultError::from_client(e, "a ledger record"))
    }

    fn state_path(&self, client_id: &ClientId) -> String {
        format!("{}/clients/{client_id}", self.state_prefix)
    }

    fn idempotency_path(&self, key: &IdempotencyKey) -> String {
        // The prefix keeps keys such as "." or ".." from being path segments of their own.
        format!("{}/idempotency/k-{}", self.state_prefix, key.as_str())
    }

    /// The current version, if it holds exactly `secret`; a CAS mismatch otherwise.
    async fn version_holding(&self, path: &str, secret: &SecretString) -> Result<u64, VaultError> {
        match SecretStore::read_secret(self, path).await? {
            Some((version, stored)) if stored.expose_secret() == secret.expose_secret() => {
                Ok(version)
            }
            _ => Err(VaultError::CasMismatch),
        }
    }
}

impl Ledger for VaultStore {
    #[instrument(skip_all, fields(%client_id))]
    async fn read_state(&self, client_id: &ClientId) -> Result<(u64, ClientState), VaultError> {
        let (version, state) = self.read_record(&self.state_path(client_id)).await?;
        Ok((version, state.unwrap_or_default()))
    }

    #[instrument(skip_all, fields(%client_id, cas))]
    async fn write_state(
        &self,
        client_id: &ClientId,
        state: &ClientState,
        cas: u64,
    ) -> Result<u64, VaultError> {
        self.write_record(&self.state_path(client_id), state, cas)
            .await
    }

    async fn clients(&self) -> Result<Vec<ClientId>, VaultError> {
        let dir = format!("{}/clients", self.state_prefix);
        match kv2::list(&self.client, &self.mount, &dir).await {
            Ok(keys) => Ok(keys
                .iter()
                .filter_map(|k| ClientId::parse(k).ok())
                .collect()),
            Err(ClientError::APIError { code: 404, .. }) => Ok(Vec::new()),
            Err(e) => Err(VaultError::from_client(e, "the ledger")),
        }
    }

    async fn read_idempotency(
        &self,
        key: &IdempotencyKey,
    ) -> Result<(u64, Option<IdempotencyRecord>), VaultError> {
        self.read_record(&self.idempotency_path(key)).await
    }

    async fn write_idempotency(
        &self,
        key: &IdempotencyKey,
        record: &IdempotencyRecord,
        cas: u64,
    ) -> Result<u64, VaultError> {
        self.write_record(&self.idempotency_path(key), record, cas)
            .await
    }
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
