//! The reconciler: finds rotations left open and heals them (`recovery.rs`), at a cost that
//! does not grow with the number of replicas.
//!
//! - **Its own intents, at once.** A replica that leaves an intent open (Auth0's answer lost and
//!   not read back, the secret not stored) remembers it and retries the heal in-process, from a
//!   second later up to every `reconcile_interval`, without waiting for its lease to expire.
//! - **Staged rotations, when due.** A replica promotes the staged rotations it staged, and
//!   those its scans find, when `promote_after` passes (`staged.rs`).
//! - **Everyone else's, by one scanner.** One replica at a time holds the scanner lease (a
//!   ledger record, taken and renewed with check-and-set) and reads every client record, paced
//!   at `reconcile_rate` records per second, healing open intents whose lease has expired; it
//!   rests `reconcile_interval` between passes. The others only look at the scanner lease once
//!   an interval. A replica that dies mid-rotation is healed within its lease TTL plus one
//!   interval and one paced pass (plus the scanner lease's expiry, three intervals, when the
//!   replica that died was the scanner).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};
use uuid::Uuid;

use super::{
    error::RotationError,
    ids::ClientId,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{KvVersion, Lease, millis},
    service::RotationService,
};

/// How long the scanner lease lasts, in reconcile intervals; renewed every interval.
const SCANNER_LEASE_INTERVALS: u32 = 3;

