//! One entry of a client's history (its last rotations, newest first, kept in its ledger record
//! by `state.rs`), and how the history is written compactly. History costs no Vault request of
//! its own: it is started by the write that takes the lease and settled by the write that closes
//! it, so a rotation healed by another replica settles the entry its first replica started.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    ids::{AuthMethod, CredentialId, Reason},
    outcome::Outcome,
    records::{KvVersion, RotatedCredential, Strategy},
};

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
    /// A key rotation's kind of credential, known from its start; none for a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<AuthMethod>,
    /// The credential a key rotation registered, once consumers use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<CredentialId>,
    /// Its `kid` (a certificate's thumbprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl HistoryEntry {
    /// A rotation under way: nothing stored yet, no caller or reason known.
    pub(super) fn running(rotation_id: Uuid, strategy: Strategy, started_at: SystemTime) -> Self {
        Self {
            rotation_id,
            strategy,
            started_at,
            stored_at: None,
            caller: None,
            reason: None,
            recovered: false,
            kv_version: None,
            outcome: Outcome::Running.name().to_owned(),
            method: None,
            credential_id: None,
            key_id: None,
        }
    }

    /// The credential a key rotation made, on its entry.
    pub(super) fn credential(&mut self, c: &RotatedCredential) {
        self.method = Some(c.method);
        self.credential_id = Some(c.credential_id.clone());
        self.key_id = Some(c.key_id.clone());
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
    use crate::rotation::state::ClientState;

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
            method: None,
            credential_id: None,
            key_id: None,
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
