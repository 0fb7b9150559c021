//! Idempotency keys: a key binds one request to its answer for the idempotency window, across
//! retries, replicas and restarts. Keys belong to the caller that sent them (`OwnedKey`). The
//! binding lives in the ledger, written with check-and-set.

use std::time::SystemTime;

use tokio::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

use super::{
    error::{RotationError, StoreError},
    ids::{ClientId, IdempotencyKey, OwnedKey, ValidationError},
    lease::{wait, waits},
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{IdempotencyOutcome, IdempotencyRecord, Intent, KvVersion, RotateCommand, Rotation},
    service::RotationService,
};

enum Claim {
    Replay(Box<Rotation>),
    /// The key is ours, at this version of its record.
    Claimed(KvVersion),
}

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// Rotates once per idempotency key (or once, without one).
    pub(super) async fn rotate_idempotent(
        &self,
        command: RotateCommand,
        rotation_id: Uuid,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        self.recovery_possible()?;
        let Some(key) = command.idempotency_key.clone() else {
            return self.rotate_locked(&command, rotation_id, deadline).await;
        };
        let key = OwnedKey {
            caller: command.origin.caller.clone().unwrap_or_default(),
            key,
        };
        let claimed = match self
            .claim_key(&key, &command.client_id, rotation_id, deadline)
            .await?
        {
            Claim::Replay(mut rotation) => {
                info!(rotation_id = %rotation.metadata.rotation_id, "idempotency key replayed");
                rotation.replayed = true;
                return Ok(*rotation);
            }
            Claim::Claimed(version) => version,
        };
        let result = self.rotate_locked(&command, rotation_id, deadline).await;
        let outcome = match &result {
            Ok(rotation) => Some(IdempotencyOutcome::Done {
                rotation: Box::new(rotation.clone()),
            }),
            // Recovery completes the key when it heals the intent.
            Err(e) if e.leaves_open_intent() => None,
            Err(_) => Some(IdempotencyOutcome::Released),
        };
        if let Some(outcome) = outcome {
            self.settle_key(&key, &command.client_id, outcome, claimed)
                .await;
        }
        result
    }

    /// Binds the key to this request, or finds the answer it is already bound to.
    async fn claim_key(
        &self,
        key: &OwnedKey,
        client_id: &ClientId,
        rotation_id: Uuid,
        deadline: Instant,
    ) -> Result<Claim, RotationError> {
        let mut waits = waits();
        loop {
            let read = self
                .ledger
                .read_idempotency(key)
                .await
                .map_err(RotationError::VaultBeforeRotation)?;
            let now = SystemTime::now();
            let live = read.value.filter(|r| {
                !matches!(r.outcome, IdempotencyOutcome::Released)
                    && r.created_at + self.settings.idempotency_window > now
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
                    match self
                        .ledger
                        .write_idempotency(key, &record, read.version)
                        .await
                    {
                        Ok(version) => return Ok(Claim::Claimed(version)),
                        Err(StoreError::CasMismatch) => continue,
                        Err(e) => return Err(RotationError::VaultBeforeRotation(e)),
                    }
                }
            }
        }
    }

    async fn settle_key(
        &self,
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
        if let Err(e) = self.ledger.write_idempotency(key, &record, cas).await {
            // CAS mismatch: recovery settled it first. Anything else: the key stays pending and
            // recovery settles it with the intent.
            warn!(error = %e, "could not settle the idempotency key");
        }
    }

    /// Settles the key of a healed intent, if the key is still pending for that intent.
    pub(super) async fn settle_recovered_key(
        &self,
        key: &IdempotencyKey,
        client_id: &ClientId,
        intent: &Intent,
        rotation: Option<&Rotation>,
    ) {
        let key = OwnedKey {
            caller: intent.caller.clone().unwrap_or_default(),
            key: key.clone(),
        };
        let Ok(read) = self.ledger.read_idempotency(&key).await else {
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
        if let Err(e) = self
            .ledger
            .write_idempotency(&key, &settled, read.version)
            .await
        {
            warn!(error = %e, "could not settle the idempotency key of a healed rotation");
        }
    }
}
