//! [`RotationService`]: what the protocol offers its callers (the gRPC layer, the webhook, the
//! background work above it). It composes the pipeline (ports, settings, locks, the intents left
//! open, the promotion timer, the outbox) with what only the service keeps: the drift book, the
//! schedule in force, the rotation slots and the tasks shutdown waits for. Each RPC is one step
//! of `steps/`, run in a task of its own and finished through the pipeline.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use tokio::{sync::Semaphore, time::Instant};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field, info_span};
use uuid::Uuid;

use super::{
    command::RotateCommand,
    drift::{self, DriftBook},
    error::{RotationError, StoreError},
    history::HistoryEntry,
    ids::{ClientId, Reason, ValidationError},
    notify::Notification,
    outbox,
    outcome::Outcome,
    pipeline::{Pipeline, Report},
    ports::{BoxFuture, Ledger, SecretIssuer, SecretStore},
    previous::RolledBackRotation,
    records::{Drift, KvVersion, Rotation, RotationStatus, Strategy, Validated},
    schedule::Schedule,
    settings::Settings,
    steps::{self, Cancelled},
};
use crate::audit::Origin;

/// Where the schedule in force is read from (it is reloaded while the service runs).
pub type ScheduleSource = Box<dyn Fn() -> Arc<Schedule> + Send + Sync>;

pub struct RotationService<I, S, L> {
    pipeline: Pipeline<I, S, L>,
    drift: DriftBook,
    /// The schedule in force, once one is configured (`use_schedule`).
    schedule: OnceLock<ScheduleSource>,
    /// When this replica started: a client with no rotation on record is due from then on.
    started: SystemTime,
    /// Rotations and heals in flight, so that shutdown can wait for them.
    tasks: TaskTracker,
    slots: Arc<Semaphore>,
}

/// A step on an earlier rotation: which, who asked, by when, and the strategy it counts as.
struct StepOf {
    client_id: ClientId,
    rotation_id: Uuid,
    origin: Origin,
    deadline: Instant,
    strategy: Strategy,
}

/// How an answer ends its step.
trait Answer {
    fn outcome(&self) -> Outcome;
    /// Who asked for the rotation it answers about, and why (a promotion: who staged it).
    fn requested(&self) -> (Option<&str>, Option<&Reason>) {
        (None, None)
    }
    /// The rotation it answers about (an earlier one for a replay).
    fn rotation_id(&self) -> Uuid;
    fn kv_version(&self) -> KvVersion;
}

impl Answer for Rotation {
    fn outcome(&self) -> Outcome {
        match self {
            r if r.replayed => Outcome::Replayed,
            // A key rotation: consumers switched when it answers, the old key retired later.
            r if r.metadata.strategy == Strategy::Key && r.promote_after.is_some() => {
                Outcome::Rotated
            }
            r if r.metadata.strategy == Strategy::Key => Outcome::Retired,
            r if r.promote_after.is_some() => Outcome::Staged,
            r if r.metadata.recovered => Outcome::Recovered,
            r if r.metadata.strategy == Strategy::Staged => Outcome::Promoted,
            _ => Outcome::Rotated,
        }
    }
    fn requested(&self) -> (Option<&str>, Option<&Reason>) {
        (
            self.metadata.caller.as_deref(),
            self.metadata.reason.as_ref(),
        )
    }
    fn rotation_id(&self) -> Uuid {
        self.metadata.rotation_id
    }
    fn kv_version(&self) -> KvVersion {
        self.stored.version
    }
}

impl Answer for Cancelled {
    fn outcome(&self) -> Outcome {
        Outcome::Cancelled
    }
    fn rotation_id(&self) -> Uuid {
        self.rotation_id
    }
    fn kv_version(&self) -> KvVersion {
        self.stored.version
    }
}

