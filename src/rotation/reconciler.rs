//! The reconciler: finds rotations left open and heals them (`recovery.rs`), at a cost that
//! does not grow with the number of replicas.
//!
//! - **Its own intents, at once.** A replica that leaves an intent open (Auth0's answer lost and
//!   not read back, the secret not stored) remembers it and retries the heal in-process, from a
//!   second later up to every `reconcile_interval`, without waiting for its lease to expire.
//! - **Staged rotations, when due.** A replica promotes the staged rotations it staged, and
//!   those its scans find, when `promote_after` passes (its promotion timer, `timer.rs`).
//! - **Everyone else's, by one scanner.** One replica at a time holds the scanner lease (a
//!   ledger record, taken and renewed with check-and-set) and reads every client record, paced
//!   at `reconcile_rate` records per second, healing open intents whose lease has expired; it
//!   rests `reconcile_interval` between passes. The others only look at the scanner lease once
//!   an interval. A replica that dies mid-rotation is healed within its lease TTL plus one
//!   interval and one paced pass (plus the scanner lease's expiry, three intervals, when the
//!   replica that died was the scanner).

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, debug, debug_span, info, warn};
use uuid::Uuid;

use super::{
    ages::Governed,
    background::{self, Background, PROMOTION_TIMER_CALLER},
    drift,
    error::RotationError,
    ids::ClientId,
    pipeline::Pipeline,
    ports::{Ledger, SecretIssuer, SecretStore},
    presence::{self, Heart, View},
    recovery::heal_orphan,
    service::RotationService,
};

/// How long the scanner lease and a heartbeat last, in reconcile intervals; renewed every
/// interval.
const SCANNER_LEASE_INTERVALS: u32 = 3;

/// Records a paced pass reads back to back.
const SCAN_BURST: u32 = 10;

/// Overdue clients' records the scanner reads again at most each turn, to see rotations
/// other replicas made (`ages.rs`).
const AGES_CONFIRMED_PER_TURN: usize = 20;

/// How long an automatic promotion waits before trying again.
const PROMOTION_RETRY: Duration = Duration::from_secs(5);

/// Heals the intents this replica left open; returns how many are still open.
pub async fn heal_left_open<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
) -> usize {
    let p = service.pipeline();
    for (client_id, rotation_id) in p.left_open.pending() {
        match heal_one_left_open(p, &client_id, rotation_id).await {
            Ok(()) => p.left_open.healed(&client_id, rotation_id),
            Err(e) => {
                warn!(%client_id, %rotation_id, error = %e, "could not heal a rotation left open; will retry");
            }
        }
    }
    p.left_open.len()
}

/// Heals `rotation_id` if it is still open and no other replica has taken it over. Only
/// that very intent: anything else is another rotation, in flight or healed by someone
/// else, which is not this replica's to touch.
async fn heal_one_left_open<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    rotation_id: Uuid,
) -> Result<(), RotationError> {
    let record = p
        .ledger
        .read_state(client_id)
        .await
        .map_err(RotationError::Vault)?;
    let state = &record.value;
    let ours = state
        .intent
        .as_ref()
        .is_some_and(|i| i.rotation_id == rotation_id);
    let taken_over = state
        .lease
        .as_ref()
        .is_some_and(|l| l.holder != p.settings.replica && l.active(SystemTime::now()));
    if !ours || taken_over {
        return Ok(());
    }
    heal_orphan(p, client_id, record).await
}

/// One pass over every client record, as fast as Vault answers: heals each open intent
/// whose lease is free or expired. Returns how many were healed.
pub async fn reconcile_once<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
) -> usize {
    scan(service, None, false).await.healed
}

/// What a pass over every client record did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scanned {
    pub healed: usize,
    /// Open intents under a lease still running (a rotation in flight, or a dead replica's
    /// whose lease has not expired yet): the next pass looks again.
    pub still_open: usize,
}

