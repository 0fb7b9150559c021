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

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::auth0::Client;

    #[derive(Default)]
    struct FakeAuth0 {
        rotations: AtomicUsize,
    }

    impl SecretIssuer for FakeAuth0 {
        async fn rotate_secret(&self, _: &ClientId) -> Result<IssuedSecret, Auth0Error> {
            let n = self.rotations.fetch_add(1, Ordering::SeqCst) + 1;
            // Let other tasks run between "Auth0" and "Vault", as the network would.
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(IssuedSecret {
                client: Client::default(),
                secret: SecretString::from(format!("secret-{n}")),
            })
        }
    }

    /// KV with check-and-set, and scripted failures.
    #[derive(Default)]
    struct FakeVault {
        read_error: Option<VaultError>,
        write_errors: Mutex<VecDeque<VaultError>>,
        write_attempts: AtomicUsize,
        versions: Mutex<HashMap<String, Vec<String>>>,
    }

    impl SecretStore for FakeVault {
        fn mount(&self) -> &str {
            "secret"
        }

        async fn current_version(&self, path: &str) -> Result<u64, VaultError> {
            if let Some(e) = &self.read_error {
                return Err(e.clone());
            }
            let versions = self.versions.lock().unwrap();
            Ok(versions.get(path).map_or(0, |v| v.len() as u64))
        }

        async fn write_secret(
            &self,
            path: &str,
            _: &ClientId,
            issued: &IssuedSecret,
            _: &RotationMetadata,
            cas: u64,
        ) -> Result<u64, VaultError> {
            self.write_attempts.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.write_errors.lock().unwrap().pop_front() {
                return Err(e);
            }
            let mut versions = self.versions.lock().unwrap();
            let key = versions.entry(path.to_owned()).or_default();
            if key.len() as u64 != cas {
                return Err(VaultError::CasMismatch);
            }
            key.push(issued.secret.expose_secret().to_owned());
            Ok(key.len() as u64)
        }
    }

    fn service(vault: FakeVault) -> Arc<RotationService<FakeAuth0, FakeVault>> {
        let path = PathTemplate::parse("auth0/{client_id}", "d").unwrap();
        Arc::new(RotationService::new(FakeAuth0::default(), vault, path))
    }

    fn command(id: &str) -> RotateCommand {
        RotateCommand::parse(id, "").unwrap()
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn vault_down_before_rotation_leaves_auth0_alone() {
        let svc = service(FakeVault {
            read_error: Some(VaultError::Unavailable("down".into())),
            ..FakeVault::default()
        });
        let err = svc.rotate(command("abc"), soon(1000)).await.unwrap_err();
        assert!(
            matches!(err, RotationError::VaultBeforeRotation(_)),
            "{err:?}"
        );
        assert_eq!(svc.issuer.rotations.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn transient_write_failures_are_retried() {
        let svc = service(FakeVault {
            write_errors: Mutex::new(vec![VaultError::Unavailable("503".into()); 2].into()),
            ..FakeVault::default()
        });
        let rotation = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
        assert_eq!(rotation.stored.version, 1);
        assert_eq!(svc.store.write_attempts.load(Ordering::SeqCst), 3);
        assert_eq!(
            svc.issuer.rotations.load(Ordering::SeqCst),
            1,
            "never rotates again"
        );
        assert_eq!(
            svc.store.versions.lock().unwrap()["auth0/abc"],
            ["secret-1"]
        );
    }

    #[tokio::test]
    async fn a_refused_write_is_not_retried_and_asks_for_a_resync() {
        let svc = service(FakeVault {
            write_errors: Mutex::new(vec![VaultError::PermissionDenied("x".into())].into()),
            ..FakeVault::default()
        });
        let err = svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
        assert!(
            matches!(&err, RotationError::StoreAfterRotation { client_id, .. } if client_id.as_str() == "abc"),
            "{err:?}"
        );
        assert_eq!(svc.store.write_attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_stop_at_the_deadline() {
        let svc = service(FakeVault {
            write_errors: Mutex::new(vec![VaultError::Unavailable("503".into()); 1000].into()),
            ..FakeVault::default()
        });
        let started = Instant::now();
        let err = svc.rotate(command("abc"), soon(400)).await.unwrap_err();
        assert!(
            matches!(err, RotationError::StoreAfterRotation { .. }),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by the deadline"
        );
        assert!(
            svc.store.write_attempts.load(Ordering::SeqCst) >= 2,
            "retried at least once"
        );
    }

    #[tokio::test]
    async fn rotations_of_one_client_do_not_interleave() {
        let svc = service(FakeVault::default());
        let runs: Vec<_> = (0..8)
            .map(|_| {
                let svc = Arc::clone(&svc);
                tokio::spawn(async move { svc.rotate(command("abc"), soon(10_000)).await })
            })
            .collect();
        let mut versions = Vec::new();
        for run in runs {
            versions.push(run.await.unwrap().expect("no CAS conflict").stored.version);
        }
        versions.sort();
        assert_eq!(versions, (1..=8).collect::<Vec<u64>>());
        // The last secret issued is the one Vault holds.
        let stored = svc.store.versions.lock().unwrap()["auth0/abc"].clone();
        assert_eq!(stored.last().unwrap(), "secret-8");
        assert!(
            svc.in_flight.lock().unwrap().is_empty(),
            "locks are released"
        );
    }
}