impl Answer for RolledBackRotation {
    fn outcome(&self) -> Outcome {
        match self.replayed {
            true => Outcome::Replayed,
            false => Outcome::RolledBack,
        }
    }
    fn rotation_id(&self) -> Uuid {
        self.rotation_id
    }
    fn kv_version(&self) -> KvVersion {
        self.stored.version
    }
}

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    pub fn new(issuer: I, store: S, ledger: L, settings: Settings) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
            pipeline: Pipeline::new(issuer, store, ledger, settings),
            drift: DriftBook::default(),
            schedule: OnceLock::new(),
            started: SystemTime::now(),
            tasks: TaskTracker::new(),
        }
    }

    pub(super) fn pipeline(&self) -> &Pipeline<I, S, L> {
        &self.pipeline
    }

    pub(super) fn drift_book(&self) -> &DriftBook {
        &self.drift
    }

    /// Start-up reports whether secrets can be read back from Auth0.
    pub fn set_recovery_available(&self, available: bool) {
        self.pipeline.set_recovery_available(available);
    }

    /// Waits until every rotation and heal started so far has finished.
    pub async fn drained(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Stops cleanly, after [`Self::drained`]: when this replica leaves nothing to anyone (no
    /// intent open, no staged rotation or key overlap on its timer, no webhook notifications,
    /// which only a scan would find again), it withdraws its heartbeat, so that no replica
    /// reads every client record looking for what it left.
    pub async fn leave(&self) {
        let p = self.pipeline();
        if p.left_open.len() == 0 && p.timer.is_empty() && !p.outbox.enabled() {
            super::presence::leave(p, p.incarnation).await;
        }
    }

    /// RotateSecret: rotates one client (or stages its next secret).
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
            let rotation_id = Uuid::new_v4();
            let report = Report {
                origin: &command.origin,
                client_id: &command.client_id,
                reason: command.reason.as_ref(),
                strategy: command.strategy,
            };
            let p = &this.pipeline;
            let result = match p.refuses_own(&command.client_id) {
                true => Err(RotationError::OwnClient {
                    client_id: command.client_id.clone(),
                }),
                false => {
                    p.finish(&report, rotation_id, Outcome::Started, None);
                    // The service's own credential overlaps or is staged, never replaced at
                    // once: replicas read it from Vault, and the new one is proved first.
                    let command = match p.is_own(&command.client_id) {
                        true => RotateCommand {
                            strategy: Strategy::Staged,
                            ..command.clone()
                        },
                        false => command.clone(),
                    };
                    steps::rotate(p, &command, rotation_id, deadline).await
                }
            };
            // Recorded once, at the end (a text log repeats a field recorded twice): the id
            // the caller is answered with, the first rotation's for a replay.
            let answered = result.as_ref().map_or(rotation_id, Answer::rotation_id);
            tracing::Span::current().record("rotation_id", field::display(answered));
            // A client without a secret was rotated by key, whatever the strategy asked.
            let report = Report {
                strategy: result
                    .as_ref()
                    .map_or(report.strategy, |r| r.metadata.strategy),
                ..report
            };
            this.finish(&report, rotation_id, &result);
            result
        })
        .await
    }

    /// CompleteRotation: promotes staged rotation `rotation_id` now. Repeated after it was
    /// promoted, answers the promotion again (`replayed`).
    pub async fn complete(
        self: &Arc<Self>,
        client_id: ClientId,
        rotation_id: Uuid,
        origin: Origin,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let span = info_span!(
            "promotion",
            %client_id,
            %rotation_id,
            trace_id = %origin.trace_id,
            outcome = field::Empty,
        );
        let step = StepOf {
            client_id,
            rotation_id,
            origin,
            deadline,
            strategy: Strategy::Staged,
        };
        self.detached_step(span, step, move |p, client_id, origin| {
            Box::pin(steps::promote(p, client_id, rotation_id, origin, deadline))
        })
        .await
    }

    /// CancelRotation: removes staged rotation `rotation_id`'s secret from the key. Repeated
    /// after it was cancelled, answers the same.
    pub async fn cancel(
        &self,
        client_id: &ClientId,
        rotation_id: Uuid,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<Cancelled, RotationError> {
        let result = steps::cancel(&self.pipeline, client_id, rotation_id, origin, deadline).await;
        let report = Report {
            origin,
            client_id,
            reason: None,
            strategy: Strategy::Staged,
        };
        self.finish(&report, rotation_id, &result);
        result
    }

    /// RollbackRotation: undoes rotation `rotation_id` (the client's last) while Vault keeps
    /// the secret before it. Repeated after it was rolled back, answers the same.
    pub async fn rollback(
        self: &Arc<Self>,
        client_id: ClientId,
        rotation_id: Uuid,
        origin: Origin,
        deadline: Instant,
    ) -> Result<RolledBackRotation, RotationError> {
        let span = info_span!(
            "rollback",
            %client_id,
            %rotation_id,
            trace_id = %origin.trace_id,
            outcome = field::Empty,
        );
        let step = StepOf {
            client_id,
            rotation_id,
            origin,
            deadline,
            strategy: Strategy::Immediate,
        };
        self.detached_step(span, step, move |p, client_id, origin| {
            Box::pin(steps::rollback(p, client_id, rotation_id, origin, deadline))
        })
        .await
    }

    /// A step on an earlier rotation (a promotion, a rollback) in a task of its own, so that a
    /// caller hanging up cannot cut it off between Auth0 and Vault; finished through the
    /// pipeline.
    async fn detached_step<T, F>(
        self: &Arc<Self>,
        span: tracing::Span,
        step: StepOf,
        run: F,
    ) -> Result<T, RotationError>
    where
        T: Answer + Send + 'static,
        F: for<'a> FnOnce(
                &'a Pipeline<I, S, L>,
                &'a ClientId,
                &'a Origin,
            ) -> BoxFuture<'a, Result<T, RotationError>>
            + Send
            + 'static,
    {
        let this = Arc::clone(self);
        self.detached(step.deadline, span, async move {
            let result = run(&this.pipeline, &step.client_id, &step.origin).await;
            // Audited with the earlier rotation's reason, and on behalf of its caller when
            // another finishes it (the promotion timer, an operator).
            let (requested_by, reason) = result.as_ref().map_or((None, None), T::requested);
            let origin = Origin {
                on_behalf_of: requested_by
                    .filter(|by| step.origin.caller.as_deref() != Some(*by))
                    .map(str::to_owned),
                ..step.origin.clone()
            };
            let report = Report {
                origin: &origin,
                client_id: &step.client_id,
                reason,
                strategy: step.strategy,
            };
            this.finish(&report, step.rotation_id, &result);
            result
        })
        .await
    }

    /// The end of a step that answered `result`: through the pipeline's one `finish`.
    fn finish<T: Answer>(
        &self,
        report: &Report<'_>,
        rotation_id: Uuid,
        result: &Result<T, RotationError>,
    ) {
        let (rotation_id, outcome, version) = match result {
            Ok(answer) => (
                answer.rotation_id(),
                answer.outcome(),
                Some(answer.kv_version()),
            ),
            Err(RotationError::Recovered { stored, .. }) => {
                (rotation_id, Outcome::Recovered, Some(stored.version))
            }
            Err(e) => (rotation_id, Outcome::of(e), None),
        };
        self.pipeline.finish(report, rotation_id, outcome, version);
    }

    /// Runs `work` in `span` in a task of its own, so that a caller who hangs up cannot cut it
    /// off between Auth0 and Vault. It waits for Auth0's budget as its caller would, until
    /// `deadline` (`work::Work`).
    /// Spawned at once, not when awaited: the work's future (several kilobytes) is boxed
    /// before it could become part of the caller's.
    fn detached<T, W>(
        &self,
        deadline: Instant,
        span: tracing::Span,
        work: W,
    ) -> impl Future<Output = Result<T, RotationError>> + use<T, W, I, S, L>
    where
        T: Send + 'static,
        W: Future<Output = Result<T, RotationError>> + Send + 'static,
    {
        let context = crate::work::Work {
            deadline: Some(deadline),
            ..crate::work::current()
        };
        let work = Box::pin(crate::work::within(context, work.instrument(span)));
        let task = self.tasks.spawn(work);
        async move { task.await.map_err(|_| RotationError::Internal)? }
    }

    /// The distribution time a request of `strategy` asked for, within bounds, or the default;
    /// an immediate request may not name one.
    pub fn distribute_for(
        &self,
        strategy: Strategy,
        requested: Option<Duration>,
    ) -> Result<Duration, ValidationError> {
        self.pipeline.distribute_for(strategy, requested)
    }

    /// The client's last stored rotation and any open intent: one read of its ledger record;
    /// with `check_drift`, also whether Vault holds the secret Auth0 accepts (two more reads).
    pub async fn status(
        &self,
        client_id: &ClientId,
        check_drift: bool,
    ) -> Result<RotationStatus, RotationError> {
        let p = &self.pipeline;
        let path = p.path(client_id);
        let state = p
            .ledger
            .read_state(client_id)
            .await
            .map_err(RotationError::Vault)?
            .value;
        let lease_active = state.leased();
        Ok(RotationStatus {
            overlap: state.overlap,
            staged: state.staged.map(|s| {
                let stored = p.stored(path.clone(), s.kv_version);
                (s, stored)
            }),
            last: state
                .last
                .map(|l| (l.metadata, p.stored(path, l.kv_version))),
            lease_active,
            open_intent: state.intent,
            drift: match check_drift {
                false => None,
                true => Some(drift::check(p, &self.drift, client_id).await),
            },
        })
    }

    /// ListRotations: the client's last rotations, newest first. One read of its record.
    pub async fn history(&self, client_id: &ClientId) -> Result<Vec<HistoryEntry>, RotationError> {
        let state = self
            .pipeline
            .ledger
            .read_state(client_id)
            .await
            .map_err(RotationError::Vault)?;
        Ok(state.value.history)
    }

    /// A dry run (AIP-163 `validate_only`): every check a rotation makes before it calls
    /// Auth0, without calling rotate-secret or writing anything. Recovery possible, the client
    /// exists, Vault may write its key, no rotation holds its lease, and (when asked) Vault is
    /// in sync with Auth0; for a client with a key or a certificate, what its key rotation
    /// checks (method, attached credentials, the pool of 4, the credential scopes it reads).
    pub async fn validate(&self, command: &RotateCommand) -> Result<Validated, RotationError> {
        let p = &self.pipeline;
        let client_id = &command.client_id;
        if p.refuses_own(client_id) {
            return Err(RotationError::OwnClient {
                client_id: client_id.clone(),
            });
        }
        p.recovery_possible()?;
        let client = p.issuer.read_client(client_id).await?;
        let path = p.path(client_id);
        let keyed = client.client_authentication_methods.0.is_some();
        let before = RotationError::VaultBeforeRotation;
        if !p.store.writable(&path).await.map_err(before)? {
            return Err(before(StoreError::PermissionDenied(path)));
        }
        let state = p.ledger.read_state(client_id).await.map_err(before)?;
        if state.value.leased() {
            return Err(RotationError::Busy);
        }
        steps::check_strategy(command, &state.value)?;
        if keyed {
            steps::check_key_rotation(p, client_id, &client, &path).await?;
            let version = p.store.current_version(&path).await.map_err(before)?;
            return Ok(Validated {
                client: Box::new(client),
                stored: p.stored(path, version),
            });
        }
        if command.require_in_sync {
            steps::require_in_sync(p, client_id).await?;
        }
        let version = p.store.current_version(&path).await.map_err(before)?;
        if command.strategy == Strategy::Staged && version == KvVersion::NONE {
            return Err(RotationError::NothingToStage {
                client_id: client_id.clone(),
            });
        }
        Ok(Validated {
            client: Box::new(client),
            stored: p.stored(path, version),
        })
    }

    /// Whether `client_id` is the service's own Auth0 application.
    pub fn is_own(&self, client_id: &ClientId) -> bool {
        self.pipeline.is_own(client_id)
    }

    /// What the last drift check of the client found, if one ran on this replica.
    pub fn known_drift(&self, client_id: &ClientId) -> Option<Drift> {
        self.drift.known(client_id)
    }

    /// Reads the schedule in force from `source` from now on (ListClients and the scheduler).
    pub fn use_schedule(&self, source: ScheduleSource) {
        let _ = self.schedule.set(source);
        // From the first heartbeat on, which may come before the scheduler's first turn.
        self.pipeline().seat.want(true);
    }

    /// The schedule in force, if one is configured.
    pub(super) fn schedule(&self) -> Option<Arc<Schedule>> {
        self.schedule.get().map(|source| source())
    }

    /// When this replica started.
    pub(super) fn started(&self) -> SystemTime {
        self.started
    }

    /// Starts recording notifications; the receiver gets the id of every client whose record
    /// has new ones to deliver.
    pub fn subscribe(&self) -> tokio::sync::mpsc::UnboundedReceiver<ClientId> {
        self.pipeline.outbox.subscribe()
    }

    /// The notifications waiting in `client_id`'s record.
    pub async fn pending_notifications(
        &self,
        client_id: &ClientId,
    ) -> Result<Vec<Notification>, RotationError> {
        outbox::pending(&self.pipeline.ledger, client_id).await
    }

    /// Removes delivered notifications from the record, unless a rotation holds it (false:
    /// try again later).
    pub async fn acknowledge(
        &self,
        client_id: &ClientId,
        delivered: &[Uuid],
    ) -> Result<bool, RotationError> {
        outbox::acknowledge(&self.pipeline.ledger, client_id, delivered).await
    }
}

/// A rotation in progress, counted in `secret_rotator_open_intents` while it lives.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        crate::metrics::open_intents(1);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::open_intents(-1);
    }
}
