//! How old each client's secret (or key) is, as the ledger says, and which clients are
//! overdue: the [`Ages`] book, exported by the scanning replica as
//! `secret_rotator_oldest_secret_age_seconds`, `secret_rotator_clients_overdue` and (with
//! `ROTATOR_METRICS_PER_CLIENT`) `secret_rotator_secret_age_seconds`. Never an Auth0 request:
//!
//! - the scanner's full passes (`reconciler.rs`) read every record and fill the book; its
//!   figures count from the end of its first full pass after taking the scanner lease;
//! - the rotations this replica closes update it at once;
//! - another replica's rotation reaches it at the next full pass, except for a client the book
//!   finds overdue: the scanner reads those records again, a few every reconcile interval, so a
//!   client rotated elsewhere leaves the overdue count within an interval or so.
//!
//! A client is overdue once its last rotation is older than `ROTATOR_MAX_SECRET_AGE`, or past
//! the time its schedule rule makes it due (its `max_age` plus its jitter share, moved into
//! the rule's window), whichever comes first. Which rule governs a client is read from the
//! scheduler's catalogue in the ledger; with a catalogue, the record of a client that is not
//! in it and was last rotated before it was listed (deleted from the tenant) is left out.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use super::{
    ids::ClientId,
    records::Catalogue,
    schedule::{Rule, Schedule},
    state::ClientState,
};
use crate::metrics::{SecretAgeSource, SecretAges};

/// The schedule's rules, and which governs each client of the scheduler's catalogue as the
/// ledger held it when they were read.
#[derive(Debug)]
pub(super) struct Governed {
    pub schedule: Arc<Schedule>,
    /// When the catalogue was listed, and the index of the rule that governs each of its
    /// clients; `None` while the ledger holds no catalogue.
    catalogue: Option<(SystemTime, HashMap<ClientId, Option<usize>>)>,
}

impl Governed {
    pub(super) fn new(schedule: Arc<Schedule>, catalogue: Option<&Catalogue>) -> Self {
        let catalogue = catalogue.map(|catalogue| {
            let clients = catalogue
                .clients
                .iter()
                .filter_map(|client| {
                    let id = ClientId::parse(client.client_id.0.as_deref()?).ok()?;
                    let rule = schedule.governing(&id, client);
                    Some((id, rule))
                })
                .collect();
            (catalogue.listed_at, clients)
        });
        Self {
            schedule,
            catalogue,
        }
    }

    /// The rule that governs `client_id`, as far as the catalogue knows.
    fn rule(&self, client_id: &ClientId) -> Option<&Rule> {
        let (_, clients) = self.catalogue.as_ref()?;
        Some(&self.schedule.rules[(*clients.get(client_id)?)?])
    }

