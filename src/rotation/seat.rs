//! The scheduler's seat: what this replica's scheduler and its heartbeat tell each other. The
//! scheduler lease rides on the replicas' shared record (`presence.rs`): the beat every replica
//! writes once a reconcile interval takes the lease when this replica runs a schedule and
//! nobody else holds it, and renews it while it does, so holding it costs no request of its
//! own. The beat also writes when this replica's scheduler last found the client catalogue in
//! the ledger current (`catalogue.rs`): a tenant at rest writes nothing else.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use tokio::sync::watch;

/// What the last beat found.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Seen {
    /// The beat asked for the lease (this replica ran a schedule then).
    pub asked: bool,
    /// This replica holds the scheduler lease until then.
    pub held_until: Option<SystemTime>,
    /// When a scheduler last found the ledger's catalogue current.
    pub catalogue_current_at: Option<SystemTime>,
}

impl Seen {
    fn held(&self, now: SystemTime) -> bool {
        self.held_until.is_some_and(|until| now < until)
    }
}

pub(super) struct Seat {
    wants: AtomicBool,
    catalogue_current_at: Mutex<Option<SystemTime>>,
    seen: watch::Sender<Seen>,
}

impl Default for Seat {
    fn default() -> Self {
        Self {
            wants: AtomicBool::new(false),
            catalogue_current_at: Mutex::new(None),
            seen: watch::Sender::new(Seen::default()),
        }
    }
}

impl Seat {
    /// Whether this replica runs a schedule: its beats take (and renew) the lease only then,
    /// and give it up when the schedule is gone.
    pub(super) fn want(&self, wants: bool) {
        self.wants.store(wants, Ordering::Relaxed);
    }

    pub(super) fn wants(&self) -> bool {
        self.wants.load(Ordering::Relaxed)
    }

    /// This replica's scheduler found the ledger's catalogue current at `at`: its beats write
    /// it while it holds the lease.
    pub(super) fn catalogue_current(&self, at: SystemTime) {
        let mut current = self.catalogue_current_at.lock().expect("seat poisoned");
        *current = (*current).max(Some(at));
    }

    /// What this replica's scheduler has to say about the catalogue.
    pub(super) fn catalogue_current_at(&self) -> Option<SystemTime> {
        *self.catalogue_current_at.lock().expect("seat poisoned")
    }

    /// A beat wrote (or could not write) the record: what it found.
    pub(super) fn saw(&self, seen: Seen) {
        self.seen.send_replace(seen);
    }

    /// A beat failed: the lease, if held, is held only until it expires.
    pub(super) fn missed(&self, asked: bool) {
        self.seen.send_modify(|seen| seen.asked = asked);
    }

    pub(super) fn seen(&self) -> Seen {
        *self.seen.borrow()
    }

    /// Whether this replica holds the scheduler lease now.
    pub(super) fn held(&self) -> bool {
        self.seen().held(SystemTime::now())
    }

    /// Returns once a beat has asked for the lease (the first after this replica's schedule
    /// started): whether it holds it is known then.
    pub(super) async fn asked(&self) {
        let mut seen = self.seen.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail while we borrow it.
        let _ = seen.wait_for(|seen| seen.asked).await;
    }

    /// Returns once this replica no longer holds the lease: given up by a beat, or expired
    /// because no beat renewed it.
    pub(super) async fn lost(&self) {
        let mut seen = self.seen.subscribe();
        loop {
            let now = SystemTime::now();
            let until = seen.borrow_and_update().held_until;
            let Some(left) = until.and_then(|until| until.duration_since(now).ok()) else {
                return;
            };
            tokio::select! {
                changed = seen.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(left) => return,
            }
        }
    }
}
