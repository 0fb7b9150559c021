//! The replicas' shared record: each replica's heartbeat, the scanner lease and the scheduler
//! lease (`seat.rs`), kept in one ledger record that every replica reads and writes
//! (check-and-set) once a reconcile interval. That is the whole cost of a replica at rest, two
//! Vault requests per reconcile interval, whatever the number of client records and whichever
//! jobs it holds for all: the scanning replica reads every client
//! record only when a replica's heartbeat lapses (it died), a replica restarts in place of one
//! that died under the same name, it takes the scanner lease over, or the safety sweep is due.
//! A replica that stops with nothing left to anyone withdraws its heartbeat ([`leave`]): a
//! rolling restart reads no client record.

use std::time::{Duration, SystemTime};

use tracing::warn;
use uuid::Uuid;

use super::{
    error::StoreError,
    pipeline::Pipeline,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{Beat, Lease, Presence, millis},
    seat::Seen,
};

/// This replica's heartbeat: its incarnation (new at every start) and how long a beat lasts.
pub(super) struct Heart {
    pub incarnation: Uuid,
    pub ttl: Duration,
}

/// What a beat found in the shared record.
#[derive(Debug, Default)]
pub(super) struct View {
    /// This replica holds the scanner lease.
    pub scanner: bool,
    /// Other replicas whose heartbeat lapsed.
    pub lapsed: Vec<String>,
    /// Every replica's incarnation, this one's included.
    pub incarnations: std::collections::BTreeMap<String, Uuid>,
    /// The replicas whose incarnation replaced one that died under the same name.
    pub replaced: std::collections::BTreeSet<String>,
}

/// Renews this replica's heartbeat and, when `scan` is asked and nobody else holds it, the
/// scanner lease, and the scheduler lease likewise when this replica runs a schedule; one read
/// and one write (a second try after a lost race). `None` when Vault could not be read or
/// written.
pub(super) async fn beat<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    heart: &Heart,
    scan: bool,
) -> Option<View> {
    let schedule = p.seat.wants();
    for _ in 0..2 {
        match beat_once(p, heart, scan, schedule).await {
            Ok(view) => return Some(view),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => {
                warn!(error = %e, "cannot renew this replica's heartbeat");
                break;
            }
        }
    }
    p.seat.missed(schedule);
    None
}

/// Takes `lease` for `me` until `until` when `wanted` and nobody else holds it (renewing it when
/// `me` does); gives it up when `me` holds it and no longer wants it. Whether `me` holds it.
fn hold(lease: &mut Option<Lease>, me: &str, wanted: bool, now: SystemTime, until: u64) -> bool {
    let mine = lease.as_ref().is_some_and(|l| l.holder == me);
    let elsewhere = !mine && lease.as_ref().is_some_and(|l| l.active(now));
    if wanted && !elsewhere {
        *lease = Some(Lease {
            holder: me.to_owned(),
            expires_at_ms: until,
        });
        return true;
    }
    if mine {
        *lease = None;
    }
    false
}

/// The scheduler's side of a beat: its lease, and when its catalogue was found current.
fn seat<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    presence: &mut Presence,
    wanted: bool,
    now: SystemTime,
    until: u64,
) -> Seen {
    let held = hold(
        &mut presence.scheduler,
        &p.settings.replica,
        wanted,
        now,
        until,
    );
    if held && let Some(at) = p.seat.catalogue_current_at() {
        presence.catalogue_current_at_ms = presence.catalogue_current_at_ms.max(Some(millis(at)));
    }
    Seen {
        asked: wanted,
        held_until: held.then(|| std::time::UNIX_EPOCH + Duration::from_millis(until)),
        catalogue_current_at: presence
            .catalogue_current_at_ms
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

async fn beat_once<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    heart: &Heart,
    scan: bool,
    schedule: bool,
) -> Result<View, StoreError> {
    let me = &p.settings.replica;
    let read = p.ledger.read_presence().await?;
    let now = SystemTime::now();
    let until = millis(now + heart.ttl);
    let mut presence = read.value;
    let replaced = presence
        .beats
        .get(me)
        .is_some_and(|b| b.incarnation != heart.incarnation || b.replaced);
    presence.beats.insert(
        me.clone(),
        Beat {
            expires_at_ms: until,
            incarnation: heart.incarnation,
            replaced,
        },
    );
    // A scanner lease held is kept even by a beat that does not ask (a pass renewing it).
    let scanning = presence.scanner.as_ref().is_some_and(|l| l.holder == *me);
    let scanner = hold(&mut presence.scanner, me, scan || scanning, now, until);
    let seen = seat(p, &mut presence, schedule, now, until);
    p.ledger.write_presence(&presence, read.version).await?;
    p.seat.saw(seen);
    Ok(View {
        scanner,
        lapsed: presence
            .beats
            .iter()
            .filter(|(name, b)| *name != me && b.expires_at_ms <= millis(now))
            .map(|(name, _)| name.clone())
            .collect(),
        incarnations: presence
            .beats
            .iter()
            .map(|(name, b)| (name.clone(), b.incarnation))
            .collect(),
        replaced: presence
            .beats
            .iter()
            .filter(|(_, b)| b.replaced)
            .map(|(name, _)| name.clone())
            .collect(),
    })
}

/// Withdraws this replica's heartbeat (incarnation `incarnation`), and the leases it holds, as it stops with nothing left open: nobody scans for it, and a replica starting
/// under its name later is a new one, not one that died.
pub(super) async fn leave<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    incarnation: Uuid,
) {
    let me = &p.settings.replica;
    for _ in 0..2 {
        let left = async {
            let read = p.ledger.read_presence().await?;
            let mut presence = read.value;
            if presence
                .beats
                .get(me)
                .is_none_or(|b| b.incarnation != incarnation)
            {
                return Ok(());
            }
            presence.beats.remove(me);
            for lease in [&mut presence.scanner, &mut presence.scheduler] {
                if lease.as_ref().is_some_and(|l| l.holder == *me) {
                    *lease = None;
                }
            }
            p.ledger
                .write_presence(&presence, read.version)
                .await
                .map(drop)
        };
        match left.await {
            Ok(()) => return,
            Err(StoreError::CasMismatch) => continue,
            Err(e) => {
                warn!(error = %e, "cannot withdraw this replica's heartbeat; it lapses instead");
                return;
            }
        }
    }
}

/// Drops the heartbeats of `lapsed` replicas that are still lapsed (after the scan that
/// healed what they left): they are not scanned for again.
pub(super) async fn forget<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    lapsed: &[String],
) {
    let forgotten = async {
        let read = p.ledger.read_presence().await?;
        let now = millis(SystemTime::now());
        let mut presence = read.value;
        presence
            .beats
            .retain(|name, b| !(lapsed.contains(name) && b.expires_at_ms <= now));
        p.ledger.write_presence(&presence, read.version).await
    };
    if let Err(e) = forgotten.await {
        warn!(error = %e, "cannot drop the heartbeats of replicas that died; they are scanned for again");
    }
}
