//! The scheduler: passes over the tenant's clients. A pass lists the clients, finds the rule
//! that governs each rotatable one (a secret, a key or a self-signed certificate), reads its
//! ledger record and rotates those due (by age, or by the expiry of the credential its last
//! rotation made). One replica at a time runs passes, the one holding the scheduler lease,
//! which rides on the replicas' heartbeats (`seat.rs`, `presence.rs`): neither holding it nor
//! waiting for it costs a request of its own. A due client is rotated once
//! also across a takeover mid-pass: each scheduled rotation carries an idempotency key and a
//! precondition (`if_last`) made of the last rotation the pass saw: a second replica that found
//! the same client due replays the first one's answer; one that acts after anyone else rotated
//! the client is refused (`Superseded`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures_util::{StreamExt, stream};
use tracing::{Instrument, debug, debug_span, info, warn};
use uuid::Uuid;

use super::{
    background::{self, Background, SCHEDULER_CALLER},
    catalogue,
    command::{LastSeen, RotateCommand},
    error::RotationError,
    ids::{ClientId, IdempotencyKey, Reason},
    inventory::rotatable_id,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{Catalogue, Rotation},
    schedule::{Rule, Schedule},
    service::RotationService,
};

/// Scheduled rotations one replica runs at once; Auth0's budget paces them further.
const AT_ONCE: usize = 4;
/// Ledger records a pass reads at once.
const READS_AT_ONCE: usize = 16;
/// The longest a client whose scheduled rotation failed waits before it is tried again.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(3600);

/// A client a pass found due.
struct Due {
    client_id: ClientId,
    /// The schedule the pass ran, and where in it the rule that governs the client is.
    schedule: Arc<Schedule>,
    rule_at: usize,
    at: SystemTime,
    /// Its last stored rotation when the pass read its record.
    last: Option<Uuid>,
    /// Due because its credential expires then (`before_expiry`), not by age.
    expires: Option<SystemTime>,
}

impl Due {
    fn rule(&self) -> &Rule {
        &self.schedule.rules[self.rule_at]
    }
}

/// What one replica's scheduler remembers between passes.
#[derive(Default)]
pub(super) struct Memory {
    /// Clients whose scheduled rotation failed: the waits before the next tries, and when to
    /// try again.
    failed: HashMap<ClientId, (ExponentialBackoff, SystemTime)>,
    /// When each client checked is due, as its record said: it is not read again before then
    /// (a rotation by anyone only makes it later). Forgotten when the schedule changes.
    due_at: HashMap<ClientId, SystemTime>,
    /// The schedule `due_at` was computed under.
    computed_under: Option<Arc<Schedule>>,
    /// Dry-run findings already logged, so that each is logged once.
    reported: HashSet<(ClientId, SystemTime)>,
    /// The client catalogue the passes select from (`catalogue.rs`).
    catalogue: Option<catalogue::Held>,
}

/// Runs a pass every `interval`, for ever (as background work: it leaves callers Auth0's
/// reserve), while this replica holds the scheduler lease: one replica at a time lists the
/// tenant and rotates the due clients. The lease is taken and renewed by this replica's
/// heartbeats (every reconcile interval, lasting three) while it runs a schedule, and taken
/// over by another replica's once its holder stops renewing it.
pub async fn run<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: Arc<RotationService<I, S, L>>,
    interval: Duration,
    refresh: Duration,
) {
    let seat = &service.pipeline().seat;
    background::forever(async {
        let mut memory = Memory::default();
        loop {
            if let Some(schedule) = service.schedule() {
                // Whether this replica holds the lease is known after a beat that asked for it.
                seat.asked().await;
                turn(&service, &schedule, interval, refresh, &mut memory).await;
            }
            tokio::time::sleep(interval).await;
        }
    })
    .await
}

/// This replica's turn: a pass if it holds the scheduler lease; a pass whose lease is lost
/// (a beat gave it up, or none renewed it before it expired) stops starting rotations (those
/// started finish, and the next holder's are `if_last`-guarded: none is doubled). Whether it
/// ran a pass.
pub(super) async fn turn<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &Arc<RotationService<I, S, L>>,
    schedule: &Arc<Schedule>,
    interval: Duration,
    refresh: Duration,
    memory: &mut Memory,
) -> bool {
    let seat = &service.pipeline().seat;
    if !seat.held() {
        return false;
    }
    tokio::select! {
        done = pass(service, schedule, interval, refresh, memory) => {
            if let Err(e) = done {
                warn!(error = %e, "scheduler pass failed; the next pass tries again");
            }
        }
        () = seat.lost() => {
            warn!("the scheduler lease was lost during a pass; the replica holding it now goes on");
        }
    }
    true
}