/// A pass, paced at `reconcile_rate` records per second when `heart` is the scanner's (its
/// heartbeat and the scanner lease renewed every interval; it stops early if the lease is
/// lost), as fast as Vault answers without one.
async fn scan<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
    heart: Option<&Heart>,
    drift_pass: bool,
) -> Scanned {
    let p = service.pipeline();
    let started = SystemTime::now();
    let clients = match p.ledger.clients().await {
        Ok(clients) => clients,
        Err(e) => {
            warn!(error = %e, "reconciler cannot list client records");
            crate::metrics::reconciler_run("failed");
            return Scanned::default();
        }
    };
    // Records are read in small bursts at the average rate: a process woken for every
    // single read spends several times the CPU of the read itself on waking up.
    let rate = p.settings.reconcile_rate.get();
    let burst = SCAN_BURST.min(rate);
    let mut pace = tokio::time::interval(Duration::from_secs(1) * burst / rate);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut renewed = Instant::now();
    let mut scanned = Scanned::default();
    for (n, client_id) in clients.iter().enumerate() {
        if let Some(heart) = heart
            && n % burst as usize == 0
        {
            pace.tick().await;
            if renewed.elapsed() >= p.settings.reconcile_interval {
                match presence::beat(p, heart, true).await {
                    Some(view) if view.scanner => renewed = Instant::now(),
                    _ => return scanned,
                }
            }
        }
        let record = match p.ledger.read_state(client_id).await {
            Ok(read) => read,
            Err(e) => {
                warn!(%client_id, error = %e, "reconciler cannot read a client record");
                continue;
            }
        };
        p.ages.seen(client_id, &record.value);
        let orphaned = SystemTime::now() - p.settings.reconcile_interval;
        p.outbox.scanned(client_id, &record.value, orphaned);
        if drift_pass {
            drift::scan(p, service.drift_book(), client_id, &record.value).await;
        }
        if let Some(staged) = &record.value.staged {
            // Promoted by this replica's timer when due.
            p.timer
                .note(client_id, staged.rotation_id, staged.promote_after);
        }
        if let Some(overlap) = &record.value.overlap {
            // The old key is retired by this replica's timer when the overlap ends.
            p.timer
                .note(client_id, overlap.rotation_id, overlap.retire_after);
        }
        if record.value.intent.is_none() {
            continue;
        }
        if record.value.leased() {
            scanned.still_open += 1;
            continue;
        }
        let rotation_id = record.value.intent.as_ref().map(|i| i.rotation_id);
        match heal_orphan(p, client_id, record).await {
            Ok(()) => scanned.healed += 1,
            Err(e) => {
                scanned.still_open += 1;
                warn!(%client_id, error = %e, "reconciler could not heal; will retry");
                // Adopted as if this replica had left it open: retried at once, with backoff,
                // and counted in secret_rotator_needs_resync until healed (stuck work pages).
                if let Some(rotation_id) = rotation_id {
                    p.left_open.note(client_id, rotation_id);
                }
            }
        }
    }
    if heart.is_some() {
        p.ages.pass_done(&clients, started);
    }
    scanned
}

/// What the scanning replica remembers between its turns.
#[derive(Default)]
pub(super) struct ScanMemory {
    /// It held the scanner lease at its last turn.
    scanner: bool,
    /// The replicas and incarnations its last full pass saw.
    known: std::collections::BTreeMap<String, Uuid>,
    /// When its last full pass ran.
    last_full: Option<Instant>,
    /// Its last full pass left open intents under a running lease.
    again: bool,
}

/// Whether a replica runs an incarnation this scanner has not seen in place of one that died
/// under its name: its beat says it replaced one, or the scanner knew another.
fn restarted(view: &View, known: &std::collections::BTreeMap<String, Uuid>) -> bool {
    view.incarnations.iter().any(|(name, incarnation)| {
        let seen = known.get(name);
        seen != Some(incarnation) && (seen.is_some() || view.replaced.contains(name))
    })
}

/// This replica's turn, once a reconcile interval: its heartbeat (and the scanner lease, when
/// nobody else holds it), then, if it scans, a pass over every client record when something may
/// need healing: it just took the lease over, a replica's heartbeat lapsed or a replica
/// restarted in place of one that died, the last pass left intents open, drift is due, or the
/// safety sweep is. At rest: one read and one write. Returns the pass's result when one ran.
pub(super) async fn turn<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
    heart: &Heart,
    memory: &mut ScanMemory,
) -> Option<Scanned> {
    let p = service.pipeline();
    // Vault did not answer, or two races for the record were lost: a turn missed, and the
    // lease (if held) still this replica's until the next beat says otherwise.
    let view = presence::beat(p, heart, true).await?;
    if !view.scanner {
        memory.scanner = false;
        p.ages.not_scanning();
        return None;
    }
    let took_over = !memory.scanner;
    memory.scanner = true;
    let sweep_due = memory
        .last_full
        .is_none_or(|at| at.elapsed() >= p.settings.full_scan_interval);
    let drift_due = service
        .drift_book()
        .scan_due(p.settings.drift_scan_interval);
    let why = match () {
        _ if took_over => "took the scanner lease",
        _ if !view.lapsed.is_empty() => "a replica's heartbeat lapsed",
        _ if restarted(&view, &memory.known) => "a replica restarted in place of one that died",
        _ if memory.again => "rotations were still open",
        _ if drift_due => "drift check due",
        _ if sweep_due => "safety sweep",
        _ => {
            // A replica seen for the first time that replaced nobody has nothing to look for.
            memory.known = view.incarnations;
            confirm_ages(service).await;
            return None;
        }
    };
    debug!(why, "reconciler reads every client record");
    p.ages.judge_by(governed(service).await);
    // Only the scanner's paced passes check drift.
    let scanned = scan(service, Some(heart), drift_due).await;
    memory.known = view.incarnations;
    memory.last_full = Some(Instant::now());
    memory.again = scanned.still_open > 0;
    if !view.lapsed.is_empty() {
        presence::forget(p, &view.lapsed).await;
        memory.known.retain(|name, _| !view.lapsed.contains(name));
    }
    Some(scanned)
}

