//! The per-client lease: a lock in this process first, then the lease in the ledger (one
//! check-and-set write that also records the intent), fenced by the record's version.

use std::{sync::Arc, time::Duration, time::SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;
use tracing::warn;
use uuid::Uuid;

use super::{
    error::{RotationError, StoreError},
    ids::ClientId,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{
        Acquired, ClientState, Intent, KvVersion, Lease, RotateCommand, Rotation, Versioned, millis,
    },
    service::RotationService,
};

/// Closed records kept in memory, at most (a few hundred bytes each).
pub(super) const KNOWN_RECORDS_MAX: usize = 10_000;

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// Runs one rotation of the command's client while holding its local lock.
    pub(super) async fn rotate_locked(
        &self,
        command: &RotateCommand,
        rotation_id: Uuid,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        self.locked(
            &command.client_id,
            rotation_id,
            self.rotate_under_lease(command, rotation_id, deadline),
        )
        .await
    }

    /// Runs `work` (one step of rotation `rotation_id`) while holding the client's local lock,
    /// and remembers the intent if the step leaves it open.
    pub(super) async fn locked<T>(
        &self,
        client_id: &ClientId,
        rotation_id: Uuid,
        work: impl Future<Output = Result<T, RotationError>>,
    ) -> Result<T, RotationError> {
        let lock = self.local_lock(client_id);
        let result = {
            let _guard = lock.lock().await;
            work.await
        };
        if result
            .as_ref()
            .is_err_and(RotationError::leaves_open_intent)
        {
            self.note_left_open(client_id, rotation_id);
        }
        drop(lock);
        self.release_local_lock(client_id);
        result
    }

    /// Takes the client's lease and records the intent in one check-and-set write. An open
    /// intent without a live lease is healed first; a live lease is waited for until the
    /// deadline.
    ///
    /// The record as this replica last closed it is kept in memory: if nobody has written it
    /// since, it is still closed, and the check-and-set write proves that without a read. Any
    /// other write (another replica, a heal) makes the write fail, and the record is read.
    pub(super) async fn acquire(
        &self,
        client_id: &ClientId,
        path: &str,
        intent: &Intent,
        deadline: Instant,
    ) -> Result<Acquired, RotationError> {
        let mut waits = waits();
        let mut known = self.take_known(client_id);
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
                if !wait(&mut waits, deadline).await {
                    return Err(RotationError::Busy);
                }
                continue;
            }
            if record.value.intent.is_some() {
                self.heal_orphan(client_id, record).await.map_err(|e| {
                    RotationError::RecoveryFailed {
                        client_id: client_id.clone(),
                        source: Box::new(e),
                    }
                })?;
                continue;
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
                    return Ok(Acquired {
                        fence,
                        observed,
                        before,
                    });
                }
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(RotationError::VaultBeforeRotation(e)),
            }
        }
    }

    /// Closes the intent of `rotation_id` and releases the lease, leaving the record `closed`
    /// (without lease and intent). Failing here loses nothing: the secret is stored, and the
    /// heal this replica retries at once finds Vault already as the step left it.
    pub(super) async fn close(
        &self,
        client_id: &ClientId,
        rotation_id: Uuid,
        fence: KvVersion,
        closed: ClientState,
    ) {
        // The failure is logged, and the intent noted for healing.
        let _ = self.try_close(client_id, rotation_id, fence, closed).await;
    }

    /// [`Self::close`], saying whether it failed.
    pub(super) async fn try_close(
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
                if !closed.notifications.is_empty() {
                    self.notifications_written(client_id);
                }
                self.remember(
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
                self.note_left_open(client_id, rotation_id);
                Err(e)
            }
        }
    }

    /// Keeps the record as this replica closed it, for the next acquire.
    /// Bounded: a replica of a large tenant forgets some record (which costs that client one
    /// read on its next rotation) rather than grow without end.
    pub(super) fn remember(&self, client_id: &ClientId, record: Versioned<ClientState>) {
        let mut known = self.known.lock().expect("known records poisoned");
        if known.len() >= KNOWN_RECORDS_MAX && !known.contains_key(client_id) {
            let forget = known.keys().next().cloned();
            if let Some(forget) = forget {
                known.remove(&forget);
            }
        }
        known.insert(client_id.clone(), record);
    }

    fn take_known(&self, client_id: &ClientId) -> Option<Versioned<ClientState>> {
        let mut known = self.known.lock().expect("known records poisoned");
        known.remove(client_id)
    }

    pub(super) fn new_lease(&self) -> Lease {
        Lease {
            holder: self.settings.replica.clone(),
            expires_at_ms: millis(SystemTime::now() + self.settings.lease_ttl),
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
