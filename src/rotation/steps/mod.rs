//! The steps of each kind of rotation, each run through the pipeline (`pipeline.rs`): acquire,
//! act, store or refuse, close, finish. A kind is its steps; the bookkeeping is the
//! pipeline's, and the heal of each step is `recovery.rs`'s.
//!
//! - `immediate`: rotate-secret, then store what Auth0 answered;
//! - `staged`: stage the next secret in Vault, promote it at Auth0, or cancel it;
//! - `keys`: a key or certificate registered beside the old one, switched to, the old retired;
//! - `rollback`: the last secret rotation undone while Vault keeps the secret before it.
//!
//! RotateSecret itself ([`rotate`]) is common to both: one rotation per idempotency key, the
//! client's lock and lease, the checks only the lease makes true, then the kind's first step.

mod immediate;
mod keys;
mod rollback;
mod staged;

use tokio::time::Instant;
use tracing::info;
use uuid::Uuid;

pub(super) use keys::check as check_key_rotation;
pub(super) use rollback::rollback;
pub use staged::Cancelled;
pub(super) use staged::{cancel, promote};

use super::{
    command::{LastSeen, RotateCommand},
    error::RotationError,
    idempotency::{self, Claim},
    ids::{ClientId, OwnedKey, ValidationError},
    pipeline::Pipeline,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{Drift, IdempotencyOutcome, Intent, Rotation, Step, Strategy},
    recovery,
    state::ClientState,
};

/// RotateSecret: rotates once per idempotency key (or once, without one).
pub(super) async fn rotate<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    command: &RotateCommand,
    rotation_id: Uuid,
    deadline: Instant,
) -> Result<Rotation, RotationError> {
    p.recovery_possible()?;
    let Some(key) = command.idempotency_key.clone() else {
        return rotate_once(p, command, rotation_id, deadline).await;
    };
    let key = OwnedKey {
        caller: command.origin.caller.clone().unwrap_or_default(),
        key,
    };
    let claimed =
        match idempotency::claim(p, &key, &command.client_id, rotation_id, deadline).await? {
            Claim::Replay(mut rotation) => {
                info!(rotation_id = %rotation.metadata.rotation_id, "idempotency key replayed");
                rotation.replayed = true;
                return Ok(*rotation);
            }
            Claim::Claimed(version) => version,
        };
    let result = rotate_once(p, command, rotation_id, deadline).await;
    let outcome = match &result {
        Ok(rotation) => Some(IdempotencyOutcome::Done {
            rotation: Box::new(rotation.clone()),
        }),
        // Recovery completes the key when it heals the intent.
        Err(e) if e.leaves_open_intent() => None,
        Err(_) => Some(IdempotencyOutcome::Released),
    };
    if let Some(outcome) = outcome {
        idempotency::settle(p, &key, &command.client_id, outcome, claimed).await;
    }
    result
}

/// One rotation under the client's lock and lease: refused when the record does not allow it,
/// else the first step of its kind.
async fn rotate_once<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    command: &RotateCommand,
    rotation_id: Uuid,
    deadline: Instant,
) -> Result<Rotation, RotationError> {
    let client_id = &command.client_id;
    p.locked(client_id, rotation_id, async {
        let path = p.path(client_id);
        let step = match command.strategy {
            Strategy::Immediate => Step::Rotate,
            Strategy::Staged => Step::Stage,
            Strategy::Key => Step::KeyRotate,
        };
        let intent = Intent {
            reason: command.reason.clone(),
            idempotency_key: command.idempotency_key.clone(),
            ..Intent::new(rotation_id, step, &command.origin)
        };
        let lease = recovery::acquire(p, client_id, &path, &intent, deadline).await?;
        // Under the lease, no rotation of this client is halfway: a difference is real.
        let refused = match check_strategy(command, &lease.before) {
            Err(refusal) => Some(refusal),
            Ok(()) if command.require_in_sync => require_in_sync(p, client_id).await.err(),
            Ok(()) => None,
        };
        if let Some(refusal) = refused {
            return p.refuse(client_id, rotation_id, lease, refusal).await;
        }
        // A client rotated by key before is one again: no rotate-secret for Auth0 to refuse.
        let by_key = command.strategy == Strategy::Key
            || lease
                .before
                .last
                .as_ref()
                .is_some_and(|l| l.metadata.strategy == Strategy::Key);
        // An immediate request that names an overlap is for a client with a key: asked for
        // a client with a secret, it is refused before Auth0 changes anything.
        let overlap_asked =
            command.strategy == Strategy::Immediate && command.distribute_for.is_some();
        if by_key || overlap_asked {
            return match p.issuer.read_client(client_id).await {
                Ok(client) if by_key || crate::rotation::overlap::key_method(&client).is_some() => {
                    keys::rotate(p, command, &intent, &path, lease, client, deadline).await
                }
                Ok(_) => {
                    let refusal = ValidationError::DistributeForImmediate.into();
                    p.refuse(client_id, rotation_id, lease, refusal).await
                }
                Err(e) => p.refuse(client_id, rotation_id, lease, e.into()).await,
            };
        }
        match command.strategy {
            Strategy::Immediate | Strategy::Key => {
                immediate::rotate(p, command, &intent, path, lease, deadline).await
            }
            Strategy::Staged => staged::stage(p, command, &intent, &path, lease, deadline).await,
        }
    })
    .await
}

/// Refuses a rotation the client's record does not allow: any rotation while a staged one
/// waits (complete or cancel it first), and one whose caller's view of the last rotation is out
/// of date (`if_last`).
pub(super) fn check_strategy(
    command: &RotateCommand,
    state: &ClientState,
) -> Result<(), RotationError> {
    if let Some(LastSeen(seen)) = command.if_last
        && state.last.as_ref().map(|l| l.metadata.rotation_id) != seen
    {
        return Err(RotationError::Superseded {
            client_id: command.client_id.clone(),
        });
    }
    if let Some(staged) = &state.staged {
        return Err(RotationError::StagedPending {
            client_id: command.client_id.clone(),
            rotation_id: staged.rotation_id,
        });
    }
    if let Some(overlap) = &state.overlap {
        return Err(RotationError::OverlapPending {
            client_id: command.client_id.clone(),
            rotation_id: overlap.rotation_id,
        });
    }
    Ok(())
}

/// Refuses when Vault does not hold the secret Auth0 accepts now.
pub(super) async fn require_in_sync<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
) -> Result<(), RotationError> {
    match p.drift(client_id).await? {
        Drift::InSync => Ok(()),
        _ => Err(RotationError::Drifted {
            client_id: client_id.clone(),
        }),
    }
}