/// The rules of the schedule in force and the clients they govern, from the scheduler's
/// catalogue in the ledger; `None` without a schedule with rules.
async fn governed<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
) -> Option<Governed> {
    let schedule = service.schedule().filter(|s| !s.rules.is_empty())?;
    let catalogue = match service.pipeline().ledger.read_catalogue(UNIX_EPOCH).await {
        Ok(catalogue) => catalogue,
        Err(e) => {
            warn!(error = %e, "cannot read the client catalogue: secret ages are judged by ROTATOR_MAX_SECRET_AGE only until the next pass");
            None
        }
    };
    Some(Governed::new(schedule, catalogue.as_ref()))
}

/// At rest: the rules again when the schedule was reloaded, and the records of a few overdue
/// clients read again (another replica may have rotated them). Nothing when none is overdue.
async fn confirm_ages<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
) {
    let p = service.pipeline();
    let now = service.schedule().filter(|s| !s.rules.is_empty());
    let reloaded = match (now, p.ages.schedule()) {
        (None, None) => false,
        (Some(now), Some(judged)) => !Arc::ptr_eq(&now, &judged),
        _ => true,
    };
    if reloaded {
        p.ages.judge_by(governed(service).await);
    }
    for client_id in p
        .ages
        .to_confirm(p.settings.reconcile_interval, AGES_CONFIRMED_PER_TURN)
    {
        match p.ledger.read_state(&client_id).await {
            Ok(record) => p.ages.seen(&client_id, &record.value),
            Err(e) => warn!(%client_id, error = %e, "cannot read an overdue client's record"),
        }
    }
}

/// Heals what this replica leaves open, at once, and takes its turn scanning for everyone
/// else's; for ever. Dropping the future mid-pass is safe: every write is check-and-set and
/// a taken lease expires.
pub async fn run<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: Arc<RotationService<I, S, L>>,
) {
    // The scanner's book is what scrapes report.
    let ages: Arc<dyn crate::metrics::SecretAgeSource> = service.pipeline().ages.clone();
    crate::metrics::secret_ages_from(&ages);
    background::forever(async {
        tokio::join!(
            heal_left_open_forever(&service),
            scan_forever(&service),
            promote_due_forever(&service)
        )
    })
    .await;
}

async fn scan_forever<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
) {
    let p = service.pipeline();
    let heart = Heart {
        incarnation: p.incarnation,
        ttl: p.settings.reconcile_interval * SCANNER_LEASE_INTERVALS,
    };
    let mut memory = ScanMemory::default();
    loop {
        if let Some(scanned) = turn(service, &heart, &mut memory).await {
            let healed = scanned.healed;
            if healed > 0 {
                info!(healed, "reconciler pass healed open rotations");
            }
            crate::metrics::reconciler_run(if healed > 0 { "healed" } else { "clean" });
        }
        tokio::time::sleep(p.settings.reconcile_interval).await;
    }
}

async fn heal_left_open_forever<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
) {
    let p = service.pipeline();
    let longest = p.settings.reconcile_interval;
    let mut wait = longest.min(Duration::from_secs(1));
    loop {
        if heal_left_open(service).await == 0 {
            wait = longest.min(Duration::from_secs(1));
            p.left_open.added().await;
        } else {
            wait = (wait * 2).min(longest);
        }
        // A moment for whatever failed (Vault, Auth0) to come back.
        tokio::time::sleep(wait).await;
    }
}

/// Promotes the staged rotations this replica knows of (its own, and those the scans found)
/// when they fall due, as background work audited as the promotion timer's (on behalf of the
/// rotation's caller, with its reason); for ever.
async fn promote_due_forever<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &Arc<RotationService<I, S, L>>,
) {
    let timer = &service.pipeline().timer;
    loop {
        let (client_id, rotation_id) = timer.next_due().await;
        let span = debug_span!("scheduled promotion", otel.kind = "internal");
        let background = Background::own(
            PROMOTION_TIMER_CALLER,
            &span,
            service.pipeline().settings.max_wait,
        );
        let promoted = background
            .run(|origin, deadline| {
                service.complete(client_id.clone(), rotation_id, origin, deadline)
            })
            .instrument(span)
            .await;
        match promoted {
            Ok(_) => {}
            // Promoted or cancelled meanwhile (another replica, a caller).
            Err(RotationError::NotStaged { .. }) => {}
            Err(e) => {
                warn!(%client_id, %rotation_id, error = %e, "could not promote a staged rotation; will retry");
                if !e.leaves_open_intent() {
                    timer.note(&client_id, rotation_id, SystemTime::now() + PROMOTION_RETRY);
                }
            }
        }
    }
}
