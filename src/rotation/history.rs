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
///
/// Every write of the client's ledger record carries every entry kept, so entries are written
/// compactly: times as nanoseconds since the epoch, defaults (immediate, not recovered) left
/// out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub rotation_id: Uuid,
    #[serde(default, skip_serializing_if = "is_immediate")]
    pub strategy: Strategy,
    #[serde(with = "epoch_nanos")]
    pub started_at: SystemTime,
    /// When its secret was stored in Vault (for a staged rotation, promoted); none when it
    /// stored nothing.
    #[serde(
        default,
        with = "epoch_nanos::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub stored_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// The secret was read back from Auth0 by recovery.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_version: Option<KvVersion>,
    /// `running`, `ok`, `recovered`, `staged`, `promoted`, `cancelled`, `failed`, or the
    /// audit trail's name of the failure (`client_not_found`, `auth0_unavailable`, ...).
    pub outcome: String,
}

impl HistoryEntry {
    /// A rotation under way: nothing stored yet, no caller or reason known.
    fn running(rotation_id: Uuid, strategy: Strategy, started_at: SystemTime) -> Self {
        Self {
            rotation_id,
            strategy,
            started_at,
            stored_at: None,
            caller: None,
            reason: None,
            recovered: false,
            kv_version: None,
            outcome: RUNNING.to_owned(),
        }
    }
}

fn is_immediate(strategy: &Strategy) -> bool {
    *strategy == Strategy::Immediate
}

/// A time as nanoseconds since the epoch (exact, to the year 2554), a third the size of serde's
/// `SystemTime` form; records written in that form still read.
mod epoch_nanos {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Nanos(u64),
        Struct(SystemTime),
    }

    impl From<Written> for SystemTime {
        fn from(w: Written) -> Self {
            match w {
                Written::Nanos(ns) => UNIX_EPOCH + Duration::from_nanos(ns),
                Written::Struct(t) => t,
            }
        }
    }

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let nanos = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        s.serialize_u64(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Written::deserialize(d).map(SystemTime::from)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<Written>::deserialize(d).map(|w| w.map(SystemTime::from))
        }
    }
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
                caller: intent.caller.clone(),
                reason: intent.reason.clone(),
                ..HistoryEntry::running(intent.rotation_id, strategy, intent.started_at)
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
                self.history
                    .insert(0, HistoryEntry::running(rotation_id, strategy, started_at));
                &mut self.history[0]
            }
        }
    }
}

/// The history as one JSON string in the record: Vault (and its audit devices) handle one
/// field instead of every field of every entry, which every write of the record would carry.
/// Records that hold it as an array still read.
pub(super) mod packed {
    use serde::{
        Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::Error as _,
    };

    use super::HistoryEntry;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Packed(String),
        List(Vec<HistoryEntry>),
    }

    pub fn serialize<S: Serializer>(history: &[HistoryEntry], s: S) -> Result<S::Ok, S::Error> {
        serde_json::to_string(history)
            .map_err(S::Error::custom)?
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HistoryEntry>, D::Error> {
        match Written::deserialize(d)? {
            Written::Packed(text) => serde_json::from_str(&text).map_err(D::Error::custom),
            Written::List(list) => Ok(list),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// An immediate rotation stored as KV version 2.
    fn stored() -> HistoryEntry {
        HistoryEntry {
            rotation_id: Uuid::parse_str("63a206d6-b2c5-4540-a10e-8bac899bcbd3").unwrap(),
            strategy: Strategy::Immediate,
            started_at: UNIX_EPOCH + Duration::from_millis(1_795_812_291_227),
            stored_at: Some(UNIX_EPOCH + Duration::from_millis(1_795_812_291_275)),
            caller: Some("anonymous".into()),
            reason: None,
            recovered: false,
            kv_version: Some(KvVersion(2)),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn an_entry_is_written_compactly_and_one_written_in_the_long_form_still_reads() {
        let entry = stored();
        let written = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            written,
            r#"{"rotation_id":"63a206d6-b2c5-4540-a10e-8bac899bcbd3","started_at":1795812291227000000,"stored_at":1795812291275000000,"caller":"anonymous","kv_version":2,"outcome":"ok"}"#
        );
        assert_eq!(
            serde_json::from_str::<HistoryEntry>(&written).unwrap(),
            entry
        );

        // As records written before held it: serde's SystemTime form, defaults spelt out.
        let long = r#"{"rotation_id":"63a206d6-b2c5-4540-a10e-8bac899bcbd3","strategy":"immediate",
            "started_at":{"secs_since_epoch":1795812291,"nanos_since_epoch":227000000},
            "stored_at":{"secs_since_epoch":1795812291,"nanos_since_epoch":275000000},
            "caller":"anonymous","recovered":false,"kv_version":2,"outcome":"ok"}"#;
        assert_eq!(serde_json::from_str::<HistoryEntry>(long).unwrap(), entry);

        let staged = HistoryEntry {
            strategy: Strategy::Staged,
            stored_at: None,
            recovered: true,
            ..entry
        };
        let written = serde_json::to_string(&staged).unwrap();
        assert!(
            written.contains(r#""strategy":"staged""#) && written.contains(r#""recovered":true"#)
        );
        assert!(!written.contains("stored_at"), "{written}");
        assert_eq!(
            serde_json::from_str::<HistoryEntry>(&written).unwrap(),
            staged
        );
    }

    #[test]
    fn the_record_holds_the_history_as_one_string_and_a_record_holding_a_list_still_reads() {
        let entry = HistoryEntry {
            strategy: Strategy::Staged,
            stored_at: None,
            caller: Some("scheduler".into()),
            kv_version: None,
            outcome: "staged".into(),
            ..stored()
        };
        let state = ClientState {
            history: vec![entry.clone(), entry.clone()],
            ..ClientState::default()
        };
        let written = serde_json::to_value(&state).unwrap();
        let packed = written["history"].as_str().expect("one string");
        assert_eq!(
            serde_json::from_str::<Vec<HistoryEntry>>(packed)
                .unwrap()
                .len(),
            2
        );
        let read: ClientState = serde_json::from_value(written).unwrap();
        assert_eq!(read.history, state.history);

        let mut listed = serde_json::to_value(&state).unwrap();
        listed["history"] = serde_json::to_value(&state.history).unwrap();
        assert!(listed["history"].is_array());
        let read: ClientState = serde_json::from_value(listed).unwrap();
        assert_eq!(read.history, state.history);
        let empty: ClientState = serde_json::from_str("{}").unwrap();
        assert!(empty.history.is_empty());
        assert!(
            serde_json::to_value(&empty)
                .unwrap()
                .get("history")
                .is_none()
        );
    }
}