    /// Whether the figures leave `client_id` out: it was rotated before the catalogue was
    /// listed and is not in it (deleted from the tenant).
    fn gone(&self, client_id: &ClientId, entry: &Entry) -> bool {
        self.catalogue.as_ref().is_some_and(|(listed_at, clients)| {
            entry.rotated_at < *listed_at && !clients.contains_key(client_id)
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    rotated_at: SystemTime,
    /// A key rotation's credential expiry (a rule may make the client due before it).
    expires: Option<SystemTime>,
    /// When the record was last read or written by this replica.
    seen_at: SystemTime,
}

#[derive(Debug, Default)]
struct Book {
    /// This replica scans, and has read every record since it took the scanner lease.
    known: bool,
    entries: HashMap<ClientId, Entry>,
    governed: Option<Governed>,
}

/// The ages of the secrets the ledger records, as this replica knows them.
#[derive(Debug)]
pub(super) struct Ages {
    max_age: Option<Duration>,
    book: Mutex<Book>,
}

impl Ages {
    pub(super) fn new(max_age: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            max_age,
            book: Mutex::new(Book::default()),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("age book poisoned")
    }

    /// What a record read or written now says of `client_id`'s last rotation.
    pub(super) fn seen(&self, client_id: &ClientId, state: &ClientState) {
        let mut book = self.book();
        match &state.last {
            Some(last) => {
                let entry = Entry {
                    rotated_at: last.metadata.rotated_at,
                    expires: last.credential.as_ref().and_then(|c| c.expires_at),
                    seen_at: SystemTime::now(),
                };
                book.entries.insert(client_id.clone(), entry);
            }
            None => {
                book.entries.remove(client_id);
            }
        }
    }

    /// The rules that govern the catalogue's clients, read at a full pass or when the schedule
    /// is reloaded (`None`: no schedule with rules).
    pub(super) fn judge_by(&self, governed: Option<Governed>) {
        self.book().governed = governed;
    }

    /// The rules the book judges by, if any.
    pub(super) fn schedule(&self) -> Option<Arc<Schedule>> {
        self.book()
            .governed
            .as_ref()
            .map(|g| Arc::clone(&g.schedule))
    }

    /// A full pass that started at `started` read every record of `listed`: the book holds
    /// those, and those of rotations closed since it started (their clients may be new), and
    /// counts.
    pub(super) fn pass_done(&self, listed: &[ClientId], started: SystemTime) {
        let listed: std::collections::HashSet<&ClientId> = listed.iter().collect();
        let mut book = self.book();
        book.entries
            .retain(|id, entry| listed.contains(id) || entry.seen_at >= started);
        book.known = true;
    }

    /// This replica does not scan (any more): its figures do not count.
    pub(super) fn not_scanning(&self) {
        self.book().known = false;
    }

    /// Up to `at_most` overdue clients whose records were not read within `within`, those
    /// read longest ago first: read again, they show a rotation another replica made.
    pub(super) fn to_confirm(&self, within: Duration, at_most: usize) -> Vec<ClientId> {
        let now = SystemTime::now();
        let book = self.book();
        if !book.known {
            return Vec::new();
        }
        let mut stale: Vec<(SystemTime, &ClientId)> = book
            .counted()
            .filter(|(id, entry)| {
                self.overdue(&book, id, entry, now)
                    && now.duration_since(entry.seen_at).is_ok_and(|d| d >= within)
            })
            .map(|(id, entry)| (entry.seen_at, id))
            .collect();
        stale.sort();
        stale
            .into_iter()
            .take(at_most)
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn overdue(&self, book: &Book, client_id: &ClientId, entry: &Entry, now: SystemTime) -> bool {
        let by_age = self.max_age.map(|max| entry.rotated_at + max);
        // `since` only serves a client without a rotation, which the book does not hold.
        let by_rule = (book.governed.as_ref())
            .and_then(|g| g.rule(client_id))
            .map(|rule| rule.due(client_id, Some(entry.rotated_at), entry.expires, now));
        match (by_age, by_rule) {
            (Some(a), Some(r)) => a.min(r) < now,
            (Some(at), None) | (None, Some(at)) => at < now,
            (None, None) => false,
        }
    }
}

impl Book {
    /// The entries the figures count: all but those of clients deleted from the tenant.
    fn counted(&self) -> impl Iterator<Item = (&ClientId, &Entry)> {
        self.entries
            .iter()
            .filter(|(id, entry)| !self.governed.as_ref().is_some_and(|g| g.gone(id, entry)))
    }
}

impl SecretAgeSource for Ages {
    fn secret_ages(&self, now: SystemTime, by_client: bool) -> SecretAges {
        let book = self.book();
        if !book.known {
            return SecretAges::default();
        }
        let age = |entry: &Entry| now.duration_since(entry.rotated_at).unwrap_or_default();
        let mut ages = SecretAges::default();
        for (id, entry) in book.counted() {
            ages.oldest = ages.oldest.max(Some(age(entry)));
            if self.overdue(&book, id, entry, now) {
                ages.overdue += 1;
            }
            if by_client {
                ages.by_client.push((id.as_str().to_owned(), age(entry)));
            }
        }
        ages.by_client.sort();
        ages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::{KvVersion, LastRotation, RotationMetadata, Strategy};

    fn rotated(at: SystemTime) -> ClientState {
        ClientState {
            last: Some(LastRotation {
                metadata: RotationMetadata {
                    rotation_id: uuid::Uuid::new_v4(),
                    rotated_at: at,
                    reason: None,
                    caller: None,
                    recovered: false,
                    strategy: Strategy::Immediate,
                },
                kv_version: KvVersion(1),
                credential: None,
            }),
            ..ClientState::default()
        }
    }

    /// A full pass keeps what it listed and what rotated while it ran (a client created meanwhile
    /// is not in its listing), and drops the rest (records deleted since).
    #[test]
    fn a_pass_keeps_the_rotations_closed_while_it_ran() {
        let ages = Ages::new(None);
        let id = |s: &str| ClientId::parse(s).unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        ages.seen(&id("listed"), &rotated(hour_ago));
        ages.seen(&id("deleted"), &rotated(hour_ago));
        let started = SystemTime::now();
        ages.seen(&id("new"), &rotated(SystemTime::now()));
        ages.pass_done(&[id("listed")], started);
        let seen = ages.secret_ages(SystemTime::now(), true);
        let ids: Vec<&str> = seen.by_client.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(ids, ["listed", "new"]);
    }
}
