//! The intents this replica left open (Auth0's answer lost and not read back, the secret not
//! stored), and those of a replica that died which its scan could not heal, by client: healed
//! in-process at once and retried, without waiting for their lease to expire
//! (`reconciler.rs`). Counted in `secret_rotator_open_intents` and
//! `secret_rotator_needs_resync`.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::Notify;
use uuid::Uuid;

use super::ids::ClientId;

#[derive(Default)]
pub(super) struct LeftOpen {
    by_client: Mutex<HashMap<ClientId, Uuid>>,
    added: Notify,
}

impl LeftOpen {
    /// Remembers that rotation `rotation_id` of `client_id` was left open.
    pub(super) fn note(&self, client_id: &ClientId, rotation_id: Uuid) {
        let mut open = self.by_client.lock().expect("left-open map poisoned");
        if open.insert(client_id.clone(), rotation_id).is_none() {
            crate::metrics::open_intents(1);
        }
        crate::metrics::needs_resync(open.len());
        self.added.notify_one();
    }

    /// Forgets `rotation_id` of `client_id` once healed (unless another was left open since).
    pub(super) fn healed(&self, client_id: &ClientId, rotation_id: Uuid) {
        let mut open = self.by_client.lock().expect("left-open map poisoned");
        if open.get(client_id) == Some(&rotation_id) {
            open.remove(client_id);
            crate::metrics::open_intents(-1);
        }
        crate::metrics::needs_resync(open.len());
    }

    /// What is open now.
    pub(super) fn pending(&self) -> Vec<(ClientId, Uuid)> {
        let open = self.by_client.lock().expect("left-open map poisoned");
        open.iter().map(|(c, r)| (c.clone(), *r)).collect()
    }

    pub(super) fn len(&self) -> usize {
        self.by_client.lock().expect("left-open map poisoned").len()
    }

    /// Resolves when an intent is noted.
    pub(super) async fn added(&self) {
        self.added.notified().await;
    }
}
