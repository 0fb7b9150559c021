//! Rolling back a secret rotation (RollbackRotation): the client's last rotation is undone while
//! Vault still keeps the secret before it (`ROTATOR_PREVIOUS_SECRET_TTL`). Under the client's
//! lease, with a `Rollback` intent:
//!
//! 1. Auth0's secret is set back to Vault's `previous_client_secret` (PATCH);
//! 2. the key becomes `client_secret` = that secret, `previous_client_secret` = the undone one
//!    (check-and-set), and the record keeps the rollback.
//!
//! Consumers reading `client_secret`, `next_client_secret`, `previous_client_secret` in that
//! order find a working secret at every moment: before the Vault write the undone secret is
//! `client_secret` and the one Auth0 accepts `previous_client_secret`; after it, the other way
//! round. A rollback cut off is healed from Auth0's live secret (`previous.rs`): equal to
//! Vault's previous one, the rollback is finished in Vault; equal to the current one, nothing
//! happened.

use std::time::SystemTime;

use tokio::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    audit::Origin,
    rotation::{
        error::{IssuerError, RollbackRefusal, RotationError, Transport},
        ids::ClientId,
        pipeline::{Open, Pipeline},
        ports::{Ledger, SecretIssuer, SecretStore},
        previous::{self, RolledBackRotation},
        records::{Intent, RolledBack, Step, Strategy},
        recovery,
        state::ClientState,
    },
};

/// What the record says about rolling back `rotation_id`: done before (the same answer again),
/// refused, or to be done.
fn check(
    before: &ClientState,
    client_id: &ClientId,
    rotation_id: Uuid,
) -> Result<Option<RolledBack>, RotationError> {
    let refused = |why| RotationError::NotRollbackable {
        client_id: client_id.clone(),
        rotation_id,
        why,
    };
    let entry = before.history.iter().find(|e| e.rotation_id == rotation_id);
    let last = before.last.as_ref().map(|l| &l.metadata);
    let is_last = last.is_some_and(|l| l.rotation_id == rotation_id);
    let undone = before.rolled_back.as_ref();
    if entry.is_none() && !is_last && undone.is_none_or(|u| u.rotation_id != rotation_id) {
        return Err(RotationError::RotationNotFound {
            client_id: client_id.clone(),
            rotation_id,
        });
    }
    if let Some(done) = undone {
        return match done.rotation_id == rotation_id {
            true => Ok(Some(done.clone())),
            false => Err(refused(RollbackRefusal::AlreadyRolledBack {
                undone: done.rotation_id,
            })),
        };
    }
    match &before.staged {
        Some(s) if s.rotation_id == rotation_id => return Err(refused(RollbackRefusal::Staged)),
        Some(s) if is_last => {
            return Err(refused(RollbackRefusal::StagedAfter {
                staged: s.rotation_id,
            }));
        }
        _ => {}
    }
    let overlapping = before
        .overlap
        .as_ref()
        .is_some_and(|o| o.rotation_id == rotation_id);
    let key = overlapping
        || entry.is_some_and(|e| e.strategy == Strategy::Key)
        || (is_last && last.is_some_and(|l| l.strategy == Strategy::Key));
    match (entry, last) {
        _ if key => Err(refused(RollbackRefusal::Key)),
        (_, Some(last)) if last.rotation_id != rotation_id => {
            match entry.is_some_and(|e| e.stored_at.is_some()) {
                true => Err(refused(RollbackRefusal::Later {
                    last: last.rotation_id,
                })),
                false => Err(refused(RollbackRefusal::NothingStored)),
            }
        }
        (_, None) => Err(refused(RollbackRefusal::NothingStored)),
        _ => Ok(None),
    }
}

/// RollbackRotation: undoes rotation `rotation_id`, the client's last. Repeated after it was
/// rolled back, answers the same (`replayed`).
pub(in crate::rotation) async fn rollback<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    rotation_id: Uuid,
    origin: &Origin,
    deadline: Instant,
) -> Result<RolledBackRotation, RotationError> {
    p.recovery_possible()?;
    p.locked(client_id, rotation_id, async {
        let path = p.path(client_id);
        let intent = Intent::new(rotation_id, Step::Rollback, origin);
        let lease = recovery::acquire(p, client_id, &path, &intent, deadline).await?;
        // A refusal changes nothing, the undone rotation's history entry included.
        let unchanged = |lease: crate::rotation::state::Acquired| async move {
            let _ = p
                .close(client_id, rotation_id, lease.fence, lease.before)
                .await;
        };
        match check(&lease.before, client_id, rotation_id) {
            Ok(Some(done)) => {
                unchanged(lease).await;
                return Ok(RolledBackRotation {
                    rotation_id,
                    stored: p.stored(path, done.kv_version),
                    at: done.at,
                    replayed: true,
                });
            }
            Err(refusal) => {
                unchanged(lease).await;
                return Err(refusal);
            }
            Ok(None) => {}
        }
        let key = match p.store.read_secret(&path).await {
            Ok(Some(key)) => key,
            Ok(None) => {
                unchanged(lease).await;
                return Err(RotationError::NotRollbackable {
                    client_id: client_id.clone(),
                    rotation_id,
                    why: RollbackRefusal::PreviousGone,
                });
            }
            Err(e) => {
                unchanged(lease).await;
                return Err(RotationError::VaultBeforeRotation(e));
            }
        };
        let Some(previous) = key
            .value
            .previous
            .clone()
            .filter(|prev| prev.expires_at > SystemTime::now())
        else {
            unchanged(lease).await;
            return Err(RotationError::NotRollbackable {
                client_id: client_id.clone(),
                rotation_id,
                why: RollbackRefusal::PreviousGone,
            });
        };
        let issued = match p.issuer.set_secret(client_id, &previous.secret).await {
            Ok(issued) if issued.secret_is(&previous.secret) => issued,
            Err(e) if !e.outcome_unknown() => {
                unchanged(lease).await;
                return Err(e.into());
            }
            // Auth0 answered with another secret, or not at all: the rollback's heal reads
            // back what it holds (`recovery.rs`), and finishes the rollback when that is the
            // previous secret.
            lost => {
                let lost = lost
                    .err()
                    .unwrap_or(IssuerError::OutcomeUnknown(Transport::Unreadable));
                let healed =
                    recovery::lost_answer(p, client_id, &intent, lease, lost.clone()).await?;
                return match healed.metadata.recovered {
                    // Auth0 held a secret Vault had never seen: stored, not rolled back.
                    true => Err(lost.into()),
                    false => Ok(RolledBackRotation {
                        rotation_id,
                        stored: healed.stored,
                        at: healed.metadata.rotated_at,
                        replayed: false,
                    }),
                };
            }
        };
        // The service's own secret must still get it a token before replicas are told to use
        // it; if not, the undone one is put back.
        if p.is_own(client_id) && !super::staged::proved(p, &previous.secret).await {
            if let Err(e) = p.issuer.set_secret(client_id, &key.value.current).await {
                warn!(%rotation_id, error = %e, "could not put the service's own secret back; the reconciler heals the rollback");
                return Err(e.into());
            }
            unchanged(lease).await;
            return Err(RotationError::OwnCredentialNotProved {
                client_id: client_id.clone(),
            });
        }
        let open = Open {
            client_id,
            path: &path,
            intent: &intent,
            fence: lease.fence,
            before: lease.before,
        };
        let done = previous::finish(p, open, key, issued, deadline).await?;
        info!(%rotation_id, vault.version = %done.stored.version, "rotation rolled back");
        Ok(done)
    })
    .await
}
