//! The pipeline every step of every kind of rotation runs through:
//!
//! 1. **acquire**: the client's lock in this process, then its lease in the ledger, taken with
//!    the step's intent in one check-and-set write (fenced by the record's version);
//! 2. **act**: the step's own calls to Auth0 and Vault (`steps/`);
//! 3. **store** what Auth0 now holds ([`Pipeline::store_and_close`]), or **refuse**
//!    ([`Pipeline::refuse`]);
//! 4. **close**: the intent closed and the lease released in one check-and-set write, which
//!    also settles the step's history entry and records its notification
//!    ([`Pipeline::close`]);
//! 5. **finish**: the step's metric, audit event and span outcome ([`Pipeline::finish`]).
//!
//! A step that cannot close leaves its intent open; `recovery.rs` heals it by its step.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime},
};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tracing::{error, field, warn};
use uuid::Uuid;

use super::{
    ages::Ages,
    client::Client,
    error::{RotationError, StoreError},
    ids::{ClientId, Reason, ValidationError},
    left_open::LeftOpen,
    locks::Locks,
    notify::{Notification, NotificationKind},
    outbox::Outbox,
    outcome::Outcome,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{
        Drift, Intent, KeySecrets, KvVersion, LastRotation, Lease, Rotation, RotationMetadata,
        StoredSecret, Strategy, Versioned, millis,
    },
    seat::Seat,
    settings::Settings,
    state::{Acquired, ClientState},
    timer::PromotionTimer,
};
use crate::audit::{self, Origin};

/// The ports, the settings and the per-client state every step shares.
pub(super) struct Pipeline<I, S, L> {
    pub(super) issuer: I,
    pub(super) store: S,
    pub(super) ledger: L,
    pub(super) settings: Settings,
    /// False once start-up learns the Auth0 token cannot read secrets back.
    recovery_available: AtomicBool,
    pub(super) locks: Locks,
    pub(super) left_open: LeftOpen,
    pub(super) timer: PromotionTimer,
    pub(super) outbox: Outbox,
    /// This start of the replica: its heartbeat says which (`presence.rs`).
    pub(super) incarnation: uuid::Uuid,
    /// The scheduler lease, as this replica's beats hold it (`seat.rs`).
    pub(super) seat: Seat,
    /// How old the secrets on record are (`ages.rs`).
    pub(super) ages: std::sync::Arc<Ages>,
}

/// The lease, or the open intent of a dead step standing in its way.
pub(super) enum Taken {
    Lease(Acquired),
    /// An intent is open without a live lease: it must be healed before the lease is taken.
    Orphan(Versioned<ClientState>),
}

/// An open intent whose lease its healer holds (`fence`), and the record without lease and
/// intent (`before`): what every heal works on.
pub(super) struct Open<'a> {
    pub client_id: &'a ClientId,
    pub path: &'a str,
    pub intent: &'a Intent,
    pub fence: KvVersion,
    pub before: ClientState,
}

/// Who asked for a step and what it is about: what its end reports.
pub(super) struct Report<'a> {
    pub origin: &'a Origin,
    pub client_id: &'a ClientId,
    pub reason: Option<&'a Reason>,
    pub strategy: Strategy,
}

/// What a closing step left in the key, for its history entry and notification.
pub(super) enum Left<'a> {
    /// A rotation it stored (or staged).
    Rotation(&'a Rotation),
    /// The key as it left it without a rotation (a staged secret withdrawn), and who asked.
    Key {
        stored: StoredSecret,
        caller: Option<String>,
    },
    Nothing,
}

impl<I: SecretIssuer, S: SecretStore, L: Ledger> Pipeline<I, S, L> {
    pub(super) fn new(issuer: I, store: S, ledger: L, settings: Settings) -> Self {
        Self {
            ages: Ages::new(settings.max_secret_age),
            issuer,
            store,
            ledger,
            settings,
            recovery_available: AtomicBool::new(true),
            locks: Locks::default(),
            left_open: LeftOpen::default(),
            timer: PromotionTimer::default(),
            outbox: Outbox::default(),
            incarnation: uuid::Uuid::new_v4(),
            seat: Seat::default(),
        }
    }

