//! The rotation protocol, generic over its ports: where secrets are issued (Auth0), where they
//! are kept (Vault KV), and the ledger of leases, intents and idempotency keys (also Vault).
//! No transport types here: the gRPC layer translates, the adapters talk.
//!
//! A rotation of client C:
//! 1. takes C's lease in the ledger and records the intent, in one check-and-set write (an open
//!    intent left by a dead rotation is healed first);
//! 2. calls Auth0's rotate-secret;
//! 3. writes the secret with check-and-set against the KV version observed under the lease;
//! 4. closes the intent and releases the lease in one check-and-set write.
//!
//! An intent that stays open (crash, lost answer, Vault failure) is healed by reading the live
//! secret back from Auth0 and storing it: never by rotating again.

mod model;
mod recovery;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use secrecy::SecretString;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

pub use model::{
    CLIENT_ID_MAX, ClientId, ClientState, IDEMPOTENCY_KEY_MAX, IdempotencyKey, IdempotencyOutcome,
    IdempotencyRecord, Intent, IssuedSecret, Lease, PathTemplate, REASON_MAX, Reason,
    RotateCommand, Rotation, RotationMetadata, RotationStatus, StoredSecret, ValidationError,
    millis,
};

use crate::{
    audit::{self, Event},
    auth0::Auth0Error,
    vault::VaultError,
};

