//! This replica's per-client locks and memory of records: one rotation per client at a time in
//! this process (before the ledger's lease is even tried), and each client's ledger record as
//! this replica last closed it, so that the next rotation can take the lease without reading it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{ids::ClientId, records::Versioned, state::ClientState};

/// Closed records kept in memory, at most (a few hundred bytes each).
pub(super) const KNOWN_RECORDS_MAX: usize = 10_000;

#[derive(Default)]
pub(super) struct Locks {
    local: Mutex<HashMap<ClientId, Arc<tokio::sync::Mutex<()>>>>,
    known: Mutex<HashMap<ClientId, Versioned<ClientState>>>,
}

impl Locks {
    /// Runs `work` holding `client_id`'s lock; the lock is forgotten once nobody holds or waits
    /// for it.
    pub(super) async fn holding<T>(
        &self,
        client_id: &ClientId,
        work: impl Future<Output = T>,
    ) -> T {
        let lock = {
            let mut map = self.local.lock().expect("lock map poisoned");
            Arc::clone(map.entry(client_id.clone()).or_default())
        };
        let result = {
            let _guard = lock.lock().await;
            work.await
        };
        drop(lock);
        let mut map = self.local.lock().expect("lock map poisoned");
        if map
            .get(client_id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(client_id);
        }
        result
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

    /// The record as this replica last closed it, if it remembers it; forgotten until the
    /// next close.
    pub(super) fn take_known(&self, client_id: &ClientId) -> Option<Versioned<ClientState>> {
        self.known
            .lock()
            .expect("known records poisoned")
            .remove(client_id)
    }

    /// Clients whose lock is held or waited for.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.local.lock().expect("lock map poisoned").len()
    }

    /// Records remembered.
    #[cfg(test)]
    pub(super) fn known(&self) -> usize {
        self.known.lock().expect("known records poisoned").len()
    }
}
