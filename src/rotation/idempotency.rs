//! Idempotency keys: a key binds one request to its answer for the idempotency window, across
//! retries, replicas and restarts. Keys belong to the caller that sent them (`OwnedKey`). The
//! binding lives in the ledger, written with check-and-set.

use std::time::SystemTime;

use tokio::time::Instant;
use tracing::warn;
use uuid::Uuid;

use super::{
    error::{RotationError, StoreError},
    ids::{ClientId, IdempotencyKey, OwnedKey, ValidationError},
    pipeline::{Pipeline, wait, waits},
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{IdempotencyOutcome, IdempotencyRecord, Intent, KvVersion, Rotation},
};

pub(super) enum Claim {
    Replay(Box<Rotation>),
    /// The key is ours, at this version of its record.
    Claimed(KvVersion),
}

/// Binds the key to this request, or finds the answer it is already bound to.
pub(super) async fn claim<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    key: &OwnedKey,
    client_id: &ClientId,
    rotation_id: Uuid,
    deadline: Instant,
) -> Result<Claim, RotationError> {
    let mut waits = waits();
    loop {
        let read = p
            .ledger
            .read_idempotency(key)
            .await
            .map_err(RotationError::VaultBeforeRotation)?;
        let now = SystemTime::now();
        let live = read.value.filter(|r| {
            !matches!(r.outcome, IdempotencyOutcome::Released)
                && r.created_at + p.settings.idempotency_window > now
        });
        match live {
            Some(r) if r.client_id != *client_id => {
                return Err(ValidationError::IdempotencyKeyReused.into());
            }
            Some(IdempotencyRecord {
                outcome: IdempotencyOutcome::Done { rotation },
                ..
            }) => return Ok(Claim::Replay(rotation)),
            Some(_) => {
                if !wait(&mut waits, deadline).await {
                    return Err(RotationError::IdempotencyInProgress);
                }
            }
            None => {
                let record = IdempotencyRecord {
                    client_id: client_id.clone(),
                    created_at: now,
                    outcome: IdempotencyOutcome::Pending { rotation_id },
                };
                match p.ledger.write_idempotency(key, &record, read.version).await {
                    Ok(version) => return Ok(Claim::Claimed(version)),
                    Err(StoreError::CasMismatch) => continue,
                    Err(e) => return Err(RotationError::VaultBeforeRotation(e)),
                }
            }
        }
    }
}

/// Binds the key to what its request came to.
pub(super) async fn settle<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    key: &OwnedKey,
    client_id: &ClientId,
    outcome: IdempotencyOutcome,
    cas: KvVersion,
) {
    let record = IdempotencyRecord {
        client_id: client_id.clone(),
        created_at: SystemTime::now(),
        outcome,
    };
    if let Err(e) = p.ledger.write_idempotency(key, &record, cas).await {
        // CAS mismatch: recovery settled it first. Anything else: the key stays pending and
        // recovery settles it with the intent.
        warn!(error = %e, "could not settle the idempotency key");
    }
}

/// Settles the key of a healed intent, if the key is still pending for that intent.
pub(super) async fn settle_recovered<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    key: &IdempotencyKey,
    client_id: &ClientId,
    intent: &Intent,
    rotation: Option<&Rotation>,
) {
    let key = OwnedKey {
        caller: intent.caller.clone().unwrap_or_default(),
        key: key.clone(),
    };
    let Ok(read) = p.ledger.read_idempotency(&key).await else {
        return;
    };
    let Some(record) = read.value else { return };
    let ours = matches!(record.outcome, IdempotencyOutcome::Pending { rotation_id } if rotation_id == intent.rotation_id);
    if !ours {
        return;
    }
    let outcome = match rotation {
        Some(r) => IdempotencyOutcome::Done {
            rotation: Box::new(r.clone()),
        },
        None => IdempotencyOutcome::Released,
    };
    let settled = IdempotencyRecord {
        client_id: client_id.clone(),
        created_at: record.created_at,
        outcome,
    };
    if let Err(e) = p
        .ledger
        .write_idempotency(&key, &settled, read.version)
        .await
    {
        warn!(error = %e, "could not settle the idempotency key of a healed rotation");
    }
}