/// Port: issues secrets (Auth0).
pub trait SecretIssuer: Send + Sync + 'static {
    /// Rotates the client's secret (rotate-secret).
    fn rotate_secret(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<IssuedSecret, Auth0Error>> + Send;

    /// Reads the client and the secret Auth0 accepts now, without rotating (recovery).
    fn read_secret(
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

    /// The current version and the secret it holds; `None` when the key does not exist.
    fn read_secret(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<(u64, SecretString)>, VaultError>> + Send;

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

    /// The metadata of the rotation that wrote the current version, with that version.
    fn last_rotation(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<(RotationMetadata, u64)>, VaultError>> + Send;
}

/// Port: the coordination records, every write check-and-set against the version read.
pub trait Ledger: Send + Sync + 'static {
    /// The client's record and its version (0 and an empty record when there is none).
    fn read_state(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<(u64, ClientState), VaultError>> + Send;

    fn write_state(
        &self,
        client_id: &ClientId,
        state: &ClientState,
        cas: u64,
    ) -> impl Future<Output = Result<u64, VaultError>> + Send;

    /// Every client that has a record.
    fn clients(&self) -> impl Future<Output = Result<Vec<ClientId>, VaultError>> + Send;

    fn read_idempotency(
        &self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<(u64, Option<IdempotencyRecord>), VaultError>> + Send;

    fn write_idempotency(
        &self,
        key: &IdempotencyKey,
        record: &IdempotencyRecord,
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
    /// Vault failed on a read-only call.
    #[error("Vault failed")]
    Vault(#[source] VaultError),
    #[error(transparent)]
    Auth0(#[from] Auth0Error),
    /// Another rotation of the client held its lease for the whole deadline.
    #[error("another rotation of this client is in progress")]
    Busy,
    /// A request with the same idempotency key is still running.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyInProgress,
    /// The service could not read a secret back from Auth0, so a lost answer would be lost for good.
    #[error("recovery is unavailable")]
    RecoveryUnavailable,
    /// An earlier rotation of the client is open and could not be healed now.
    #[error("an earlier rotation of client {client_id} is still open and could not be healed")]
    RecoveryFailed {
        client_id: ClientId,
        #[source]
        source: Box<RotationError>,
    },
    /// Auth0's answer was lost; the secret Auth0 accepts now was read back and stored. Whether
    /// Auth0 had rotated cannot be known.
    #[error("Auth0's answer for client {client_id} was lost")]
    Recovered {
        client_id: ClientId,
        stored: StoredSecret,
        #[source]
        source: Auth0Error,
    },
    /// Auth0's answer was lost and the live secret could not be read back yet: the intent stays
    /// open for the reconciler.
    #[error("Auth0's answer for client {client_id} was lost")]
    OutcomeUnknown {
        client_id: ClientId,
        rotation_id: Uuid,
        #[source]
        source: Auth0Error,
    },
    /// Auth0 rotated, but the new secret could not be stored: the intent stays open for the
    /// reconciler.
    #[error("the new secret of client {client_id} could not be stored in Vault")]
    StoreAfterRotation {
        client_id: ClientId,
        rotation_id: Uuid,
        #[source]
        source: VaultError,
    },
    /// ROTATOR_MAX_CONCURRENT_ROTATIONS rotations were running for the whole deadline.
    #[error("too many rotations are in progress")]
    Overloaded,
    #[error("the rotation task stopped unexpectedly")]
    Internal,
}

impl RotationError {
    /// A short, stable name for the audit trail.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid_argument",
            Self::VaultBeforeRotation(_) | Self::Vault(_) => "vault_failed",
            Self::Auth0(e) => match e {
                Auth0Error::ClientNotFound => "client_not_found",
                Auth0Error::ClientNotRotatable => "client_not_rotatable",
                Auth0Error::RateLimited { .. } => "auth0_rate_limited",
                Auth0Error::Unavailable(_) => "auth0_unavailable",
                Auth0Error::OutcomeUnknown(_) => "auth0_outcome_unknown",
                Auth0Error::CredentialsRejected
                | Auth0Error::AccessDenied(_)
                | Auth0Error::TokenRejected
                | Auth0Error::MissingScope(_)
                | Auth0Error::Protocol(_) => "auth0_refused_service",
            },
            Self::Busy => "busy",
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::RecoveryUnavailable => "recovery_unavailable",
            Self::RecoveryFailed { .. } => "recovery_failed",
            Self::Recovered { .. } => "recovered",
            Self::OutcomeUnknown { .. } => "outcome_unknown",
            Self::StoreAfterRotation { .. } => "store_failed_after_rotation",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
        }
    }

    /// Whether the rotation's intent stays open for recovery (its idempotency key stays bound).
    fn leaves_open_intent(&self) -> bool {
        matches!(
            self,
            Self::OutcomeUnknown { .. } | Self::StoreAfterRotation { .. }
        )
    }
}

/// Settings of the protocol, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: PathTemplate,
    /// Names this replica in leases.
    pub replica: String,
    /// How long a lease lasts; longer than any one rotation can take.
    pub lease_ttl: Duration,
    /// How long an idempotency key replays its answer.
    pub idempotency_window: Duration,
    /// Rotate even when recovery is known to be impossible (no `read:client_keys`).
    pub allow_unrecoverable: bool,
    /// Test-only: pause between Auth0's answer and the Vault write.
    pub pause_after_auth0: Option<Duration>,
    /// Rotations running at once in this process; more wait until their deadline.
    pub max_concurrent: usize,
}

pub struct RotationService<I, S, L> {
    issuer: I,
    store: S,
    ledger: L,
    settings: Settings,
    /// False once start-up learns the Auth0 token cannot read secrets back.
    recovery_available: AtomicBool,
    /// One rotation per client at a time in this process, before the Vault lease is even tried.
    local: Mutex<HashMap<ClientId, Arc<tokio::sync::Mutex<()>>>>,
    /// Rotations and heals in flight, so that shutdown can wait for them.
    tasks: TaskTracker,
    slots: Arc<tokio::sync::Semaphore>,
}

enum Claim {
    Replay(Box<Rotation>),
    Claimed(u64),
}

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    pub fn new(issuer: I, store: S, ledger: L, settings: Settings) -> Self {
        Self {
            issuer,
            store,
            ledger,
            recovery_available: AtomicBool::new(true),
            local: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent.max(1))),
            settings,
        }
    }

    /// Start-up reports whether secrets can be read back from Auth0.
    pub fn set_recovery_available(&self, available: bool) {
        self.recovery_available.store(available, Ordering::Relaxed);
    }

    /// Waits until every rotation and heal started so far has finished.
    pub async fn drained(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Rotates one client. The work runs in its own task: a caller who hangs up cannot cancel
    /// it between the Auth0 call and the Vault write.
    pub async fn rotate(
        self: &Arc<Self>,
        command: RotateCommand,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let slot = tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| RotationError::Overloaded)?
            .map_err(|_| RotationError::Internal)?;
        let this = Arc::clone(self);
        let span = info_span!("rotation", client_id = %command.client_id, trace_id = %command.origin.trace_id);
        self.tasks
            .spawn(
                async move {
                    let _slot = slot;
                    this.rotate_audited(command, deadline).await
                }
                .instrument(span),
            )
            .await
            .map_err(|_| RotationError::Internal)?
    }

    async fn rotate_audited(
        &self,
        command: RotateCommand,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let record = |event, outcome, rotation_id, kv_version| audit::Record {
            event,
            origin: &command.origin,
            client_id: command.client_id.as_str(),
            reason: command.reason.as_ref().map(Reason::as_str),
            rotation_id,
            outcome,
            kv_version,
        };
        let rotation_id = Uuid::new_v4();
        audit::emit(record(Event::Started, "started", Some(rotation_id), None));
        let result = self
            .rotate_idempotent(command.clone(), rotation_id, deadline)
            .await;
        audit::emit(match &result {
            Ok(r) => record(
                Event::Succeeded,
                "ok",
                Some(r.metadata.rotation_id),
                Some(r.stored.version),
            ),
            Err(RotationError::Recovered { stored, .. }) => record(
                Event::Recovered,
                "recovered",
                Some(rotation_id),
                Some(stored.version),
            ),
            Err(e) => record(Event::Failed, e.outcome(), Some(rotation_id), None),
        });
        result
    }

    /// The client's last stored rotation and any open intent.
    pub async fn status(&self, client_id: &ClientId) -> Result<RotationStatus, RotationError> {
        let path = self.settings.path.render(client_id);
        // The ledger first: an intent is closed only after its secret and metadata are stored,
        // so a closed intent seen here is never followed by stale metadata below.
        let (_, state) = self
            .ledger
            .read_state(client_id)
            .await
            .map_err(RotationError::Vault)?;
        let last = self
            .store
            .last_rotation(&path)
            .await
            .map_err(RotationError::Vault)?;
        Ok(RotationStatus {
            last: last.map(|(metadata, version)| (metadata, self.stored(path, version))),
            lease_active: state
                .lease
                .as_ref()
                .is_some_and(|l| l.active(SystemTime::now())),
            open_intent: state.intent,
        })
    }

    async fn rotate_idempotent(
        &self,
        command: RotateCommand,
        rotation_id: Uuid,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        if !self.recovery_available.load(Ordering::Relaxed) && !self.settings.allow_unrecoverable {
            return Err(RotationError::RecoveryUnavailable);
        }
        let Some(key) = command.idempotency_key.clone() else {
            return self.rotate_locked(&command, rotation_id, deadline).await;
        };
        let claimed = match self
            .claim_key(&key, &command.client_id, rotation_id, deadline)
            .await?
        {
            Claim::Replay(rotation) => {
                info!(rotation_id = %rotation.metadata.rotation_id, "idempotency key replayed");
                return Ok(*rotation);
            }
            Claim::Claimed(version) => version,
        };
        let result = self.rotate_locked(&command, rotation_id, deadline).await;
        let outcome = match &result {
            Ok(rotation) => Some(IdempotencyOutcome::Done {
                rotation: Box::new(rotation.clone()),
            }),
            // Recovery completes the key when it heals the intent.
            Err(e) if e.leaves_open_intent() => None,
            Err(_) => Some(IdempotencyOutcome::Released),
        };
        if let Some(outcome) = outcome {
            self.settle_key(&key, &command.client_id, outcome, claimed)
                .await;
        }
        result
    }

    /// Binds the key to this request, or finds the answer it is already bound to.
    async fn claim_key(
        &self,
        key: &IdempotencyKey,
        client_id: &ClientId,
        rotation_id: Uuid,
        deadline: Instant,
    ) -> Result<Claim, RotationError> {
        let mut waits = waits();
        loop {
            let (version, record) = self
                .ledger
                .read_idempotency(key)
                .await
                .map_err(RotationError::VaultBeforeRotation)?;
            let now = SystemTime::now();
            let live = record.filter(|r| {
                !matches!(r.outcome, IdempotencyOutcome::Released)
                    && r.created_at + self.settings.idempotency_window > now
            });
            match live {
                Some(r) if r.client_id != *client_id => {
                    return Err(ValidationError::IdempotencyKeyReused.into());
                }
                Some(IdempotencyRecord {
                    outcome: IdempotencyOutcome::Done { rotation },
                    ..
                }) => return Ok(Claim::Replay(rotation)),
                Some(_) => {
                    if !wait(&mut waits, deadline).await {
                        return Err(RotationError::IdempotencyInProgress);
                    }
                }
                None => {
                    let record = IdempotencyRecord {
                        client_id: client_id.clone(),
                        created_at: now,
                        outcome: IdempotencyOutcome::Pending { rotation_id },
                    };
                    match self.ledger.write_idempotency(key, &record, version).await {
                        Ok(version) => return Ok(Claim::Claimed(version)),
                        Err(VaultError::CasMismatch) => continue,
                        Err(e) => return Err(RotationError::VaultBeforeRotation(e)),
                    }
                }
            }
        }
    }

    async fn settle_key(
        &self,
        key: &IdempotencyKey,
        client_id: &ClientId,
        outcome: IdempotencyOutcome,
        cas: u64,
    ) {
        let record = IdempotencyRecord {
            client_id: client_id.clone(),
            created_at: SystemTime::now(),
            outcome,
        };
        if let Err(e) = self.ledger.write_idempotency(key, &record, cas).await {
            // CAS mismatch: recovery settled it first. Anything else: the key stays pending and
            // recovery settles it with the intent.
            warn!(error = %e, "could not settle the idempotency key");
        }
    }

    async fn rotate_locked(
        &self,
        command: &RotateCommand,
        rotation_id: Uuid,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let lock = self.local_lock(&command.client_id);
        let result = {
            let _guard = lock.lock().await;
            self.rotate_under_lease(command, rotation_id, deadline)
                .await
        };
        drop(lock);
        self.release_local_lock(&command.client_id);
        result
    }

    async fn rotate_under_lease(
        &self,
        command: &RotateCommand,
        rotation_id: Uuid,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let client_id = &command.client_id;
        let path = self.settings.path.render(client_id);
        let intent = Intent {
            rotation_id,
            caller: command.origin.caller.clone(),
            trace_id: Some(command.origin.trace_id.clone()),
            reason: command.reason.clone(),
            started_at: SystemTime::now(),
            idempotency_key: command.idempotency_key.clone(),
        };
        let (fence, observed) = self.acquire(client_id, &path, &intent, deadline).await?;

        let issued = match self.issuer.rotate_secret(client_id).await {
            Ok(issued) => issued,
            Err(e) if e.outcome_unknown() => {
                warn!(%rotation_id, error = %e, "Auth0's answer was lost; reading the live secret back");
                return match self.heal(client_id, &path, &intent, fence).await {
                    // Vault now holds what Auth0 accepts, but a new secret cannot be told from
                    // one changed outside the service (or from the old one, on a first rotation).
                    Ok(Some(rotation)) => Err(RotationError::Recovered {
                        client_id: client_id.clone(),
                        stored: rotation.stored,
                        source: e,
                    }),
                    // Vault already held the live secret: Auth0 had not rotated, nothing changed.
                    Ok(None) => Err(e.into()),
                    Err(heal) => {
                        error!(%rotation_id, error = %heal, "NEEDS RESYNC: the live secret could not be read back yet; the reconciler will heal this client");
                        Err(RotationError::OutcomeUnknown {
                            client_id: client_id.clone(),
                            rotation_id,
                            source: e,
                        })
                    }
                };
            }
            Err(e) => {
                self.close(client_id, fence).await;
                return Err(e.into());
            }
        };
        if let Some(pause) = self.settings.pause_after_auth0 {
            tokio::time::sleep(pause).await;
        }
        let metadata = RotationMetadata {
            rotation_id,
            rotated_at: SystemTime::now(),
            reason: command.reason.clone(),
            recovered: false,
        };
        info!(%rotation_id, "Auth0 rotated the secret; storing it");
        let version = self
            .store_with_retries(&path, client_id, &issued, &metadata, observed, deadline)
            .await
            .map_err(|source| {
                error!(
                    %rotation_id,
                    vault.path = %path,
                    error = %source,
                    "NEEDS RESYNC: Auth0 rotated the secret but Vault does not hold it; \
                     the reconciler will store the live secret once the lease expires"
                );
                RotationError::StoreAfterRotation {
                    client_id: client_id.clone(),
                    rotation_id,
                    source,
                }
            })?;
        self.close(client_id, fence).await;
        info!(%rotation_id, vault.version = version, "rotation stored");
        Ok(Rotation {
            client: issued.client,
            metadata,
            stored: self.stored(path, version),
        })
    }

    /// Takes the client's lease and records the intent in one check-and-set write; returns the
    /// fence (the record's new version) and the KV version observed under the lease. An open
    /// intent without a live lease is healed first; a live lease is waited for until the deadline.
    async fn acquire(
        &self,
        client_id: &ClientId,
        path: &str,
        intent: &Intent,
        deadline: Instant,
    ) -> Result<(u64, u64), RotationError> {
        let mut waits = waits();
        loop {
            let (version, state) = self
                .ledger
                .read_state(client_id)
                .await
                .map_err(RotationError::VaultBeforeRotation)?;
            if state
                .lease
                .as_ref()
                .is_some_and(|l| l.active(SystemTime::now()))
            {
                if !wait(&mut waits, deadline).await {
                    return Err(RotationError::Busy);
                }
                continue;
            }
            if let Some(orphan) = state.intent {
                self.heal_orphan(client_id, orphan, version)
                    .await
                    .map_err(|e| RotationError::RecoveryFailed {
                        client_id: client_id.clone(),
                        source: Box::new(e),
                    })?;
                continue;
            }
            let observed = self
                .store
                .current_version(path)
                .await
                .map_err(RotationError::VaultBeforeRotation)?;
            let mine = ClientState {
                lease: Some(self.new_lease()),
                intent: Some(intent.clone()),
            };
            match self.ledger.write_state(client_id, &mine, version).await {
                Ok(fence) => return Ok((fence, observed)),
                Err(VaultError::CasMismatch) => continue,
                Err(e) => return Err(RotationError::VaultBeforeRotation(e)),
            }
        }
    }

    /// Closes the intent and releases the lease. Failing here loses nothing: the secret is
    /// stored, and a later heal finds Vault already equal to Auth0.
    async fn close(&self, client_id: &ClientId, fence: u64) {
        if let Err(e) = self
            .ledger
            .write_state(client_id, &ClientState::default(), fence)
            .await
        {
            warn!(error = %e, "could not close the intent; the reconciler will");
        }
    }

    /// The new secret exists only in memory now: one attempt always, then bounded retries of
    /// transient failures until the deadline.
    async fn store_with_retries(
        &self,
        path: &str,
        client_id: &ClientId,
        issued: &IssuedSecret,
        metadata: &RotationMetadata,
        cas: u64,
        deadline: Instant,
    ) -> Result<u64, VaultError> {
        let write = || {
            self.store
                .write_secret(path, client_id, issued, metadata, cas)
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

    fn new_lease(&self) -> Lease {
        Lease {
            holder: self.settings.replica.clone(),
            expires_at_ms: millis(SystemTime::now() + self.settings.lease_ttl),
        }
    }

    fn stored(&self, path: String, version: u64) -> StoredSecret {
        StoredSecret {
            mount: self.store.mount().to_owned(),
            path,
            version,
        }
    }

    fn local_lock(&self, client_id: &ClientId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.local.lock().expect("lock map poisoned");
        Arc::clone(map.entry(client_id.clone()).or_default())
    }

    fn release_local_lock(&self, client_id: &ClientId) {
        let mut map = self.local.lock().expect("lock map poisoned");
        if map
            .get(client_id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(client_id);
        }
    }
}

/// Delays between looks at a busy lease or key: 20 ms doubling to 500 ms, with jitter so that
/// waiting replicas do not move in lockstep.
fn waits() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleeps for the next delay; false when that would pass the deadline.
async fn wait(waits: &mut impl Iterator<Item = Duration>, deadline: Instant) -> bool {
    let delay = waits.next().unwrap_or(Duration::from_millis(500));
    if Instant::now() + delay >= deadline {
        return false;
    }
    tokio::time::sleep(delay).await;
    true
}

impl<T: SecretIssuer> SecretIssuer for Arc<T> {
    fn rotate_secret(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<IssuedSecret, Auth0Error>> + Send {
        (**self).rotate_secret(client_id)
    }

    fn read_secret(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<IssuedSecret, Auth0Error>> + Send {
        (**self).read_secret(client_id)
    }
}

impl<T: SecretStore> SecretStore for Arc<T> {
    fn mount(&self) -> &str {
        (**self).mount()
    }

    fn current_version(&self, path: &str) -> impl Future<Output = Result<u64, VaultError>> + Send {
        (**self).current_version(path)
    }

    fn read_secret(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<(u64, SecretString)>, VaultError>> + Send {
        (**self).read_secret(path)
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

    fn last_rotation(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<(RotationMetadata, u64)>, VaultError>> + Send {
        (**self).last_rotation(path)
    }
}

impl<T: Ledger> Ledger for Arc<T> {
    fn read_state(
        &self,
        client_id: &ClientId,
    ) -> impl Future<Output = Result<(u64, ClientState), VaultError>> + Send {
        (**self).read_state(client_id)
    }

    fn write_state(
        &self,
        client_id: &ClientId,
        state: &ClientState,
        cas: u64,
    ) -> impl Future<Output = Result<u64, VaultError>> + Send {
        (**self).write_state(client_id, state, cas)
    }

    fn clients(&self) -> impl Future<Output = Result<Vec<ClientId>, VaultError>> + Send {
        (**self).clients()
    }

    fn read_idempotency(
        &self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<(u64, Option<IdempotencyRecord>), VaultError>> + Send {
        (**self).read_idempotency(key)
    }

    fn write_idempotency(
        &self,
        key: &IdempotencyKey,
        record: &IdempotencyRecord,
        cas: u64,
    ) -> impl Future<Output = Result<u64, VaultError>> + Send {
        (**self).write_idempotency(key, record, cas)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use secrecy::ExposeSecret;

    use super::*;
    use crate::auth0::Client;

    /// Auth0 with one secret per client, and a switch to lose the next answer.
    #[derive(Default)]
    struct FakeAuth0 {
        rotations: AtomicUsize,
        live: Mutex<HashMap<String, String>>,
        /// Some(true): rotate, then lose the answer; Some(false): fail without rotating.
        lose_next: Mutex<Option<bool>>,
    }

    impl FakeAuth0 {
        fn live(&self, id: &str) -> Option<String> {
            self.live.lock().unwrap().get(id).cloned()
        }

        fn issued(&self, id: &ClientId) -> Result<IssuedSecret, Auth0Error> {
            let secret = self.live(id.as_str()).ok_or(Auth0Error::ClientNotFound)?;
            Ok(IssuedSecret {
                client: Client::default(),
                secret: SecretString::from(secret),
            })
        }
    }

    impl SecretIssuer for FakeAuth0 {
        async fn rotate_secret(&self, id: &ClientId) -> Result<IssuedSecret, Auth0Error> {
            let lose = self.lose_next.lock().unwrap().take();
            if lose != Some(false) {
                let n = self.rotations.fetch_add(1, Ordering::SeqCst) + 1;
                self.live
                    .lock()
                    .unwrap()
                    .insert(id.to_string(), format!("secret-{n}"));
            }
            // Let other tasks run between "Auth0" and "Vault", as the network would.
            tokio::time::sleep(Duration::from_millis(5)).await;
            match lose {
                Some(_) => Err(Auth0Error::OutcomeUnknown("502".into())),
                None => self.issued(id),
            }
        }

        async fn read_secret(&self, id: &ClientId) -> Result<IssuedSecret, Auth0Error> {
            self.issued(id)
        }
    }

    /// KV with check-and-set and scripted write failures.
    #[derive(Default)]
    struct FakeVault {
        read_error: Option<VaultError>,
        write_errors: Mutex<VecDeque<VaultError>>,
        write_attempts: AtomicUsize,
        keys: Mutex<HashMap<String, Vec<(String, RotationMetadata)>>>,
    }

    impl FakeVault {
        fn secrets(&self, path: &str) -> Vec<String> {
            let keys = self.keys.lock().unwrap();
            keys.get(path)
                .map(|v| v.iter().map(|(s, _)| s.clone()).collect())
                .unwrap_or_default()
        }
    }

    impl SecretStore for FakeVault {
        fn mount(&self) -> &str {
            "secret"
        }

        async fn current_version(&self, path: &str) -> Result<u64, VaultError> {
            if let Some(e) = &self.read_error {
                return Err(e.clone());
            }
            Ok(self.secrets(path).len() as u64)
        }

        async fn read_secret(&self, path: &str) -> Result<Option<(u64, SecretString)>, VaultError> {
            let secrets = self.secrets(path);
            Ok(secrets
                .last()
                .map(|s| (secrets.len() as u64, SecretString::from(s.clone()))))
        }

        async fn write_secret(
            &self,
            path: &str,
            _: &ClientId,
            issued: &IssuedSecret,
            metadata: &RotationMetadata,
            cas: u64,
        ) -> Result<u64, VaultError> {
            self.write_attempts.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.write_errors.lock().unwrap().pop_front() {
                return Err(e);
            }
            let mut keys = self.keys.lock().unwrap();
            let key = keys.entry(path.to_owned()).or_default();
            if key.len() as u64 != cas {
                return Err(VaultError::CasMismatch);
            }
            key.push((issued.secret.expose_secret().to_owned(), metadata.clone()));
            Ok(key.len() as u64)
        }

        async fn last_rotation(
            &self,
            path: &str,
        ) -> Result<Option<(RotationMetadata, u64)>, VaultError> {
            let keys = self.keys.lock().unwrap();
            Ok(keys
                .get(path)
                .and_then(|v| v.last().map(|(_, m)| (m.clone(), v.len() as u64))))
        }
    }

    /// Records with versions and check-and-set.
    #[derive(Default)]
    struct FakeLedger {
        records: Mutex<HashMap<String, (u64, serde_json::Value)>>,
    }

    impl FakeLedger {
        fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> (u64, Option<T>) {
            match self.records.lock().unwrap().get(key) {
                Some((v, json)) => (*v, Some(serde_json::from_value(json.clone()).unwrap())),
                None => (0, None),
            }
        }

        fn write<T: serde::Serialize>(
            &self,
            key: &str,
            value: &T,
            cas: u64,
        ) -> Result<u64, VaultError> {
            let mut records = self.records.lock().unwrap();
            let current = records.get(key).map_or(0, |(v, _)| *v);
            if current != cas {
                return Err(VaultError::CasMismatch);
            }
            records.insert(
                key.to_owned(),
                (cas + 1, serde_json::to_value(value).unwrap()),
            );
            Ok(cas + 1)
        }
    }

    impl Ledger for FakeLedger {
        async fn read_state(&self, id: &ClientId) -> Result<(u64, ClientState), VaultError> {
            let (v, s) = self.read(&format!("c/{id}"));
            Ok((v, s.unwrap_or_default()))
        }

        async fn write_state(
            &self,
            id: &ClientId,
            state: &ClientState,
            cas: u64,
        ) -> Result<u64, VaultError> {
            self.write(&format!("c/{id}"), state, cas)
        }

        async fn clients(&self) -> Result<Vec<ClientId>, VaultError> {
            let records = self.records.lock().unwrap();
            Ok(records
                .keys()
                .filter_map(|k| k.strip_prefix("c/"))
                .map(|id| ClientId::parse(id).unwrap())
                .collect())
        }

        async fn read_idempotency(
            &self,
            key: &IdempotencyKey,
        ) -> Result<(u64, Option<IdempotencyRecord>), VaultError> {
            Ok(self.read(&format!("k/{}", key.as_str())))
        }

        async fn write_idempotency(
            &self,
            key: &IdempotencyKey,
            record: &IdempotencyRecord,
            cas: u64,
        ) -> Result<u64, VaultError> {
            self.write(&format!("k/{}", key.as_str()), record, cas)
        }
    }

    type Svc = RotationService<FakeAuth0, FakeVault, FakeLedger>;

    fn service(vault: FakeVault) -> Arc<Svc> {
        let auth0 = FakeAuth0::default();
        auth0
            .live
            .lock()
            .unwrap()
            .insert("abc".into(), "secret-0".into());
        auth0
            .live
            .lock()
            .unwrap()
            .insert("other".into(), "secret-0".into());
        Arc::new(RotationService::new(
            auth0,
            vault,
            FakeLedger::default(),
            Settings {
                path: PathTemplate::parse("auth0/{client_id}", "d").unwrap(),
                replica: "test".into(),
                lease_ttl: Duration::from_secs(60),
                idempotency_window: Duration::from_secs(3600),
                allow_unrecoverable: false,
                pause_after_auth0: None,
                max_concurrent: 16,
            },
        ))
    }

    fn command(id: &str) -> RotateCommand {
        RotateCommand::parse(id, "", "").unwrap()
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    /// Vault holds what Auth0 accepts, and no intent or lease is left.
    fn settled(svc: &Svc, id: &str) {
        let stored = svc.store.secrets(&format!("auth0/{id}"));
        assert_eq!(
            stored.last(),
            svc.issuer.live(id).as_ref(),
            "Vault == Auth0"
        );
        let (_, state): (u64, Option<ClientState>) = svc.ledger.read(&format!("c/{id}"));
        assert_eq!(state.unwrap_or_default(), ClientState::default(), "closed");
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
        settled(&svc, "abc");
    }

    #[tokio::test]
    async fn a_failed_store_leaves_an_intent_that_the_reconciler_heals() {
        let svc = service(FakeVault {
            write_errors: Mutex::new(vec![VaultError::PermissionDenied("x".into())].into()),
            ..FakeVault::default()
        });
        let err = svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
        assert!(
            matches!(err, RotationError::StoreAfterRotation { .. }),
            "{err:?}"
        );
        assert_eq!(
            svc.store.write_attempts.load(Ordering::SeqCst),
            1,
            "refusals are not retried"
        );
        let (v, state) = svc
            .ledger
            .read_state(&ClientId::parse("abc").unwrap())
            .await
            .unwrap();
        let intent = state.intent.clone().expect("intent stays open");
        // The reconciler skips it while the lease is live, and heals it once it is not.
        assert_eq!(svc.reconcile_once().await, 0);
        let expired = ClientState {
            lease: None,
            ..state
        };
        svc.ledger
            .write_state(&ClientId::parse("abc").unwrap(), &expired, v)
            .await
            .unwrap();
        assert_eq!(svc.reconcile_once().await, 1);
        settled(&svc, "abc");
        let (meta, _) = svc.store.last_rotation("auth0/abc").await.unwrap().unwrap();
        assert!(meta.recovered);
        assert_eq!(meta.rotation_id, intent.rotation_id);
        assert_eq!(
            svc.issuer.rotations.load(Ordering::SeqCst),
            1,
            "healing never rotates"
        );
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
    async fn a_lost_answer_after_commit_is_healed_inline() {
        let svc = service(FakeVault::default());
        *svc.issuer.lose_next.lock().unwrap() = Some(true);
        let err = svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
        assert!(
            matches!(&err, RotationError::Recovered { stored, .. } if stored.version == 1),
            "{err:?}"
        );
        assert_eq!(svc.issuer.rotations.load(Ordering::SeqCst), 1);
        settled(&svc, "abc");
        let (meta, _) = svc.store.last_rotation("auth0/abc").await.unwrap().unwrap();
        assert!(meta.recovered);
    }

    #[tokio::test]
    async fn a_lost_answer_without_commit_changes_nothing() {
        let svc = service(FakeVault::default());
        svc.rotate(command("abc"), soon(10_000)).await.unwrap();
        *svc.issuer.lose_next.lock().unwrap() = Some(false);
        let err = svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
        assert!(
            matches!(err, RotationError::Auth0(Auth0Error::OutcomeUnknown(_))),
            "{err:?}"
        );
        assert_eq!(svc.store.secrets("auth0/abc").len(), 1, "no write");
        settled(&svc, "abc");
    }

    #[tokio::test]
    async fn a_stale_intent_leaves_the_newer_secret_in_place() {
        let svc = service(FakeVault::default());
        let id = ClientId::parse("abc").unwrap();
        let (v, _) = svc.ledger.read_state(&id).await.unwrap();
        let stale = Intent {
            rotation_id: Uuid::new_v4(),
            caller: None,
            trace_id: None,
            reason: None,
            started_at: SystemTime::now() - Duration::from_secs(3600),
            idempotency_key: None,
        };
        let newer = svc.rotate(command("abc"), soon(10_000)).await.unwrap();
        // An old rotation's intent resurfaces (e.g. restored from a replica that was cut off).
        let (v2, _) = svc.ledger.read_state(&id).await.unwrap();
        assert!(v2 > v);
        let orphan = ClientState {
            lease: None,
            intent: Some(stale),
        };
        svc.ledger.write_state(&id, &orphan, v2).await.unwrap();
        assert_eq!(svc.reconcile_once().await, 1);
        assert_eq!(svc.store.secrets("auth0/abc").len(), 1, "nothing rewritten");
        let (meta, version) = svc.store.last_rotation("auth0/abc").await.unwrap().unwrap();
        assert_eq!((meta.rotation_id, version), (newer.metadata.rotation_id, 1));
        settled(&svc, "abc");
    }

    #[tokio::test]
    async fn a_live_lease_elsewhere_makes_the_request_wait_then_abort() {
        let svc = service(FakeVault::default());
        let id = ClientId::parse("abc").unwrap();
        let held = ClientState {
            lease: Some(Lease {
                holder: "other-replica".into(),
                expires_at_ms: millis(SystemTime::now() + Duration::from_secs(60)),
            }),
            intent: None,
        };
        svc.ledger.write_state(&id, &held, 0).await.unwrap();
        let err = svc.rotate(command("abc"), soon(300)).await.unwrap_err();
        assert!(matches!(err, RotationError::Busy), "{err:?}");
        assert_eq!(svc.issuer.rotations.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn idempotency_keys_replay_and_refuse_other_clients() {
        let svc = service(FakeVault::default());
        let keyed = |id: &str| RotateCommand::parse(id, "", "deploy-7").unwrap();
        let first = svc.rotate(keyed("abc"), soon(10_000)).await.unwrap();
        let again = svc.rotate(keyed("abc"), soon(10_000)).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(svc.issuer.rotations.load(Ordering::SeqCst), 1);
        let err = svc.rotate(keyed("other"), soon(10_000)).await.unwrap_err();
        assert!(
            matches!(
                err,
                RotationError::InvalidArgument(ValidationError::IdempotencyKeyReused)
            ),
            "{err:?}"
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
        settled(&svc, "abc");
        assert!(
            svc.local.lock().unwrap().is_empty(),
            "local locks are released"
        );
    }

    #[tokio::test]
    async fn without_read_keys_rotations_are_refused_unless_accepted() {
        let svc = service(FakeVault::default());
        svc.set_recovery_available(false);
        let err = svc.rotate(command("abc"), soon(10_000)).await.unwrap_err();
        assert!(matches!(err, RotationError::RecoveryUnavailable), "{err:?}");
        assert_eq!(svc.issuer.rotations.load(Ordering::SeqCst), 0);
    }
}
