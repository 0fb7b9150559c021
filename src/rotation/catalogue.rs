//! The scheduler's client catalogue: the tenant's client list, listed from Auth0 at most every
//! `ROTATOR_CATALOG_REFRESH` and kept in the ledger, so that the schedule's passes select from
//! it instead of listing the tenant each time, and a replica that takes the scheduler over
//! starts from it. A new client is scheduled within one refresh; ListClients and batches by
//! selector still list Auth0 live.

use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::{
    error::RotationError,
    inventory::all_clients,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::Catalogue,
    service::RotationService,
};

fn fresh(catalogue: &Catalogue, refresh: Duration, now: SystemTime) -> bool {
    now.duration_since(catalogue.listed_at)
        .map_or(true, |age| age < refresh)
}

/// A catalogue no older than `refresh`: the one this replica holds (`held`), else the ledger's,
/// else one listed from Auth0 now and written to the ledger.
pub(super) async fn current<'h, I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
    held: &'h mut Option<Catalogue>,
    refresh: Duration,
) -> Result<&'h Catalogue, RotationError> {
    let p = service.pipeline();
    let now = SystemTime::now();
    if !held.as_ref().is_some_and(|c| fresh(c, refresh, now)) {
        // Another scheduler's, if it is fresh (a stale one costs its head only).
        let listed_after = now.checked_sub(refresh).unwrap_or(std::time::UNIX_EPOCH);
        let kept = match p.ledger.read_catalogue(listed_after).await {
            Ok(kept) => kept.filter(|c| fresh(c, refresh, now)),
            Err(e) => {
                warn!(error = %e, "cannot read the client catalogue from Vault; listing the tenant");
                None
            }
        };
        *held = Some(match kept {
            Some(kept) => kept,
            None => {
                let listed = Catalogue {
                    listed_at: now,
                    clients: all_clients(p).await?,
                };
                info!(
                    clients = listed.clients.len(),
                    "client catalogue listed from Auth0"
                );
                // At rest the tenant's clients are those listed last time: only the time of
                // the listing is written.
                let unchanged = held.as_ref().is_some_and(|h| h.clients == listed.clients);
                if let Err(e) = p.ledger.write_catalogue(&listed, unchanged).await {
                    warn!(error = %e, "cannot keep the client catalogue in Vault; the next scheduler lists the tenant again");
                }
                listed
            }
        });
    }
    Ok(held.as_ref().expect("set above"))
}
