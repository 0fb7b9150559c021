//! A client's last rotations, newest first, kept in its ledger record: started by the write
//! that takes the lease and records the intent, settled by the write that closes it. History
//! costs no Vault request of its own, and a rotation healed by another replica settles the
//! entry its first replica started.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Ledger, RotationError, RotationService,
    ids::{ClientId, Reason},
    records::{ClientState, Intent, KvVersion, Rotation, Step, Strategy},
};

/// The outcome of a rotation still under way (or cut off and not healed yet).
pub const RUNNING: &str = "running";

/// One rotation of a client, as ListRotations shows it. No secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub rotation_id: Uuid,
    pub strategy: Strategy,
    pub started_at: SystemTime,
    /// When its secret was stored in Vault (for a staged rotation, promoted); none when it
    /// stored nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// The secret was read back from Auth0 by recovery.
    #[serde(default)]
    pub recovered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_version: Option<KvVersion>,
    /// `running`, `ok`, `recovered`, `staged`, `promoted`, `cancelled`, `failed`, or the
    /// audit trail's name of the failure (`client_not_found`, `auth0_unavailable`, ...).
    pub outcome: String,
}

impl<I, S, L: Ledger> RotationService<I, S, L> {
    /// ListRotations: the client's last rotations, newest first. One read of its record.
    pub async fn history(&self, client_id: &ClientId) -> Result<Vec<HistoryEntry>, RotationError> {
        let state = self
            .ledger
            .read_state(client_id)
            .await
            .map_err(RotationError::Vault)?;
        Ok(state.value.history)
    }
}

impl ClientState {
    /// The rotation `intent` starts, at the head of the history, which keeps `keep` entries.
    /// A promotion or cancellation continues its staged rotation's entry instead.
    pub(super) fn history_started(&mut self, intent: &Intent, keep: usize) {
        let strategy = match intent.step {
            Step::Rotate => Strategy::Immediate,
            Step::Stage | Step::Promote | Step::Cancel => Strategy::Staged,
        };
        if matches!(intent.step, Step::Promote | Step::Cancel)
            && self.history_entry(intent.rotation_id).is_some()
        {
            return;
        }
        self.history.retain(|e| e.rotation_id != intent.rotation_id);
        self.history.insert(
            0,
            HistoryEntry {
                rotation_id: intent.rotation_id,
                strategy,
                started_at: intent.started_at,
                stored_at: None,
                caller: intent.caller.clone(),
                reason: intent.reason.clone(),
                recovered: false,
                kv_version: None,
                outcome: RUNNING.to_owned(),
            },
        );
        self.history.truncate(keep.max(1));
    }

    /// Settles the entry of `rotation.metadata.rotation_id` with what it stored.
    pub(super) fn history_stored(&mut self, rotation: &Rotation, outcome: &str) {
        let m = &rotation.metadata;
        let entry = self.history_entry_or_new(m.rotation_id, m.strategy, m.rotated_at);
        entry.stored_at = Some(m.rotated_at);
        entry.kv_version = Some(rotation.stored.version);
        entry.recovered |= m.recovered;
        entry.caller = entry.caller.take().or_else(|| m.caller.clone());
        entry.reason = entry.reason.take().or_else(|| m.reason.clone());
        entry.outcome = outcome.to_owned();
    }

    /// Settles the entry of `rotation_id` with a failure, unless its rotation is still staged
    /// (a failed promotion leaves the staged rotation as it was).
    pub(super) fn history_failed(&mut self, rotation_id: Uuid, outcome: &str) {
        if self
            .staged
            .as_ref()
            .is_some_and(|s| s.rotation_id == rotation_id)
        {
            return;
        }
        if let Some(entry) = self.history_entry(rotation_id) {
            entry.outcome = outcome.to_owned();
        }
    }

    /// At the close of `rotation_id`: an entry still running was closed without an outcome
    /// of its own (cut off, healed without a rotation): it failed. A staged rotation's entry
    /// that a promotion or cancellation left running is staged again.
    pub(super) fn history_closed(&mut self, rotation_id: Uuid) {
        let staged = self
            .staged
            .as_ref()
            .is_some_and(|s| s.rotation_id == rotation_id);
        if let Some(entry) = self.history_entry(rotation_id)
            && entry.outcome == RUNNING
        {
            entry.outcome = if staged { "staged" } else { "failed" }.to_owned();
        }
    }

    fn history_entry(&mut self, rotation_id: Uuid) -> Option<&mut HistoryEntry> {
        self.history
            .iter_mut()
            .find(|e| e.rotation_id == rotation_id)
    }

    /// The entry of `rotation_id`; a new one at the head for a record written before history
    /// was kept.
    fn history_entry_or_new(
        &mut self,
        rotation_id: Uuid,
        strategy: Strategy,
        started_at: SystemTime,
    ) -> &mut HistoryEntry {
        match self
            .history
            .iter()
            .position(|e| e.rotation_id == rotation_id)
        {
            Some(at) => &mut self.history[at],
            None => {
                self.history.insert(
                    0,
                    HistoryEntry {
                        rotation_id,
                        strategy,
                        started_at,
                        stored_at: None,
                        caller: None,
                        reason: None,
                        recovered: false,
                        kv_version: None,
                        outcome: RUNNING.to_owned(),
                    },
                );
                &mut self.history[0]
            }
        }
    }
}
