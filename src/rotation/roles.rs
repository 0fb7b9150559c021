//! Jobs one replica at a time does for all (the schedule's passes), each held through a lease in
//! the ledger: a record taken and renewed with check-and-set, taken over by another replica once
//! its holder stops renewing it (dead, or cut off from Vault). The reconciler's scanner lease
//! shares the replicas' heartbeat record instead (`presence.rs`).

use std::time::{Duration, SystemTime};

use tracing::warn;

use super::{
    pipeline::Pipeline,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{KvVersion, Lease, Role, millis},
};

fn lease<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    ttl: Duration,
) -> Lease {
    Lease {
        holder: p.settings.replica.clone(),
        expires_at_ms: millis(SystemTime::now() + ttl),
    }
}

/// Takes `role`'s lease for `ttl` if it is free, expired or already this replica's; the version
/// it was written at when this replica holds it now. A lost race is not an error: the winner
/// does the job.
pub(super) async fn take<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    role: Role,
    ttl: Duration,
) -> Option<KvVersion> {
    let read = match p.ledger.read_role(role).await {
        Ok(read) => read,
        Err(e) => {
            warn!(role = role.as_str(), error = %e, "cannot read the lease of a job one replica does");
            return None;
        }
    };
    let elsewhere = read
        .value
        .as_ref()
        .is_some_and(|l| l.holder != p.settings.replica && l.active(SystemTime::now()));
    if elsewhere {
        return None;
    }
    p.ledger
        .write_role(role, &lease(p, ttl), read.version)
        .await
        .ok()
}

/// Renews `role`'s lease held at `held` for `ttl`; `None` when it was lost.
pub(super) async fn renew<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    role: Role,
    held: KvVersion,
    ttl: Duration,
) -> Option<KvVersion> {
    p.ledger.write_role(role, &lease(p, ttl), held).await.ok()
}

/// Renews `role`'s lease every `every` for as long as it holds; returns when it is lost.
pub(super) async fn keep<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    role: Role,
    mut held: KvVersion,
    every: Duration,
    ttl: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        match renew(p, role, held, ttl).await {
            Some(next) => held = next,
            None => return,
        }
    }
}
