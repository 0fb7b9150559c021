//! [`RotationService`]: one rotation from a validated command to a stored secret, audited.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{sync::Notify, time::Instant};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, field, info, info_span, warn};
use uuid::Uuid;

use super::{
    drift::DriftBook,
    error::{IssuerError, RotationError, StoreError},
    ids::{ClientId, PathTemplate, Reason},
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{
        ClientState, Intent, KeySecrets, KvVersion, LastSeen, RotateCommand, Rotation,
        RotationMetadata, RotationStatus, Step, StoredSecret, Strategy, Validated, Versioned,
    },
    schedule::Schedule,
};
use crate::audit::{self, Event, Origin};

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
    /// Rotations running at once in this process; more wait until their deadline.
    pub max_concurrent: usize,
    /// How long the reconciler rests between passes, and the most it waits before retrying
    /// an intent this replica left open.
    pub reconcile_interval: Duration,
    /// Ledger records the reconciler reads per second during a pass.
    pub reconcile_rate: NonZeroU32,
    /// How long the key keeps the secret a rotation replaced (`previous_client_secret`).
    pub previous_secret_ttl: Duration,
    /// How long a staged secret is distributed before promotion, unless the request says.
    pub distribute_for: Duration,
    /// The longest a request may ask for.
    pub max_distribute_for: Duration,
    /// The service's own Auth0 application, if it has one (client credentials): never rotated,
    /// listed as not rotatable, never selected.
    pub own_client: Option<ClientId>,
    /// How many rotations each client's record keeps for ListRotations.
    pub history_kept: usize,
    /// How often the scanning replica compares every client Vault holds with Auth0; `None`:
    /// never (only GetRotationStatus with check_drift does).
    pub drift_scan_interval: Option<Duration>,
}

/// Where the schedule in force is read from (it is reloaded while the service runs).
pub type ScheduleSource = Box<dyn Fn() -> Arc<Schedule> + Send + Sync>;

