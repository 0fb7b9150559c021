//! The audit trail: one structured event per rotation attempt and outcome, on the `audit` log
//! target (routed to its own file with ROTATOR_AUDIT_LOG). Never a secret: only identities,
//! ids, outcomes and versions.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

/// The log target of audit events.
pub const TARGET: &str = "audit";

/// Who asked, from where, under which trace: carried with a rotation from the gRPC layer.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Authenticated caller identity (`anonymous` in insecure mode).
    pub caller: Option<String>,
    pub peer: Option<String>,
    /// The W3C trace id the call runs under (the caller's when it sent one; `trace.rs`).
    pub trace_id: String,
    /// Whose earlier request the work finishes, when that is another caller (a timed
    /// promotion: who staged the rotation).
    pub on_behalf_of: Option<String>,
    /// The service's own actor doing the work (`scheduler`, `promotion-timer`); `None` for a
    /// caller's request. The `actor` label of the rotation metrics.
    pub service_actor: Option<&'static str>,
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

/// One audit record. Built only here, by [`rotation`] and [`Refusals`].
struct Record<'a> {
    event: Event,
    origin: &'a Origin,
    client_id: &'a str,
    reason: Option<&'a str>,
    rotation_id: Option<Uuid>,
    /// `ok`, or a short machine-readable failure (`unavailable`, `not_found`, ...).
    outcome: &'a str,
    kv_version: Option<u64>,
    /// An aggregate of refusals: how many more like it came in the window.
    repeated: Option<u64>,
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
        repeated: None,
    });
}

/// Refused attempts cost at most one line per kind per window: the first of a kind (same
/// address, caller, client and outcome) is written at once, the rest are counted and written as
/// one event with `repeated` when the window ends ([`Refusals::flush`]), so a flood of refusals
/// cannot fill the disk.
pub struct Refusals {
    window: Duration,
    open: Mutex<HashMap<RefusalKind, Window>>,
}

/// Kinds tracked at once, at most; beyond, refusals are written one by one (the per-address
/// throttle keeps that rare).
const REFUSAL_KINDS_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RefusalKind {
    peer: Option<IpAddr>,
    caller: String,
    client_id: String,
    outcome: String,
}

struct Window {
    started: Instant,
    repeated: u64,
    origin: Origin,
}

impl Refusals {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// How often [`Self::flush`] is due.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// A refused attempt: nothing was started, so there is no rotation id and no version.
    pub fn denied(&self, origin: &Origin, client_id: &str, outcome: &str) {
        let kind = RefusalKind {
            peer: origin
                .peer
                .as_deref()
                .and_then(|p| p.parse::<SocketAddr>().ok())
                .map(|a| a.ip()),
            caller: origin.caller.clone().unwrap_or_default(),
            client_id: client_id.to_owned(),
            outcome: outcome.to_owned(),
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(window) = open.get_mut(&kind)
            && window.started.elapsed() < self.window
        {
            window.repeated += 1;
            return;
        }
        let tracked = open.len() < REFUSAL_KINDS_MAX || open.contains_key(&kind);
        let window = Window {
            started: Instant::now(),
            repeated: 0,
            origin: origin.clone(),
        };
        if tracked && let Some(ended) = open.insert(kind, window) {
            write_repeats(&ended, client_id, outcome);
        }
        drop(open);
        write_refusal(origin, client_id, outcome, None);
    }

    /// Writes the repeats of every window that has ended, and forgets those windows.
    pub fn flush(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|kind, window| {
            if window.started.elapsed() < self.window {
                return true;
            }
            write_repeats(window, &kind.client_id, &kind.outcome);
            false
        });
    }
}

fn write_repeats(window: &Window, client_id: &str, outcome: &str) {
    if window.repeated > 0 {
        write_refusal(&window.origin, client_id, outcome, Some(window.repeated));
    }
}

fn write_refusal(origin: &Origin, client_id: &str, outcome: &str, repeated: Option<u64>) {
    emit(Record {
        event: Event::Denied,
        origin,
        client_id,
        reason: None,
        rotation_id: None,
        outcome,
        kv_version: None,
        repeated,
    });
}

fn emit(r: Record<'_>) {
    tracing::info!(
        target: TARGET,
        event = r.event.as_str(),
        caller = r.origin.caller.as_deref().unwrap_or(""),
        on_behalf_of = r.origin.on_behalf_of.as_deref(),
        client_id = r.client_id,
        reason = r.reason.unwrap_or(""),
        rotation_id = r.rotation_id.map(|id| id.to_string()).unwrap_or_default(),
        outcome = r.outcome,
        kv_version = r.kv_version,
        repeated = r.repeated,
        peer = r.origin.peer.as_deref().unwrap_or(""),
        trace_id = %r.origin.trace_id,
        "rotation audit event"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_refusals_are_counted_not_written() {
        let refusals = Refusals::new(Duration::from_secs(3600));
        let origin = Origin {
            caller: None,
            peer: Some("10.0.0.7:40000".into()),
            trace_id: "t".into(),
            on_behalf_of: None,
            service_actor: None,
        };
        let other_port = Origin {
            peer: Some("10.0.0.7:40001".into()),
            ..origin.clone()
        };
        refusals.denied(&origin, "A", "unauthenticated");
        refusals.denied(&other_port, "A", "unauthenticated");
        refusals.denied(&origin, "A", "unauthenticated");
        refusals.denied(&origin, "B", "unauthenticated");
        let open = refusals.open.lock().unwrap();
        let counts: Vec<u64> = {
            let mut c: Vec<u64> = open.values().map(|w| w.repeated).collect();
            c.sort_unstable();
            c
        };
        assert_eq!(counts, [0, 2], "one address, two clients: two kinds");
    }
}