    pub(super) fn set_recovery_available(&self, available: bool) {
        self.recovery_available.store(available, Ordering::Relaxed);
    }

    /// Refuses when start-up learned that a lost answer could not be read back, unless the
    /// operator accepted that risk.
    pub(super) fn recovery_possible(&self) -> Result<(), RotationError> {
        if !self.recovery_available.load(Ordering::Relaxed) && !self.settings.allow_unrecoverable {
            return Err(RotationError::RecoveryUnavailable);
        }
        Ok(())
    }

    /// Whether `client_id` is the service's own Auth0 application.
    pub(super) fn is_own(&self, client_id: &ClientId) -> bool {
        self.settings.own_client.as_ref() == Some(client_id)
    }

    /// Whether `client_id` is the service's own application and may not be rotated: its
    /// credential is not in Vault, where every replica would pick a new one up.
    pub(super) fn refuses_own(&self, client_id: &ClientId) -> bool {
        self.is_own(client_id) && self.settings.own_credential_path.is_none()
    }

    /// Where a client's key is: the template's path, or for the service's own application
    /// the key its credential is read from.
    pub(super) fn path(&self, client_id: &ClientId) -> String {
        match &self.settings.own_credential_path {
            Some(own) if self.is_own(client_id) => own.clone(),
            _ => self.settings.path.render(client_id),
        }
    }

    pub(super) fn stored(&self, path: String, version: KvVersion) -> StoredSecret {
        StoredSecret {
            mount: self.store.mount().to_owned(),
            path,
            version,
        }
    }

    pub(super) fn new_lease(&self) -> Lease {
        Lease {
            holder: self.settings.replica.clone(),
            expires_at_ms: millis(SystemTime::now() + self.settings.lease_ttl),
        }
    }

    /// Whether Vault's `client_secret` is the secret Auth0 accepts now (`NotHeld`, without
    /// asking Auth0, when Vault holds none).
    pub(super) async fn drift(&self, client_id: &ClientId) -> Result<Drift, RotationError> {
        let held = self
            .store
            .read_secret(&self.path(client_id))
            .await
            .map_err(RotationError::Vault)?;
        let Some(held) = held else {
            return Ok(Drift::NotHeld);
        };
        let live = self.issuer.read_secret(client_id).await?;
        Ok(match held.value.holds(&live.secret) {
            true => Drift::InSync,
            false => Drift::Drifted,
        })
    }

    /// Runs `work` (one step of rotation `rotation_id`) while holding the client's local lock,
    /// and remembers the intent if the step leaves it open.
    pub(super) async fn locked<T>(
        &self,
        client_id: &ClientId,
        rotation_id: Uuid,
        work: impl Future<Output = Result<T, RotationError>>,
    ) -> Result<T, RotationError> {
        let result = self.locks.holding(client_id, work).await;
        if result
            .as_ref()
            .is_err_and(RotationError::leaves_open_intent)
        {
            self.left_open.note(client_id, rotation_id);
        }
        result
    }