/// Finds the due clients, reports them (and the dry runs' once), and rotates those not waiting
/// to be tried again.
pub(super) async fn pass<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &Arc<RotationService<I, S, L>>,
    schedule: &Arc<Schedule>,
    interval: Duration,
    refresh: Duration,
    memory: &mut Memory,
) -> Result<(), RotationError> {
    if !memory
        .computed_under
        .as_ref()
        .is_some_and(|s| Arc::ptr_eq(s, schedule))
    {
        memory.due_at.clear();
        memory.computed_under = Some(Arc::clone(schedule));
    }
    let catalogue = catalogue::current(service, &mut memory.catalogue, refresh).await?;
    let due = find_due(service, schedule, catalogue, &mut memory.due_at).await?;
    count_due(schedule, &due);
    let (dry, live): (Vec<Due>, Vec<Due>) = due.into_iter().partition(|d| d.rule().dry_run);
    report_dry_runs(&dry, &mut memory.reported);
    let now = SystemTime::now();
    memory
        .failed
        .retain(|id, _| live.iter().any(|d| d.client_id == *id));
    let ready: Vec<Due> = live
        .into_iter()
        .filter(|d| {
            memory
                .failed
                .get(&d.client_id)
                .is_none_or(|(_, at)| *at <= now)
        })
        .collect();
    if !ready.is_empty() {
        rotate_due(service, ready, interval, memory).await;
    }
    Ok(())
}

/// Rotates `ready`, a few at a time, and remembers which failed and when to try them again, and
/// when those it rotated are due next (their records are not read again before then).
async fn rotate_due<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &Arc<RotationService<I, S, L>>,
    ready: Vec<Due>,
    interval: Duration,
    memory: &mut Memory,
) {
    let Memory { failed, due_at, .. } = memory;
    let due = ready.len();
    let results: Vec<(Due, Result<Rotation, RotationError>)> = stream::iter(ready)
        .map(|d| async move {
            let result = rotate_scheduled(service, &d).await;
            (d, result)
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    // `by_others`: rotated by another replica (or a caller) meanwhile.
    let (mut rotated, mut by_others) = (0, 0);
    for (d, result) in results {
        match result {
            Ok(rotation) => {
                // Replayed: another replica found it due at the same moment and rotated it.
                match rotation.replayed {
                    true => by_others += 1,
                    false => rotated += 1,
                }
                failed.remove(&d.client_id);
                // A secret rotated and done: due again by age, as its record now says. (A
                // staged rotation or a key's overlap is read again: its record says more.)
                if !rotation.replayed
                    && rotation.promote_after.is_none()
                    && rotation.credential.is_none()
                {
                    let next = d.rule().due(
                        &d.client_id,
                        Some(rotation.metadata.rotated_at),
                        None,
                        service.started(),
                    );
                    due_at.insert(d.client_id.clone(), next);
                }
            }
            Err(e) if someone_else_is_on_it(&e) => {
                debug!(client_id = %d.client_id, error = %e, "scheduled rotation not needed");
                by_others += 1;
                failed.remove(&d.client_id);
            }
            Err(e) if background::no_room(&e) => {
                debug!(client_id = %d.client_id, error = %e, "scheduled rotation waits for the next pass");
            }
            Err(e) => {
                let (waits, at) = failed
                    .entry(d.client_id.clone())
                    .or_insert_with(|| (retry_waits(interval), SystemTime::now()));
                let wait = waits.next().unwrap_or(MAX_RETRY_WAIT);
                *at = SystemTime::now() + wait;
                warn!(
                    client_id = %d.client_id,
                    rule = %d.rule().label,
                    error = %e,
                    retry_in = %humantime::format_duration(wait),
                    "scheduled rotation failed"
                );
            }
        }
    }
    info!(due, rotated, by_others, "scheduler pass done");
}

/// Every rotatable client a rule governs whose due time has come, unless a rotation of it is
/// open, staged or in its overlap (it is then in someone's hands). Reads the record only of clients not known
/// to be due later (`due_at`).
async fn find_due<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
    schedule: &Arc<Schedule>,
    catalogue: &Catalogue,
    due_at: &mut HashMap<ClientId, SystemTime>,
) -> Result<Vec<Due>, RotationError> {
    let now = SystemTime::now();
    let p = service.pipeline();
    let governed: Vec<(ClientId, usize)> = catalogue
        .clients
        .iter()
        .filter_map(|client| {
            let id = rotatable_id(p, client)?;
            let rule_at = schedule.governing(&id, client)?;
            let later = due_at.get(&id).is_some_and(|at| *at > now);
            (!later).then_some((id, rule_at))
        })
        .collect();
    let read: Vec<_> = stream::iter(governed)
        .map(|(client_id, rule_at)| async move {
            let state = service.pipeline().ledger.read_state(&client_id).await;
            (client_id, rule_at, state)
        })
        .buffered(READS_AT_ONCE)
        .collect()
        .await;
    let mut due = Vec::new();
    for (client_id, rule_at, state) in read {
        let rule = &schedule.rules[rule_at];
        let state = state.map_err(RotationError::Vault)?.value;
        if let Some(overlap) = &state.overlap {
            // Not due before its old key is retired.
            due_at.insert(client_id, overlap.retire_after);
            continue;
        }
        if state.intent.is_some() || state.staged.is_some() {
            continue;
        }
        let last = state.last.as_ref();
        let expires = last
            .and_then(|l| l.credential.as_ref())
            .and_then(|c| c.expires_at);
        let at = rule.due(
            &client_id,
            last.map(|l| l.metadata.rotated_at),
            expires,
            service.started(),
        );
        if at > now {
            due_at.insert(client_id, at);
        } else {
            due_at.remove(&client_id);
            let by_expiry = rule.expiring_from(expires).is_some_and(|from| from <= now);
            due.push(Due {
                last: last.map(|l| l.metadata.rotation_id),
                expires: expires.filter(|_| by_expiry),
                client_id,
                schedule: Arc::clone(schedule),
                rule_at,
                at,
            });
        }
    }
    Ok(due)
}

/// One scheduled rotation, in a trace of its own, audited as the scheduler's.
async fn rotate_scheduled<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &Arc<RotationService<I, S, L>>,
    due: &Due,
) -> Result<Rotation, RotationError> {
    let span = debug_span!(
        "scheduled rotation",
        otel.kind = "internal",
        client_id = %due.client_id,
        rule = %due.rule().label,
    );
    let background = Background::own(
        SCHEDULER_CALLER,
        &span,
        service.pipeline().settings.max_wait,
    );
    // The same on every replica that found this client due after this last rotation.
    let after = due
        .last
        .map_or_else(|| "first".to_owned(), |id| id.simple().to_string());
    let key = IdempotencyKey::parse(&format!("schedule:{}:{after}", due.client_id))?;
    let reason = match due.expires {
        Some(expires) => format!(
            "scheduled by rule {:?}: its credential expires {}",
            due.rule().label,
            humantime::format_rfc3339_seconds(expires)
        ),
        None => format!(
            "scheduled by rule {:?}: due every {}",
            due.rule().label,
            due.rule().max_age
        ),
    };
    let command = RotateCommand {
        client_id: due.client_id.clone(),
        reason: Reason::parse(&reason).ok().flatten(),
        idempotency_key: key,
        require_in_sync: false,
        strategy: due.rule().strategy,
        distribute_for: None,
        origin: background.origin.clone(),
        if_last: Some(LastSeen(due.last)),
    };
    background
        .run(|origin, deadline| {
            let command = RotateCommand {
                origin,
                ..command.clone()
            };
            service.rotate(command, deadline)
        })
        .instrument(span)
        .await
}

