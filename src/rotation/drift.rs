//! Drift: whether Vault holds the secret Auth0 accepts. Checked on demand (GetRotationStatus
//! with check_drift) and, with `ROTATOR_DRIFT_SCAN_INTERVAL`, by the scanning replica's pass
//! over every client record (`reconciler.rs`), as background work within Auth0's budget. What
//! each check found is kept for ListClients and counted in `secret_rotator_drifted_clients`;
//! a drift found is notified (`drift.detected`).

use std::{collections::HashMap, time::SystemTime};

use tracing::warn;

use super::{
    Ledger, RotationService, SecretIssuer, SecretStore,
    ids::ClientId,
    records::{ClientState, Drift},
};

/// What the last check of each client found, and how many of them found drift (kept as the
/// checks come in: a scan checks every client, and must not count them all each time).
#[derive(Debug, Default)]
pub(super) struct DriftBook {
    by_client: HashMap<ClientId, Drift>,
    drifted: usize,
}

impl DriftBook {
    fn found(&mut self, client_id: &ClientId, drift: Drift) {
        let was = self.by_client.insert(client_id.clone(), drift);
        if was == Some(Drift::Drifted) {
            self.drifted -= 1;
        }
        if drift == Drift::Drifted {
            self.drifted += 1;
        }
    }
}

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// Compares the client's Vault secret with Auth0's and remembers what it found.
    pub(super) async fn check_drift(&self, client_id: &ClientId) -> Drift {
        let drift = match self.in_sync(client_id).await {
            Ok(true) => Drift::InSync,
            Ok(false) => {
                self.drift_found(client_id).await;
                Drift::Drifted
            }
            Err(e) => {
                warn!(%client_id, error = %e, "drift could not be checked");
                Drift::Unknown
            }
        };
        let mut book = self.drift.lock().expect("drift book poisoned");
        book.found(client_id, drift);
        crate::metrics::drifted_clients(book.drifted);
        drift
    }

    /// What the last check of the client found, if one ran on this replica.
    pub fn known_drift(&self, client_id: &ClientId) -> Option<Drift> {
        self.drift
            .lock()
            .expect("drift book poisoned")
            .by_client
            .get(client_id)
            .copied()
    }

    /// Whether this pass of the scanner checks drift: scans are on and the last is an
    /// interval ago. Marks the pass as the last when it is.
    pub(super) fn drift_pass_due(&self) -> bool {
        let Some(interval) = self.settings.drift_scan_interval else {
            return false;
        };
        let mut last = self.drift_scanned.lock().expect("drift scan poisoned");
        let now = SystemTime::now();
        let due = last.is_none_or(|l| now.duration_since(l).is_ok_and(|d| d >= interval));
        if due {
            *last = Some(now);
        }
        due
    }

    /// During a drift pass: a client whose secret the service stored, with no rotation under
    /// way or staged (those change Vault on purpose), is checked.
    pub(super) async fn scan_drift(&self, client_id: &ClientId, state: &ClientState) {
        if state.last.is_some() && state.intent.is_none() && state.staged.is_none() {
            self.check_drift(client_id).await;
        }
    }
}
