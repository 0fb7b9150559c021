//! The scheduler's client catalogue: the tenant's client list, listed from Auth0 at most every
//! `ROTATOR_CATALOG_REFRESH` and kept in the ledger, so that the schedule's passes select from
//! it instead of listing the tenant each time, and a replica that takes the scheduler over
//! starts from it. A new client is scheduled within one refresh; ListClients and batches by
//! selector still list Auth0 live.
//!
//! At rest a refresh finds the clients listed last time: nothing is written but the time it
//! found them, which the scheduler's next heartbeat carries (`seat.rs`); a scheduler taking
//! over reads the catalogue as current as of then.

use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::{
    error::RotationError,
    inventory::all_clients,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::Catalogue,
    service::RotationService,
};

/// The catalogue a scheduler selects from, and whether it is the one in the ledger.
pub(super) struct Held {
    catalogue: Catalogue,
    in_ledger: bool,
}

fn fresh(at: SystemTime, refresh: Duration, now: SystemTime) -> bool {
    now.duration_since(at).map_or(true, |age| age < refresh)
}

/// A catalogue no older than `refresh`: the one this replica holds (`held`), else the ledger's
/// when it is fresh, else one listed from Auth0 now and written to the ledger if its clients
/// changed.
pub(super) async fn current<'h, I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
    held: &'h mut Option<Held>,
    refresh: Duration,
) -> Result<&'h Catalogue, RotationError> {
    let p = service.pipeline();
    let now = SystemTime::now();
    if held
        .as_ref()
        .is_some_and(|h| fresh(h.catalogue.listed_at, refresh, now))
    {
        return Ok(&held.as_ref().expect("checked above").catalogue);
    }
    // The ledger's, when it may be fresher than the one held: found current lately by another
    // scheduler, or this replica holds none (a stale one in the ledger costs its head only).
    let confirmed = p
        .seat
        .seen()
        .catalogue_current_at
        .filter(|at| fresh(*at, refresh, now));
    let look = match (held.as_ref(), confirmed) {
        (None, _) => true,
        (Some(h), Some(at)) => at > h.catalogue.listed_at,
        (Some(_), None) => false,
    };
    if look {
        let listed_after = match confirmed {
            Some(_) => std::time::UNIX_EPOCH,
            None => now.checked_sub(refresh).unwrap_or(std::time::UNIX_EPOCH),
        };
        match p.ledger.read_catalogue(listed_after).await {
            Ok(Some(mut kept)) => {
                kept.listed_at = kept.listed_at.max(confirmed.unwrap_or(kept.listed_at));
                if fresh(kept.listed_at, refresh, now) {
                    *held = Some(Held {
                        catalogue: kept,
                        in_ledger: true,
                    });
                    return Ok(&held.as_ref().expect("set above").catalogue);
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "cannot read the client catalogue from Vault; listing the tenant");
            }
        }
    }
    let listed = Catalogue {
        listed_at: now,
        clients: all_clients(p).await?,
    };
    info!(
        clients = listed.clients.len(),
        "client catalogue listed from Auth0"
    );
    let unchanged = held
        .as_ref()
        .is_some_and(|h| h.in_ledger && h.catalogue.clients == listed.clients);
    let in_ledger = unchanged
        || match p.ledger.write_catalogue(&listed).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "cannot keep the client catalogue in Vault; the next scheduler lists the tenant again");
                false
            }
        };
    if in_ledger {
        p.seat.catalogue_current(now);
    }
    *held = Some(Held {
        catalogue: listed,
        in_ledger,
    });
    Ok(&held.as_ref().expect("set above").catalogue)
}