/// Records a paced pass reads back to back.
const SCAN_BURST: u32 = 10;

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// Remembers that this replica left `client_id`'s rotation `rotation_id` open.
    pub(super) fn note_left_open(&self, client_id: &ClientId, rotation_id: Uuid) {
        let mut open = self.left_open.lock().expect("left-open map poisoned");
        if open.insert(client_id.clone(), rotation_id).is_none() {
            crate::metrics::open_intents(1);
        }
        crate::metrics::needs_resync(open.len());
        self.left_open_added.notify_one();
    }

    /// Heals the intents this replica left open; returns how many are still open.
    pub async fn heal_left_open(&self) -> usize {
        let pending: Vec<(ClientId, Uuid)> = {
            let open = self.left_open.lock().expect("left-open map poisoned");
            open.iter().map(|(c, r)| (c.clone(), *r)).collect()
        };
        for (client_id, rotation_id) in pending {
            match self.heal_one_left_open(&client_id, rotation_id).await {
                Ok(()) => {
                    let mut open = self.left_open.lock().expect("left-open map poisoned");
                    if open.get(&client_id) == Some(&rotation_id) {
                        open.remove(&client_id);
                        crate::metrics::open_intents(-1);
                    }
                    crate::metrics::needs_resync(open.len());
                }
                Err(e) => {
                    warn!(%client_id, %rotation_id, error = %e, "could not heal a rotation left open; will retry");
                }
            }
        }
        self.left_open.lock().expect("left-open map poisoned").len()
    }

    /// Heals `rotation_id` if it is still open and no other replica has taken it over. Only
    /// that very intent: anything else is another rotation, in flight or healed by someone
    /// else, which is not this replica's to touch.
    async fn heal_one_left_open(
        &self,
        client_id: &ClientId,
        rotation_id: Uuid,
    ) -> Result<(), RotationError> {
        let record = self
            .ledger
            .read_state(client_id)
            .await
            .map_err(RotationError::Vault)?;
        let state = &record.value;
        let ours = state
            .intent
            .as_ref()
            .is_some_and(|i| i.rotation_id == rotation_id);
        let taken_over = state
            .lease
            .as_ref()
            .is_some_and(|l| l.holder != self.settings.replica && l.active(SystemTime::now()));
        if !ours || taken_over {
            return Ok(());
        }
        self.heal_orphan(client_id, record).await
    }

    /// One pass over every client record, as fast as Vault answers: heals each open intent
    /// whose lease is free or expired. Returns how many were healed.
    pub async fn reconcile_once(&self) -> usize {
        self.scan(None).await
    }

    /// A pass, paced at `reconcile_rate` records per second and renewing the scanner lease
    /// (held at `scanner`) every interval; stops early if the lease is lost.
    async fn scan(&self, mut scanner: Option<KvVersion>) -> usize {
        let clients = match self.ledger.clients().await {
            Ok(clients) => clients,
            Err(e) => {
                warn!(error = %e, "reconciler cannot list client records");
                crate::metrics::reconciler_run("failed");
                return 0;
            }
        };
        // Records are read in small bursts at the average rate: a process woken for every
        // single read spends several times the CPU of the read itself on waking up.
        let rate = self.settings.reconcile_rate.get();
        let burst = SCAN_BURST.min(rate);
        let mut pace = tokio::time::interval(Duration::from_secs(1) * burst / rate);
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut renewed = Instant::now();
        let mut healed = 0;
        // Only the scanner's paced passes check drift.
        let drift_pass = scanner.is_some() && self.drift_pass_due();
        for (n, client_id) in clients.into_iter().enumerate() {
            if let Some(version) = scanner
                && n % burst as usize == 0
            {
                pace.tick().await;
                if renewed.elapsed() >= self.settings.reconcile_interval {
                    match self.renew_scanner(version).await {
                        Some(next) => {
                            scanner = Some(next);
                            renewed = Instant::now();
                        }
                        None => return healed,
                    }
                }
            }
            let record = match self.ledger.read_state(&client_id).await {
                Ok(read) => read,
                Err(e) => {
                    warn!(%client_id, error = %e, "reconciler cannot read a client record");
                    continue;
                }
            };
            self.scanned(&client_id, &record.value);
            if drift_pass {
                self.scan_drift(&client_id, &record.value).await;
            }
            if let Some(staged) = &record.value.staged {
                // Promoted by this replica's timer when due.
                self.note_staged(&client_id, staged.rotation_id, staged.promote_after);
            }
            if record.value.intent.is_none() || record.value.leased() {
                continue;
            }
            match self.heal_orphan(&client_id, record).await {
                Ok(()) => healed += 1,
                Err(e) => warn!(%client_id, error = %e, "reconciler could not heal; will retry"),
            }
        }
        healed
    }

    fn scanner_lease(&self) -> Lease {
        let ttl = self.settings.reconcile_interval * SCANNER_LEASE_INTERVALS;
        Lease {
            holder: self.settings.replica.clone(),
            expires_at_ms: millis(SystemTime::now() + ttl),
        }
    }

    /// Takes the scanner lease if it is free, expired or already this replica's; the version
    /// it was written at when this replica holds it now.
    pub(super) async fn take_scanner(&self) -> Option<KvVersion> {
        let read = match self.ledger.read_scanner().await {
            Ok(read) => read,
            Err(e) => {
                warn!(error = %e, "reconciler cannot read the scanner lease");
                return None;
            }
        };
        let elsewhere = read
            .value
            .as_ref()
            .is_some_and(|l| l.holder != self.settings.replica && l.active(SystemTime::now()));
        if elsewhere {
            return None;
        }
        // A lost race for the lease is not an error: the winner scans.
        self.ledger
            .write_scanner(&self.scanner_lease(), read.version)
            .await
            .ok()
    }

    async fn renew_scanner(&self, held: KvVersion) -> Option<KvVersion> {
        self.ledger
            .write_scanner(&self.scanner_lease(), held)
            .await
            .ok()
    }

    /// Heals what this replica leaves open, at once, and takes its turn scanning for everyone
    /// else's; for ever. Dropping the future mid-pass is safe: every write is check-and-set and
    /// a taken lease expires.
    pub async fn reconcile_forever(self: Arc<Self>) {
        tokio::join!(
            self.heal_left_open_forever(),
            self.scan_forever(),
            self.promote_due_forever()
        );
    }

    async fn scan_forever(&self) {
        loop {
            if let Some(held) = self.take_scanner().await {
                let healed = self.scan(Some(held)).await;
                if healed > 0 {
                    info!(healed, "reconciler pass healed open rotations");
                }
                crate::metrics::reconciler_run(if healed > 0 { "healed" } else { "clean" });
            }
            tokio::time::sleep(self.settings.reconcile_interval).await;
        }
    }

    async fn heal_left_open_forever(&self) {
        let longest = self.settings.reconcile_interval;
        let mut wait = longest.min(Duration::from_secs(1));
        loop {
            if self.heal_left_open().await == 0 {
                wait = longest.min(Duration::from_secs(1));
                self.left_open_added.notified().await;
            } else {
                wait = (wait * 2).min(longest);
            }
            // A moment for whatever failed (Vault, Auth0) to come back.
            tokio::time::sleep(wait).await;
        }
    }
}