pub struct RotationService<I, S, L> {
    pub(super) issuer: I,
    pub(super) store: S,
    pub(super) ledger: L,
    pub(super) settings: Settings,
    /// False once start-up learns the Auth0 token cannot read secrets back.
    recovery_available: AtomicBool,
    /// One rotation per client at a time in this process, before the Vault lease is even tried.
    pub(super) local: Mutex<HashMap<ClientId, Arc<tokio::sync::Mutex<()>>>>,
    /// Each client's ledger record as this replica last closed it (see `acquire`).
    pub(super) known: Mutex<HashMap<ClientId, Versioned<ClientState>>>,
    /// Staged rotations this replica knows of, by client: the rotation id and when it is due
    /// for promotion (see `staged`).
    pub(super) staged_due: Mutex<HashMap<ClientId, (Uuid, SystemTime)>>,
    pub(super) staged_added: Notify,
    /// Where to say that a client's record holds notifications; `None`: none are recorded.
    pub(super) notify: Mutex<Option<tokio::sync::mpsc::UnboundedSender<ClientId>>>,
    /// Intents this replica left open, by client: the rotation id it left (see `reconciler`).
    pub(super) left_open: Mutex<HashMap<ClientId, Uuid>>,
    pub(super) left_open_added: Notify,
    /// What the last drift check of each client found, and when (`drift.rs`).
    pub(super) drift: Mutex<DriftBook>,
    /// When this replica's scans last checked drift.
    pub(super) drift_scanned: Mutex<Option<SystemTime>>,
    /// The schedule in force, once one is configured (`use_schedule`).
    pub(super) schedule: std::sync::OnceLock<ScheduleSource>,
    /// When this replica started: a client with no rotation on record is due from then on.
    pub(super) started: SystemTime,
    /// Rotations and heals in flight, so that shutdown can wait for them.
    pub(super) tasks: TaskTracker,
    slots: Arc<tokio::sync::Semaphore>,
}

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    pub fn new(issuer: I, store: S, ledger: L, settings: Settings) -> Self {
        Self {
            issuer,
            store,
            ledger,
            recovery_available: AtomicBool::new(true),
            local: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            left_open: Mutex::new(HashMap::new()),
            left_open_added: Notify::new(),
            drift: Mutex::new(DriftBook::default()),
            drift_scanned: Mutex::new(None),
            staged_due: Mutex::new(HashMap::new()),
            notify: Mutex::new(None),
            staged_added: Notify::new(),
            schedule: std::sync::OnceLock::new(),
            started: SystemTime::now(),
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
        let span = info_span!(
            "rotation",
            client_id = %command.client_id,
            trace_id = %command.origin.trace_id,
            strategy = command.strategy.as_str(),
            rotation_id = field::Empty,
            outcome = field::Empty,
        );
        self.detached(deadline, span, async move {
            let _slot = slot;
            let _open = InFlight::start();
            this.rotate_audited(command, deadline).await
        })
        .await
    }

    /// Runs `work` in `span` in a task of its own, so that a caller who hangs up cannot cut it
    /// off between Auth0 and Vault. It waits for Auth0's budget as its caller would, until
    /// `deadline` (`upstream::Call`).
    /// Spawned at once, not when awaited: the work's future (several kilobytes) is boxed
    /// before it could become part of the caller's.
    pub(super) fn detached<T, W>(
        &self,
        deadline: Instant,
        span: tracing::Span,
        work: W,
    ) -> impl Future<Output = Result<T, RotationError>> + use<T, W, I, S, L>
    where
        T: Send + 'static,
        W: Future<Output = Result<T, RotationError>> + Send + 'static,
    {
        let call = crate::upstream::Call {
            deadline: Some(deadline),
            ..crate::upstream::current()
        };
        let work = Box::pin(crate::upstream::within(call, work.instrument(span)));
        let task = self.tasks.spawn(work);
        async move { task.await.map_err(|_| RotationError::Internal)? }
    }

    async fn rotate_audited(
        &self,
        command: RotateCommand,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let rotation_id = Uuid::new_v4();
        let strategy = command.strategy.as_str();
        let event = |event, outcome: &str, rotation_id: Uuid, kv_version| {
            if event != Event::Started {
                // Recorded once, at the end (a text log repeats a field recorded twice): the
                // id the caller is answered with, the first rotation's for a replay.
                let span = tracing::Span::current();
                span.record("rotation_id", field::display(rotation_id));
                span.record("outcome", outcome);
                crate::metrics::rotation(outcome, strategy, command.client_id.as_str());
            }
            audit_rotation(
                event,
                &command.origin,
                &command.client_id,
                command.reason.as_ref(),
                rotation_id,
                outcome,
                kv_version,
            );
        };
        if self.is_own(&command.client_id) {
            let refused = RotationError::OwnClient {
                client_id: command.client_id.clone(),
            };
            event(Event::Failed, refused.outcome(), rotation_id, None);
            return Err(refused);
        }
        event(Event::Started, "started", rotation_id, None);
        let result = self
            .rotate_idempotent(command.clone(), rotation_id, deadline)
            .await;
        match &result {
            Ok(r) if r.replayed => event(
                Event::Succeeded,
                "replayed",
                r.metadata.rotation_id,
                Some(r.stored.version),
            ),
            Ok(r) if r.promote_after.is_some() => event(
                Event::Succeeded,
                "staged",
                r.metadata.rotation_id,
                Some(r.stored.version),
            ),
            Ok(r) if r.metadata.recovered => event(
                Event::Recovered,
                "recovered",
                r.metadata.rotation_id,
                Some(r.stored.version),
            ),
            Ok(r) => event(
                Event::Succeeded,
                "ok",
                r.metadata.rotation_id,
                Some(r.stored.version),
            ),
            Err(RotationError::Recovered { stored, .. }) => event(
                Event::Recovered,
                "recovered",
                rotation_id,
                Some(stored.version),
            ),
            Err(e) => event(Event::Failed, e.outcome(), rotation_id, None),
        }
        result
    }

    /// The client's last stored rotation and any open intent: one read of its ledger record;
    /// with `check_drift`, also whether Vault holds the secret Auth0 accepts (two more reads).
    pub async fn status(
        &self,
        client_id: &ClientId,
        check_drift: bool,
    ) -> Result<RotationStatus, RotationError> {
        let path = self.settings.path.render(client_id);
        let state = self
            .ledger
            .read_state(client_id)
            .await
            .map_err(RotationError::Vault)?
            .value;
        let lease_active = state.leased();
        Ok(RotationStatus {
            staged: state.staged.map(|s| {
                let stored = self.stored(path.clone(), s.kv_version);
                (s, stored)
            }),
            last: state
                .last
                .map(|l| (l.metadata, self.stored(path, l.kv_version))),
            lease_active,
            open_intent: state.intent,
            drift: match check_drift {
                false => None,
                true => Some(self.check_drift(client_id).await),
            },
        })
    }

    /// A dry run (AIP-163 `validate_only`): every check a rotation makes before it calls
    /// Auth0, without calling rotate-secret or writing anything. Recovery possible, the client
    /// exists and has a secret to rotate (not private_key_jwt or mTLS), Vault may write its key,
    /// no rotation holds its lease, and (when asked) Vault is in sync with Auth0.
    pub async fn validate(&self, command: &RotateCommand) -> Result<Validated, RotationError> {
        if self.is_own(&command.client_id) {
            return Err(RotationError::OwnClient {
                client_id: command.client_id.clone(),
            });
        }
        self.recovery_possible()?;
        let client_id = &command.client_id;
        let client = self.issuer.read_client(client_id).await?;
        if client.client_authentication_methods.0.is_some() {
            return Err(IssuerError::ClientNotRotatable.into());
        }
        let path = self.settings.path.render(client_id);
        let before = RotationError::VaultBeforeRotation;
        if !self.store.writable(&path).await.map_err(before)? {
            return Err(before(StoreError::PermissionDenied(path)));
        }
        let state = self.ledger.read_state(client_id).await.map_err(before)?;
        if state.value.leased() {
            return Err(RotationError::Busy);
        }
        self.check_strategy(command, &state.value)?;
        if command.require_in_sync {
            self.require_in_sync(client_id).await?;
        }
        let version = self.store.current_version(&path).await.map_err(before)?;
        if command.strategy == Strategy::Staged && version == KvVersion::NONE {
            return Err(RotationError::NothingToStage {
                client_id: client_id.clone(),
            });
        }
        Ok(Validated {
            client: Box::new(client),
            stored: self.stored(path, version),
        })
    }

    /// Refuses a rotation the client's record does not allow: any rotation while a staged one
    /// waits (complete or cancel it first), and one whose caller's view of the last rotation is
    /// out of date (`if_last`).
    pub(super) fn check_strategy(
        &self,
        command: &RotateCommand,
        state: &ClientState,
    ) -> Result<(), RotationError> {
        if let Some(LastSeen(seen)) = command.if_last
            && state.last.as_ref().map(|l| l.metadata.rotation_id) != seen
        {
            return Err(RotationError::Superseded {
                client_id: command.client_id.clone(),
            });
        }
        if let Some(staged) = &state.staged {
            return Err(RotationError::StagedPending {
                client_id: command.client_id.clone(),
                rotation_id: staged.rotation_id,
            });
        }
        Ok(())
    }

    /// Refuses when start-up learned that a lost answer could not be read back, unless the
    /// operator accepted that risk.
    pub(super) fn recovery_possible(&self) -> Result<(), RotationError> {
        if !self.recovery_available.load(Ordering::Relaxed) && !self.settings.allow_unrecoverable {
            return Err(RotationError::RecoveryUnavailable);
        }
        Ok(())
    }

    /// Refuses when Vault does not hold the secret Auth0 accepts now.
    async fn require_in_sync(&self, client_id: &ClientId) -> Result<(), RotationError> {
        match self.in_sync(client_id).await? {
            true => Ok(()),
            false => Err(RotationError::Drifted {
                client_id: client_id.clone(),
            }),
        }
    }

    /// Whether Vault's `client_secret` is the secret Auth0 accepts now.
    pub(super) async fn in_sync(&self, client_id: &ClientId) -> Result<bool, RotationError> {
        let live = self.issuer.read_secret(client_id).await?;
        let path = self.settings.path.render(client_id);
        let held = self
            .store
            .read_secret(&path)
            .await
            .map_err(RotationError::Vault)?;
        Ok(held.is_some_and(|h| h.value.holds(&live.secret)))
    }

    pub(super) async fn rotate_under_lease(
        &self,
        command: &RotateCommand,
        rotation_id: Uuid,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let client_id = &command.client_id;
        let path = self.settings.path.render(client_id);
        let intent = Intent {
            rotation_id,
            step: match command.strategy {
                Strategy::Immediate => Step::Rotate,
                Strategy::Staged => Step::Stage,
            },
            caller: command.origin.caller.clone(),
            trace_id: Some(command.origin.trace_id.clone()),
            reason: command.reason.clone(),
            started_at: SystemTime::now(),
            idempotency_key: command.idempotency_key.clone(),
        };
        let lease = self.acquire(client_id, &path, &intent, deadline).await?;
        // Under the lease, no rotation of this client is halfway: a difference is real.
        let refused = match self.check_strategy(command, &lease.before) {
            Err(refusal) => Some(refusal),
            Ok(()) if command.require_in_sync => self.require_in_sync(client_id).await.err(),
            Ok(()) => None,
        };
        if let Some(refusal) = refused {
            let closed = self.with_failure(lease.before, client_id, rotation_id, &refusal);
            self.close(client_id, rotation_id, lease.fence, closed)
                .await;
            return Err(refusal);
        }
        if command.strategy == Strategy::Staged {
            return self.stage(command, &intent, &path, lease, deadline).await;
        }

        // The key is read while Auth0 rotates, so the read adds no wait: its secret becomes the
        // previous one. Without a previous secret to keep, the read is skipped.
        let keep_previous = !self.settings.previous_secret_ttl.is_zero();
        let (issued, before) = tokio::join!(self.issuer.rotate_secret(client_id), async {
            match keep_previous {
                true => self.store.read_secret(&path).await,
                false => Ok(None),
            }
        });
        let issued = match issued {
            Ok(issued) => issued,
            Err(e) if e.outcome_unknown() => {
                warn!(%rotation_id, error = %e, "Auth0's answer was lost; reading the live secret back");
                let healed = self
                    .heal(client_id, &path, &intent, lease.fence, lease.before)
                    .await;
                return match healed {
                    // Vault now holds what Auth0 accepts, and Auth0's secret has changed: the
                    // caller's goal is met, and an error would make retry policies rotate a
                    // second time. `recovered` says the secret was read back.
                    Ok(Some(healed)) if healed.rotated => Ok(healed.rotation),
                    // Vault held no secret before: the one read back may be the old one, so
                    // the caller must not take this for a rotation.
                    Ok(Some(healed)) => Err(RotationError::Recovered {
                        client_id: client_id.clone(),
                        stored: healed.rotation.stored,
                        source: e,
                    }),
                    // Vault already held the live secret: Auth0 had not rotated, nothing changed.
                    Ok(None) => Err(e.into()),
                    Err(heal) => {
                        error!(%rotation_id, error = %heal, "NEEDS RESYNC: the live secret could not be read back yet; this replica retries the heal shortly");
                        Err(RotationError::OutcomeUnknown {
                            client_id: client_id.clone(),
                            rotation_id,
                            source: e,
                        })
                    }
                };
            }
            Err(e) => {
                let e = RotationError::from(e);
                let closed = self.with_failure(lease.before, client_id, rotation_id, &e);
                self.close(client_id, rotation_id, lease.fence, closed)
                    .await;
                return Err(e);
            }
        };
        let before = before.unwrap_or_else(|e| {
            warn!(error = %e, "could not read the key's secret; the new one is stored without previous_client_secret");
            None
        });
        let secrets = KeySecrets::replaced(
            before.as_ref().map(|b| &b.value),
            issued.secret.clone(),
            self.settings.previous_secret_ttl,
        );
        let metadata = RotationMetadata {
            rotation_id,
            rotated_at: SystemTime::now(),
            reason: command.reason.clone(),
            caller: command.origin.caller.clone(),
            recovered: false,
            strategy: Strategy::Immediate,
        };
        debug!(%rotation_id, "Auth0 rotated the secret; storing it");
        let rotation = self
            .store_and_close(
                client_id,
                path,
                &secrets,
                lease.observed,
                &lease,
                issued.client,
                metadata,
                deadline,
            )
            .await?;
        info!(%rotation_id, vault.version = %rotation.stored.version, "rotation stored");
        Ok(rotation)
    }

    /// Whether `client_id` is the service's own Auth0 application.
    pub fn is_own(&self, client_id: &ClientId) -> bool {
        self.settings.own_client.as_ref() == Some(client_id)
    }

    pub(super) fn stored(&self, path: String, version: KvVersion) -> StoredSecret {
        StoredSecret {
            mount: self.store.mount().to_owned(),
            path,
            version,
        }
    }
}

/// A rotation in progress, counted in `secret_rotator_open_intents` while it lives.
pub(super) struct InFlight;

impl InFlight {
    pub(super) fn start() -> Self {
        crate::metrics::open_intents(1);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::open_intents(-1);
    }
}

/// One audit event about a rotation, in the protocol's terms.
pub(super) fn audit_rotation(
    event: Event,
    origin: &Origin,
    client_id: &ClientId,
    reason: Option<&Reason>,
    rotation_id: Uuid,
    outcome: &str,
    kv_version: Option<KvVersion>,
) {
    audit::rotation(
        event,
        origin,
        client_id.as_str(),
        reason.map(Reason::as_str),
        rotation_id,
        outcome,
        kv_version.map(KvVersion::get),
    );
}
