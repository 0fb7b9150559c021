//! Storing a secret Auth0 now holds: the write with retries until the deadline, the write-over
//! of a change from outside while the lease is ours, and the close that records the rotation.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tracing::{error, warn};

use super::{
    client::Client,
    error::{RotationError, StoreError},
    ids::ClientId,
    notify::NotificationKind,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{Acquired, KeySecrets, KvVersion, LastRotation, Rotation, RotationMetadata},
    service::RotationService,
};

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// Auth0 holds a new secret (rotated, or a staged one promoted): stores `secrets` with
    /// check-and-set against `cas` (once more over a write from outside while the lease is
    /// ours), then closes the intent recording the rotation. A store that fails leaves the
    /// intent open for healing.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn store_and_close(
        &self,
        client_id: &ClientId,
        path: String,
        secrets: &KeySecrets,
        cas: KvVersion,
        lease: &Acquired,
        client: Box<Client>,
        metadata: RotationMetadata,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let rotation_id = metadata.rotation_id;
        let stored = match self
            .store_with_retries(&path, client_id, secrets, cas, deadline)
            .await
        {
            Err(StoreError::CasMismatch) => {
                self.store_again(client_id, &path, secrets, lease.fence, deadline)
                    .await
            }
            done => done,
        };
        let version = stored.map_err(|source| {
            error!(
                %rotation_id,
                vault.path = %path,
                error = %source,
                "NEEDS RESYNC: Auth0 holds a new secret that Vault does not hold yet; \
                 this replica retries storing the live secret shortly"
            );
            RotationError::StoreAfterRotation {
                client_id: client_id.clone(),
                rotation_id,
                source,
            }
        })?;
        let last = LastRotation {
            metadata: metadata.clone(),
            kv_version: version,
        };
        let rotation = Rotation {
            client,
            metadata,
            stored: self.stored(path, version),
            replayed: false,
            promote_after: None,
        };
        let closed = self.with_rotation(
            lease.before.clone().closed_with(last),
            NotificationKind::Completed,
            client_id,
            &rotation,
        );
        self.close(client_id, rotation_id, lease.fence, closed)
            .await;
        Ok(rotation)
    }

    /// The new secret exists only in memory now: one attempt always, then bounded retries of
    /// transient failures until the deadline.
    pub(super) async fn store_with_retries(
        &self,
        path: &str,
        client_id: &ClientId,
        secrets: &KeySecrets,
        cas: KvVersion,
        deadline: Instant,
    ) -> Result<KvVersion, StoreError> {
        let write = || self.store.write_secret(path, client_id, secrets, cas);
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
                    .when(StoreError::is_transient)
                    .notify(|err, wait| warn!(error = %err, ?wait, "Vault write failed again"));
                tokio::time::timeout_at(deadline, retries)
                    .await
                    .unwrap_or(Err(first))
            }
            done => done,
        }
    }

    /// The key moved since the last rotation recorded it (a write from outside the service, a
    /// key deleted and made again). While the lease is still ours, read its version and write
    /// once more; a lease lost meanwhile means a stale writer, which must not write.
    pub(super) async fn store_again(
        &self,
        client_id: &ClientId,
        path: &str,
        secrets: &KeySecrets,
        fence: KvVersion,
        deadline: Instant,
    ) -> Result<KvVersion, StoreError> {
        if self.ledger.read_state(client_id).await?.version != fence {
            return Err(StoreError::CasMismatch);
        }
        let current = self.store.current_version(path).await?;
        warn!(vault.path = %path, "the key changed outside the service since its last rotation; writing over its current version");
        self.store_with_retries(path, client_id, secrets, current, deadline)
            .await
    }
}