    /// Takes the client's lease and records `intent` in one check-and-set write; a live lease
    /// is waited for (`waits`) until the deadline; an open intent without one is handed back
    /// to be healed first.
    ///
    /// The record as this replica last closed it is kept in memory: if nobody has written it
    /// since, it is still closed, and the check-and-set write proves that without a read. Any
    /// other write (another replica, a heal) makes the write fail, and the record is read.
    pub(super) async fn acquire(
        &self,
        client_id: &ClientId,
        path: &str,
        intent: &super::records::Intent,
        deadline: Instant,
        waits: &mut impl Iterator<Item = Duration>,
    ) -> Result<Taken, RotationError> {
        let mut known = self.locks.take_known(client_id);
        loop {
            let record = match known.take() {
                Some(record) => record,
                None => self
                    .ledger
                    .read_state(client_id)
                    .await
                    .map_err(RotationError::VaultBeforeRotation)?,
            };
            if record.value.leased() {
                if !wait(waits, deadline).await {
                    return Err(RotationError::Busy);
                }
                continue;
            }
            if record.value.intent.is_some() {
                return Ok(Taken::Orphan(record));
            }
            let mut before = record.value;
            before.history_started(intent, self.settings.history_kept);
            // A staged rotation recorded the key's version when it staged its secret.
            let recorded = before
                .staged
                .as_ref()
                .map(|s| s.kv_version)
                .or(before.last.as_ref().map(|l| l.kv_version));
            let observed = match recorded {
                Some(version) => version,
                None => self
                    .store
                    .current_version(path)
                    .await
                    .map_err(RotationError::VaultBeforeRotation)?,
            };
            let mine = ClientState {
                lease: Some(self.new_lease()),
                intent: Some(intent.clone()),
                ..before.clone()
            };
            match self
                .ledger
                .write_state(client_id, &mine, record.version)
                .await
            {
                Ok(fence) => {
                    return Ok(Taken::Lease(Acquired {
                        fence,
                        observed,
                        before,
                    }));
                }
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(RotationError::VaultBeforeRotation(e)),
            }
        }
    }

    /// `closed` with the history entry of rotation `rotation_id` settled as `outcome` and the
    /// notification of `outcome` recorded: what a step leaves in the record it closes.
    pub(super) fn settle(
        &self,
        mut closed: ClientState,
        client_id: &ClientId,
        rotation_id: Uuid,
        outcome: Outcome,
        left: Left<'_>,
    ) -> ClientState {
        match &left {
            Left::Rotation(rotation) => closed.history_stored(rotation, outcome),
            _ => closed.history_failed(rotation_id, outcome),
        }
        let Some(kind) = outcome.notification() else {
            return closed;
        };
        let mut notification = Notification::new(kind, client_id, Some(rotation_id));
        if kind == NotificationKind::Failed {
            notification.outcome = Some(outcome.name().to_owned());
        }
        match left {
            Left::Rotation(rotation) => {
                let m = &rotation.metadata;
                notification.strategy = Some(m.strategy);
                notification.stored = Some(rotation.stored.clone());
                notification.caller = m.caller.clone();
                notification.reason = m.reason.clone();
                notification.promote_after = rotation.promote_after;
            }
            Left::Key { stored, caller } => {
                notification.stored = Some(stored);
                notification.caller = caller;
            }
            Left::Nothing => {}
        }
        self.outbox.record(&mut closed, notification);
        closed
    }

