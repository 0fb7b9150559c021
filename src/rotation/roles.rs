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

/// Who holds a role's lease, as far as this replica knows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) enum Holder {
    /// Not known: the lease is read.
    #[default]
    Unknown,
    /// This replica, at this version of the record: renewing it is one write.
    Me(KvVersion),
    /// Another replica, until then at least: nothing is read before.
    Elsewhere(SystemTime),
}

/// Takes `role`'s lease for `ttl` if it is free, expired or already this replica's (a write
/// only, when `known` says this replica holds it; nothing at all when `known` says another
/// holds it still). Who holds it now; a lost race is not an error: the winner does the job.
pub(super) async fn take<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    role: Role,
    ttl: Duration,
    known: Holder,
) -> Holder {
    match known {
        Holder::Elsewhere(until) if SystemTime::now() < until => return known,
        Holder::Me(held) => {
            if let Some(version) = renew(p, role, held, ttl).await {
                return Holder::Me(version);
            }
        }
        _ => {}
    }
    let read = match p.ledger.read_role(role).await {
        Ok(read) => read,
        Err(e) => {
            warn!(role = role.as_str(), error = %e, "cannot read the lease of a job one replica does");
            return Holder::Unknown;
        }
    };
    if let Some(other) = read
        .value
        .as_ref()
        .filter(|l| l.holder != p.settings.replica && l.active(SystemTime::now()))
    {
        return Holder::Elsewhere(
            std::time::UNIX_EPOCH + Duration::from_millis(other.expires_at_ms),
        );
    }
    match p
        .ledger
        .write_role(role, &lease(p, ttl), read.version)
        .await
    {
        Ok(version) => Holder::Me(version),
        Err(_) => Holder::Unknown,
    }
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

/// Renews `role`'s lease every `every` for as long as it holds, keeping the version it is at in
/// `held`; returns when it is lost.
pub(super) async fn keep<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    role: Role,
    held: &mut KvVersion,
    every: Duration,
    ttl: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        match renew(p, role, *held, ttl).await {
            Some(next) => *held = next,
            None => return,
        }
    }
}
