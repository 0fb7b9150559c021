//! The per-client coordination record ([`ClientState`]): the lease, the open intent, the last
//! and the staged rotation, undelivered notifications and the history, all in one ledger record
//! written with check-and-set. What taking its lease yields ([`Acquired`]).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    history::HistoryEntry,
    ids::AuthMethod,
    notify::Notification,
    outcome::Outcome,
    records::{
        Intent, KvVersion, LastRotation, Lease, Overlap, RolledBack, Rotation, RotationMetadata,
        Staged, Step, Strategy,
    },
};

/// What taking a client's lease yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Acquired {
    /// The ledger record's version after the lease was written: every later write of the record
    /// by this holder is check-and-set against it, so a holder whose lease was taken over can no
    /// longer write.
    pub fence: KvVersion,
    /// The secret key's version as the last rotation left it (read from Vault when no
    /// rotation is recorded): the check-and-set value of the secret write.
    pub observed: KvVersion,
    /// The record as the lease was taken, without the lease and the intent: what closing
    /// the rotation starts from (the last rotation, a staged one).
    pub before: ClientState,
}

/// Per-client coordination record, kept in Vault and only ever written with check-and-set. Its
/// KV version is the fencing value: every change bumps it, so a holder whose lease was taken
/// over can no longer write. The write that closes a rotation also records its facts here, so a
/// rotation costs no separate metadata write and GetRotationStatus one read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientState {
    pub lease: Option<Lease>,
    pub intent: Option<Intent>,
    /// The last rotation stored (absent in records written before this field existed).
    #[serde(default)]
    pub last: Option<LastRotation>,
    /// A staged rotation whose next secret is in Vault, waiting for promotion.
    #[serde(default)]
    pub staged: Option<Staged>,
    /// A key rotation whose old key is still attached, waiting for retirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// The last staged rotation cancelled, so that a repeated cancel is answered alike.
    #[serde(default)]
    pub cancelled: Option<Uuid>,
    /// The last rotation, undone: a repeated rollback is answered alike, and nothing earlier
    /// can be put back (Vault's previous secret is now the undone one). Cleared by the next
    /// rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
    /// Notifications not delivered yet (only while a webhook is configured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
    /// The last rotations, newest first (`history.rs`).
    #[serde(
        default,
        with = "super::history::packed",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<HistoryEntry>,
}

impl ClientState {
    /// Whether a replica holds the client's lease right now.
    pub fn leased(&self) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|l| l.active(SystemTime::now()))
    }

    /// No lease and no open intent: how a settled rotation leaves the record.
    pub fn is_closed(&self) -> bool {
        self.lease.is_none() && self.intent.is_none()
    }

    /// This record without lease and intent: how a rotation that changed nothing leaves it.
    pub fn settled(&self) -> Self {
        Self {
            lease: None,
            intent: None,
            ..self.clone()
        }
    }

    /// The settled record after a rotation stored `last`: a staged rotation is over.
    pub fn closed_with(&self, last: LastRotation) -> Self {
        Self {
            last: Some(last),
            staged: None,
            rolled_back: None,
            ..self.settled()
        }
    }
}

impl ClientState {
    /// The rotation `intent` starts, at the head of the history, which keeps `keep` entries.
    pub(super) fn history_started(&mut self, intent: &Intent, keep: usize) {
        let strategy = intent.step.strategy();
        // A promotion, cancellation or rollback is of a rotation on record (its entry goes on),
        // or refused: it never starts an entry of its own.
        if matches!(intent.step, Step::Promote | Step::Cancel | Step::Rollback) {
            return;
        }
        self.history.retain(|e| e.rotation_id != intent.rotation_id);
        self.history.insert(
            0,
            HistoryEntry {
                caller: intent.caller.clone(),
                reason: intent.reason.clone(),
                ..HistoryEntry::running(intent.rotation_id, strategy, intent.started_at)
            },
        );
        self.history.truncate(keep.max(1));
    }

    /// Settles the entry of `rotation.metadata.rotation_id` with what it stored.
    pub(super) fn history_stored(&mut self, rotation: &Rotation, outcome: Outcome) {
        let m = &rotation.metadata;
        let entry = self.history_entry_or_new(m.rotation_id, m.strategy, m.rotated_at);
        entry.stored_at = Some(m.rotated_at);
        entry.kv_version = Some(rotation.stored.version);
        entry.recovered |= m.recovered;
        entry.caller = entry.caller.take().or_else(|| m.caller.clone());
        entry.reason = entry.reason.take().or_else(|| m.reason.clone());
        entry.outcome = outcome.name().to_owned();
        if let Some(credential) = &rotation.credential {
            entry.credential(credential);
        }
    }

    /// Marks the running entry of `rotation_id` as a key rotation of `method`.
    pub(super) fn history_key(&mut self, rotation_id: Uuid, method: AuthMethod) {
        if let Some(entry) = self.history_entry(rotation_id) {
            entry.strategy = Strategy::Key;
            entry.method = Some(method);
        }
    }

    /// Settles the entry of `rotation_id` with a failure, unless its rotation is still staged
    /// (a failed promotion leaves the staged rotation as it was).
    pub(super) fn history_failed(&mut self, rotation_id: Uuid, outcome: Outcome) {
        if self
            .staged
            .as_ref()
            .is_some_and(|s| s.rotation_id == rotation_id)
        {
            return;
        }
        if let Some(entry) = self.history_entry(rotation_id) {
            entry.outcome = outcome.name().to_owned();
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
            && entry.outcome == Outcome::Running.name()
        {
            let outcome = if staged {
                Outcome::Staged
            } else {
                Outcome::CutOff
            };
            entry.outcome = outcome.name().to_owned();
        }
    }

    /// The newest rotation before `rotation_id` that stored its secret or key, as the history
    /// keeps it: what is in force again once `rotation_id` is undone.
    pub(super) fn stored_before(&self, rotation_id: Uuid) -> Option<RotationMetadata> {
        let entry = self
            .history
            .iter()
            .skip_while(|e| e.rotation_id != rotation_id)
            .skip(1)
            .find(|e| e.stored_at.is_some())?;
        Some(RotationMetadata {
            rotation_id: entry.rotation_id,
            rotated_at: entry.stored_at?,
            reason: entry.reason.clone(),
            caller: entry.caller.clone(),
            recovered: entry.recovered,
            strategy: entry.strategy,
        })
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
                self.history
                    .insert(0, HistoryEntry::running(rotation_id, strategy, started_at));
                &mut self.history[0]
            }
        }
    }
}
