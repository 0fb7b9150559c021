//! The audit trail: one structured event per rotation attempt and outcome, on the `audit` log
//! target (routed to its own file with ROTATOR_AUDIT_LOG). Never a secret: only identities,
//! ids, outcomes and versions.

use uuid::Uuid;

/// The log target of audit events.
pub const TARGET: &str = "audit";

/// Who asked, from where, under which trace: carried with a rotation from the gRPC layer.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Authenticated caller identity (`anonymous` in insecure mode).
    pub caller: Option<String>,
    pub peer: Option<String>,
    /// W3C trace id from the caller's `traceparent`, or a fresh one.
    pub trace_id: String,
}

impl Origin {
    /// The trace id of a `traceparent` header (`00-<trace id>-<span id>-<flags>`), or a new one.
    pub fn trace_id_from(traceparent: Option<&str>) -> String {
        traceparent
            .and_then(|tp| tp.split('-').nth(1))
            .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .filter(|id| id.bytes().any(|b| b != b'0'))
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| Uuid::new_v4().simple().to_string())
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Started,
    Succeeded,
    Failed,
    Recovered,
    Denied,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Recovered => "recovered",
            Self::Denied => "denied",
        }
    }
}

/// One audit record. Built only here, by [`rotation`] and [`denied`].
struct Record<'a> {
    event: Event,
    origin: &'a Origin,
    client_id: &'a str,
    reason: Option<&'a str>,
    rotation_id: Option<Uuid>,
    /// `ok`, or a short machine-readable failure (`unavailable`, `not_found`, ...).
    outcome: &'a str,
    kv_version: Option<u64>,
}

/// An event in the life of one rotation: started, succeeded, failed, recovered.
pub fn rotation(
    event: Event,
    origin: &Origin,
    client_id: &str,
    reason: Option<&str>,
    rotation_id: Uuid,
    outcome: &str,
    kv_version: Option<u64>,
) {
    emit(Record {
        event,
        origin,
        client_id,
        reason,
        rotation_id: Some(rotation_id),
        outcome,
        kv_version,
    });
}

/// A refused attempt: nothing was started, so there is no rotation id and no version.
pub fn denied(origin: &Origin, client_id: &str, outcome: &str) {
    emit(Record {
        event: Event::Denied,
        origin,
        client_id,
        reason: None,
        rotation_id: None,
        outcome,
        kv_version: None,
    });
}

fn emit(r: Record<'_>) {
    tracing::info!(
        target: TARGET,
        event = r.event.as_str(),
        caller = r.origin.caller.as_deref().unwrap_or(""),
        client_id = r.client_id,
        reason = r.reason.unwrap_or(""),
        rotation_id = r.rotation_id.map(|id| id.to_string()).unwrap_or_default(),
        outcome = r.outcome,
        kv_version = r.kv_version,
        peer = r.origin.peer.as_deref().unwrap_or(""),
        trace_id = %r.origin.trace_id,
        "rotation audit event"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_traceparent_or_are_new() {
        let tp = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        assert_eq!(
            Origin::trace_id_from(Some(tp)),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            let id = Origin::trace_id_from(bad);
            assert_eq!(id.len(), 32);
            assert_ne!(id, "00000000000000000000000000000000");
        }
    }
}
