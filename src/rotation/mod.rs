//! The rotation protocol. Generic over its two ports: where secrets are issued (Auth0) and where
//! they are kept (Vault). No transport types here: the gRPC layer translates, the adapters talk.

mod model;

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

pub use model::{
    CLIENT_ID_MAX, ClientId, IssuedSecret, PathTemplate, REASON_MAX, Reason, RotateCommand,
    Rotation, RotationMetadata, StoredSecret, ValidationError,
};

use crate::{auth0::Auth0Error, vault::VaultError};

/// Port: issues a new secret for a client (Auth0's rotate-secret).
pub trait SecretIssuer: Send + Sync + 'static {
    fn rotate_secret(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<IssuedSecret, Auth0Error>> + Send;
}

/// Port: keeps secrets (Vault KV v2).
pub trait SecretStore: Send + Sync + 'static {
    /// The KV mount, reported back to callers.
    fn mount(&self) -> &str;

    /// The key's current version; 0 when it does not exist yet.
    fn current_version(&self, path: &str) -> impl Future<Output = Result<u64, VaultError>> + Send;

    /// Writes `{client_id, client_secret}` with check-and-set against `cas`, then the rotation
    /// metadata; returns the new version.
    fn write_secret(
        &self,
        path: &str,
        client_id: &ClientId,
        issued: &IssuedSecret,
        metadata: &RotationMetadata,
        cas: u64,
    ) -> impl Future<Output = Result<u64, VaultError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("invalid request: {0}")]
    InvalidArgument(#[from] ValidationError),
    /// Vault failed before Auth0 was called: nothing changed anywhere.
    #[error("Vault failed before the rotation started")]
    VaultBeforeRotation(#[source] VaultError),
    #[error(transparent)]
    Auth0(#[from] Auth0Error),
    /// Auth0 rotated, but the new secret could not be stored: the client needs a resync.
    #[error("the new secret of client {client_id} could not be stored in Vault")]
    StoreAfterRotation {
        client_id: ClientId,
        rotation_id: Uuid,
        #[source]
        source: VaultError,
    },
    #[error("the rotation task stopped unexpectedly")]
    Internal,
}

pub struct RotationService<I, S> {
    issuer: I,
    store: S,
    path: PathTemplate,
    /// One rotation per client at a time in this process: a second one would read the same KV
    /// version and lose the check-and-set race while holding the live secret.
    in_flight: Mutex<HashMap<ClientId, Arc<tokio::sync::Mutex<()>>>>,
}

impl<I: SecretIssuer, S: SecretStore> RotationService<I, S> {
    pub fn new(issuer: I, store: S, path: PathTemplate) -> Self {
        Self {
            issuer,
            store,
            path,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Rotates one client. The work runs in its own task so that a caller who hangs up cannot
    /// cancel it between the Auth0 call and the Vault write.
    pub async fn rotate(
        self: &Arc<Self>,
        command: RotateCommand,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let this = Arc::clone(self);
        let span = info_span!("rotation", client_id = %command.client_id);
        tokio::spawn(async move { this.rotate_locked(command, deadline).await }.instrument(span))
            .await
            .map_err(|_| RotationError::Internal)?
    }

    async fn rotate_locked(
        &self,
        command: RotateCommand,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let lock = self.client_lock(&command.client_id);
        let result = {
            let _guard = lock.lock().await;
            self.rotate_once(&command, deadline).await
        };
        drop(lock);
        self.release_lock(&command.client_id);
        result
    }

    async fn rotate_once(
        &self,
        command: &RotateCommand,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let path = self.path.render(&command.client_id);
        // Read the version first: if Vault is down we refuse before Auth0 is touched.
        let cas = self
            .store
            .current_version(&path)
            .await
            .map_err(RotationError::VaultBeforeRotation)?;

        let issued = self.issuer.rotate_secret(&command.client_id).await?;
        let metadata = RotationMetadata {
            rotation_id: Uuid::new_v4(),
            rotated_at: SystemTime::now(),
            reason: command.reason.clone(),
        };
        info!(rotation_id = %metadata.rotation_id, "Auth0 rotated the secret; storing it");

        let version = self
            .store_with_retries(&path, command, &issued, &metadata, cas, deadline)
            .await
            .map_err(|source| {
                error!(
                    rotation_id = %metadata.rotation_id,
                    vault.path = %path,
                    error = %source,
                    "NEEDS RESYNC: Auth0 rotated the secret of this client but Vault does not hold it; \
                     its applications cannot authenticate until the live secret is stored"
                );
                RotationError::StoreAfterRotation {
                    client_id: command.client_id.clone(),
                    rotation_id: metadata.rotation_id,
                    source,
                }
            })?;
        info!(rotation_id = %metadata.rotation_id, vault.version = version, "rotation stored");
        Ok(Rotation {
            client: issued.client,
            metadata,
            stored: StoredSecret {
                mount: self.store.mount().to_owned(),
                path,
                version,
            },
        })
    }

    /// The new secret exists only in memory now: one attempt always, then bounded retries of
    /// transient failures until the deadline.
    async fn store_with_retries(
        &self,
        path: &str,
        command: &RotateCommand,
        issued: &IssuedSecret,
        metadata: &RotationMetadata,
        cas: u64,
        deadline: Instant,
    ) -> Result<u64, VaultError> {
        let write = || {
            self.store
                .write_secret(path, &command.client_id, issued, metadata, cas)
        };
        match write().await {
            Err(first) if first.is_transient() => {
                warn!(error = %first, "Vault write failed; retrying until the deadline");
                let backoff = ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(10)
                    .with_jitter();
                let retries = write
                    .retry(backoff)
                    .when(VaultError::is_transient)
                    .notify(|err, wait| warn!(error = %err, ?wait, "Vault write failed again"));
                tokio::time::timeout_at(deadline, retries)
                    .await
                    .unwrap_or(Err(first))
            }
            done => done,
        }
    }

    fn client_lock(&self, client_id: &ClientId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.in_flight.lock().expect("lock map poisoned");
        Arc::clone(map.entry(client_id.clone()).or_default())
    }

    fn release_lock(&self, client_id: &ClientId) {
        let mut map = self.in_flight.lock().expect("lock map poisoned");
        if map
            .get(client_id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(client_id);
        }
    }
}

impl<T: SecretIssuer> SecretIssuer for Arc<T> {
    fn rotate_secret(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<IssuedSecret, Auth0Error>> + Send {
        (**self).rotate_secret(client_id)
    }
}

impl<T: SecretStore> SecretStore for Arc<T> {
    fn mount(&self) -> &str {
        (**self).mount()
    }

    fn current_version(&self, path: &str) -> impl Future<Output = Result<u64, VaultError>> + Send {
        (**self).current_version(path)
    }

    fn write_secret(
        &self,
        path: &str,
        client_id: &ClientId,
        issued: &IssuedSecret,
        metadata: &RotationMetadata,
        cas: u64,
    ) -> impl Future<Output = Result<u64, VaultError>> + Send {
        (**self).write_secret(path, client_id, issued, metadata, cas)
    }
}