    /// Closes the intent of `rotation_id` and releases the lease, leaving the record `closed`
    /// (without lease and intent). A failure is logged and the intent noted for healing: the
    /// heal this replica retries at once finds Vault as the step left it.
    pub(super) async fn close(
        &self,
        client_id: &ClientId,
        rotation_id: Uuid,
        fence: KvVersion,
        closed: ClientState,
    ) -> Result<(), StoreError> {
        let mut closed = closed.settled();
        closed.history_closed(rotation_id);
        match self.ledger.write_state(client_id, &closed, fence).await {
            Ok(version) => {
                self.ages.seen(client_id, &closed);
                if !closed.notifications.is_empty() {
                    self.outbox.written(client_id);
                }
                self.locks.remember(
                    client_id,
                    Versioned {
                        version,
                        value: closed,
                    },
                );
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "could not close the intent; healing it shortly");
                self.left_open.note(client_id, rotation_id);
                Err(e)
            }
        }
    }

    /// Refuses the step holding `lease`: the record is closed as it was, with the failure in
    /// the history and notified (and the drift found, when that was why), and the error
    /// returned.
    pub(super) async fn refuse<T>(
        &self,
        client_id: &ClientId,
        rotation_id: Uuid,
        lease: Acquired,
        refusal: RotationError,
    ) -> Result<T, RotationError> {
        let mut closed = self.settle(
            lease.before,
            client_id,
            rotation_id,
            Outcome::of(&refusal),
            Left::Nothing,
        );
        if matches!(refusal, RotationError::Drifted { .. }) {
            let drift = Notification::new(NotificationKind::DriftDetected, client_id, None);
            self.outbox.record(&mut closed, drift);
        }
        // A failure to close is logged, and the intent healed.
        let _ = self
            .close(client_id, rotation_id, lease.fence, closed)
            .await;
        Err(refusal)
    }

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
        let outcome = match metadata.strategy {
            Strategy::Immediate | Strategy::Key => Outcome::Rotated,
            Strategy::Staged => Outcome::Promoted,
        };
        let last = LastRotation {
            metadata: metadata.clone(),
            kv_version: version,
            credential: None,
        };
        let rotation = Rotation {
            client,
            metadata,
            stored: self.stored(path, version),
            replayed: false,
            promote_after: None,
            credential: None,
        };
        let closed = self.settle(
            lease.before.closed_with(last),
            client_id,
            rotation_id,
            outcome,
            Left::Rotation(&rotation),
        );
        // The secret is stored: a failure to close is healed, and the rotation stands.
        let _ = self
            .close(client_id, rotation_id, lease.fence, closed)
            .await;
        Ok(rotation)
    }

    /// Writes the key: one attempt always, then bounded retries of transient failures until
    /// the deadline (the new secret may exist only in memory now).
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
    async fn store_again(
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

    /// A step of rotation `rotation_id` ended as `outcome`: its metric, its audit event and the
    /// outcome on the current span. The one place every step reports how it ended.
    pub(super) fn finish(
        &self,
        report: &Report<'_>,
        rotation_id: Uuid,
        outcome: Outcome,
        kv_version: Option<KvVersion>,
    ) {
        // A step is counted once, at its end; its start and the heals on its way are audited.
        if !matches!(
            outcome,
            Outcome::Started | Outcome::HealStored | Outcome::HealUnchanged
        ) {
            tracing::Span::current().record("outcome", field::display(outcome));
            crate::metrics::rotation(
                outcome.name(),
                outcome.class().as_str(),
                report.strategy.as_str(),
                report.origin.service_actor.unwrap_or("caller"),
                report.client_id.as_str(),
            );
        }
        audit::rotation(
            outcome.event(),
            report.origin,
            report.client_id.as_str(),
            report.reason.map(Reason::as_str),
            rotation_id,
            outcome.name(),
            kv_version.map(KvVersion::get),
        );
    }

    /// The distribution time (a staged secret's, a key rotation's overlap) a request asked
    /// for, within bounds, or the default. Any strategy may name one: a key rotation overlaps
    /// whatever the strategy, and an immediate rotation of a secret refuses it
    /// ([`ValidationError::DistributeForImmediate`]) once the client is known to have one.
    pub(super) fn distribute_for(
        &self,
        _strategy: Strategy,
        requested: Option<Duration>,
    ) -> Result<Duration, ValidationError> {
        let max = &self.settings.max_distribute_for;
        match requested {
            None => Ok(self.settings.distribute_for),
            Some(d) if d >= Duration::from_secs(1) && d <= max.get() => Ok(d),
            Some(_) => Err(ValidationError::DistributeForRange {
                max: max.to_string(),
            }),
        }
    }
}

/// Delays between looks at a busy lease or key: 20 ms doubling to 500 ms, with jitter so that
/// waiting replicas do not move in lockstep.
pub(super) fn waits() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleeps for the next delay; false when that would pass the deadline.
pub(super) async fn wait(waits: &mut impl Iterator<Item = Duration>, deadline: Instant) -> bool {
    let delay = waits.next().unwrap_or(Duration::from_millis(500));
    if Instant::now() + delay >= deadline {
        return false;
    }
    tokio::time::sleep(delay).await;
    true
}