/// The due clients each rule found, in `secret_rotator_schedule_due_clients` (every rule of
/// the schedule, none found included; rules gone from it are dropped).
fn count_due(schedule: &Schedule, due: &[Due]) {
    let mut counts: BTreeMap<(&str, bool), usize> = schedule
        .rules
        .iter()
        .map(|r| ((r.label.as_str(), r.dry_run), 0))
        .collect();
    for d in due {
        *counts
            .entry((d.rule().label.as_str(), d.rule().dry_run))
            .or_default() += 1;
    }
    let counts: Vec<(String, bool, usize)> = counts
        .into_iter()
        .map(|((rule, dry_run), n)| (rule.to_owned(), dry_run, n))
        .collect();
    crate::metrics::schedule_due(&counts);
}

/// Logs each dry-run finding once: `reported` keeps those still due.
fn report_dry_runs(dry: &[Due], reported: &mut HashSet<(ClientId, SystemTime)>) {
    reported.retain(|(id, at)| dry.iter().any(|d| d.client_id == *id && d.at == *at));
    for d in dry {
        if reported.insert((d.client_id.clone(), d.at)) {
            info!(
                client_id = %d.client_id,
                rule = %d.rule().label,
                due = %humantime::format_rfc3339_seconds(d.at),
                "schedule dry run: would rotate this client now"
            );
        }
    }
}

/// The waits before a failed scheduled rotation is tried again: the pass interval, doubling
/// up to an hour.
fn retry_waits(interval: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(interval)
        .with_factor(2.0)
        .with_max_delay(MAX_RETRY_WAIT)
        .without_max_times()
        .build()
}

/// Another replica or a caller rotated the client, or is rotating it.
fn someone_else_is_on_it(e: &RotationError) -> bool {
    matches!(
        e,
        RotationError::Superseded { .. }
            | RotationError::Busy
            | RotationError::IdempotencyInProgress
            | RotationError::StagedPending { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rotation_waits_the_interval_then_twice_as_long_up_to_an_hour() {
        let waits: Vec<u64> = retry_waits(Duration::from_secs(60))
            .take(8)
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }
}
