//! The replicas' shared record: each replica's heartbeat and the scanner lease, kept in one
//! ledger record that every replica reads and writes (check-and-set) once a reconcile interval.
//! That is the whole cost of the reconciler at rest, two Vault requests per replica per
//! interval, whatever the number of client records: the scanning replica reads every client
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
    records::{Beat, Lease, millis},
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
/// scanner lease; one read and one write (a second try after a lost race). `None` when Vault
/// could not be read or written.
pub(super) async fn beat<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    heart: &Heart,
    scan: bool,
) -> Option<View> {
    for _ in 0..2 {
        match beat_once(p, heart, scan).await {
            Ok(view) => return Some(view),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => {
                warn!(error = %e, "cannot renew this replica's heartbeat");
                return None;
            }
        }
    }
    None
}

async fn beat_once<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    heart: &Heart,
    scan: bool,
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
    let held_elsewhere = presence
        .scanner
        .as_ref()
        .is_some_and(|l| l.holder != *me && l.active(now));
    let mine = presence.scanner.as_ref().is_some_and(|l| l.holder == *me);
    if (scan && !held_elsewhere) || mine {
        presence.scanner = Some(Lease {
            holder: me.clone(),
            expires_at_ms: until,
        });
    }
    p.ledger.write_presence(&presence, read.version).await?;
    Ok(View {
        scanner: presence.scanner.as_ref().is_some_and(|l| l.holder == *me),
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

/// Withdraws this replica's heartbeat (incarnation `incarnation`), and the scanner lease if it
/// holds it, as it stops with nothing left open: nobody scans for it, and a replica starting
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
            if presence.scanner.as_ref().is_some_and(|l| l.holder == *me) {
                presence.scanner = None;
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
