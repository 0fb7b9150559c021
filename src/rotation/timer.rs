//! The promotion timer's book: the staged rotations this replica knows of (its own, and those
//! its scans found), by client, and when each falls due. The promotions themselves run in
//! `reconciler.rs`, as background work.

use std::{collections::HashMap, sync::Mutex, time::SystemTime};

use tokio::sync::Notify;
use uuid::Uuid;

use super::ids::ClientId;

#[derive(Default)]
pub(super) struct PromotionTimer {
    due: Mutex<HashMap<ClientId, (Uuid, SystemTime)>>,
    added: Notify,
}

impl PromotionTimer {
    /// Remembers when staged rotation `rotation_id` of `client_id` is due.
    pub(super) fn note(&self, client_id: &ClientId, rotation_id: Uuid, due: SystemTime) {
        let mut staged = self.due.lock().expect("staged map poisoned");
        staged.insert(client_id.clone(), (rotation_id, due));
        self.added.notify_one();
    }

    /// Forgets `rotation_id` (promoted or cancelled), unless another was staged since.
    pub(super) fn forget(&self, client_id: &ClientId, rotation_id: Uuid) {
        let mut staged = self.due.lock().expect("staged map poisoned");
        if staged
            .get(client_id)
            .is_some_and(|(id, _)| *id == rotation_id)
        {
            staged.remove(client_id);
        }
    }

    /// No staged rotation is on the book.
    pub(super) fn is_empty(&self) -> bool {
        self.due.lock().expect("staged map poisoned").is_empty()
    }

    /// Waits for the earliest staged rotation to fall due and takes it off the book.
    pub(super) async fn next_due(&self) -> (ClientId, Uuid) {
        loop {
            let earliest = {
                let staged = self.due.lock().expect("staged map poisoned");
                staged
                    .iter()
                    .min_by_key(|(_, (_, due))| *due)
                    .map(|(c, (id, due))| (c.clone(), *id, *due))
            };
            let Some((client_id, rotation_id, due)) = earliest else {
                self.added.notified().await;
                continue;
            };
            if let Ok(wait) = due.duration_since(SystemTime::now()) {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.added.notified() => {}
                }
                continue;
            }
            self.forget(&client_id, rotation_id);
            return (client_id, rotation_id);
        }
    }
}
