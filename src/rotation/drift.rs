//! Drift: whether Vault holds the secret Auth0 accepts. Checked on demand (GetRotationStatus
//! with check_drift) and, with `ROTATOR_DRIFT_SCAN_INTERVAL`, by the scanning replica's pass
//! over every client record (`reconciler.rs`), as background work within Auth0's budget. What
//! each check found is kept in the [`DriftBook`] for ListClients and counted in
//! `secret_rotator_drifted_clients`; a drift found is notified (`drift.detected`).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use tracing::warn;

use super::{
    ids::ClientId,
    pipeline::Pipeline,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::Drift,
    state::ClientState,
};

/// What the last check of each client found on this replica, and when its scans last checked.
#[derive(Debug, Default)]
pub(super) struct DriftBook {
    found: Mutex<Found>,
    scanned: Mutex<Option<SystemTime>>,
}

/// What each client's last check found, and how many of them found drift (kept as the checks
/// come in: a scan checks every client, and must not count them all each time).
#[derive(Debug, Default)]
struct Found {
    by_client: HashMap<ClientId, Drift>,
    drifted: usize,
}

impl DriftBook {
    fn found(&self, client_id: &ClientId, drift: Drift) {
        let mut found = self.found.lock().expect("drift book poisoned");
        let was = found.by_client.insert(client_id.clone(), drift);
        if was == Some(Drift::Drifted) {
            found.drifted -= 1;
        }
        if drift == Drift::Drifted {
            found.drifted += 1;
        }
        crate::metrics::drifted_clients(found.drifted);
    }

    /// What the last check of the client found, if one ran on this replica.
    pub(super) fn known(&self, client_id: &ClientId) -> Option<Drift> {
        let found = self.found.lock().expect("drift book poisoned");
        found.by_client.get(client_id).copied()
    }

    /// Whether a scan now checks drift: scans check every `interval` (never without one).
    /// Marks the scan as the last when it does.
    pub(super) fn scan_due(&self, interval: Option<Duration>) -> bool {
        let Some(interval) = interval else {
            return false;
        };
        let mut last = self.scanned.lock().expect("drift scan poisoned");
        let now = SystemTime::now();
        let due = last.is_none_or(|l| now.duration_since(l).is_ok_and(|d| d >= interval));
        if due {
            *last = Some(now);
        }
        due
    }
}

/// Compares the client's Vault secret with Auth0's and writes what it found in `book`.
pub(super) async fn check<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    book: &DriftBook,
    client_id: &ClientId,
) -> Drift {
    let drift = match p.drift(client_id).await {
        Ok(Drift::Drifted) => {
            p.outbox.drift_found(&p.ledger, client_id).await;
            Drift::Drifted
        }
        Ok(drift) => drift,
        Err(e) => {
            warn!(%client_id, error = %e, "drift could not be checked");
            Drift::Unknown
        }
    };
    book.found(client_id, drift);
    drift
}

/// During a drift scan: a client whose secret the service stored, with no rotation under way
/// or staged (those change Vault on purpose), is checked.
pub(super) async fn scan<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    book: &DriftBook,
    client_id: &ClientId,
    state: &ClientState,
) {
    if state.last.is_some() && state.intent.is_none() && state.staged.is_none() {
        check(p, book, client_id).await;
    }
}
