//! Healing open intents, by the step they were taking: a rotation or a promotion is healed by
//! reading the live secret back from Auth0 and storing it, never by rotating again; a stage or a
//! cancellation by withdrawing the staged secret. Used when Auth0's answer is lost
//! ([`lost_answer`]), before taking over an expired lease ([`acquire`]), and by the reconciler.

use tracing::{error, info, warn};

use super::{
    error::{IssuerError, RotationError, StoreError},
    idempotency,
    ids::ClientId,
    outcome::Outcome,
    overlap,
    pipeline::{Left, Open, Pipeline, Report, Taken, waits},
    ports::{Ledger, SecretIssuer, SecretStore},
    previous::{self, Settled},
    records::{
        Intent, KeySecrets, KvVersion, LastRotation, Rotation, RotationMetadata, Step, Strategy,
        Versioned,
    },
    state::{Acquired, ClientState},
};
use crate::audit::Origin;

/// What healing an intent stored.
pub(super) struct Healed {
    pub rotation: Rotation,
    /// Auth0's secret certainly changed since the last one stored (Vault held another one, or
    /// this intent's rotation had stored it). False when Vault held none: the live secret may
    /// be the old one.
    pub rotated: bool,
}

/// Takes the client's lease for `intent` (see [`Pipeline::acquire`]), healing first an open
/// intent that a dead step left in the way.
pub(super) async fn acquire<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    path: &str,
    intent: &Intent,
    deadline: tokio::time::Instant,
) -> Result<Acquired, RotationError> {
    let mut waits = waits();
    loop {
        match p
            .acquire(client_id, path, intent, deadline, &mut waits)
            .await?
        {
            Taken::Lease(lease) => return Ok(lease),
            Taken::Orphan(record) => heal_orphan(p, client_id, record).await.map_err(|e| {
                RotationError::RecoveryFailed {
                    client_id: client_id.clone(),
                    source: Box::new(e),
                }
            })?,
        }
    }
}

/// Auth0's answer to a step that changes its secret (rotate-secret, a promotion's PATCH) was
/// lost: the live secret is read back and stored under the lease the step holds.
pub(super) async fn lost_answer<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    intent: &Intent,
    lease: Acquired,
    lost: IssuerError,
) -> Result<Rotation, RotationError> {
    let rotation_id = intent.rotation_id;
    warn!(%rotation_id, error = %lost, "Auth0's answer was lost; reading the live secret back");
    let path = p.path(client_id);
    let open = Open {
        client_id,
        path: &path,
        intent,
        fence: lease.fence,
        before: lease.before,
    };
    match heal(p, open).await {
        // Vault now holds what Auth0 accepts, and Auth0's secret has changed: the caller's
        // goal is met, and an error would make retry policies rotate a second time.
        // `recovered` says the secret was read back.
        Ok(Some(healed)) if healed.rotated => Ok(healed.rotation),
        // Vault held no secret before: the one read back may be the old one, so the caller
        // must not take this for a rotation.
        Ok(Some(healed)) => Err(RotationError::Recovered {
            client_id: client_id.clone(),
            stored: healed.rotation.stored,
            source: lost,
        }),
        // Vault already held the live secret: Auth0 had not changed, nothing did.
        Ok(None) => Err(lost.into()),
        Err(heal) => {
            error!(%rotation_id, error = %heal, "NEEDS RESYNC: the live secret could not be read back yet; this replica retries the heal shortly");
            Err(RotationError::OutcomeUnknown {
                client_id: client_id.clone(),
                rotation_id,
                source: lost,
            })
        }
    }
}

/// Heals an open intent by its step. Returns the rotation when the intent's rotation did
/// happen, or may have, `None` when Auth0 never changed under it.
pub(super) async fn heal<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'_>,
) -> Result<Option<Healed>, RotationError> {
    let (client_id, intent) = (open.client_id, open.intent);
    let overlap = open
        .before
        .overlap
        .clone()
        .filter(|o| o.rotation_id == intent.rotation_id);
    let healed = match (intent.step, overlap) {
        // A key rotation's cancellation in its overlap cut off: reverted again.
        (Step::Cancel, Some(overlap)) => {
            overlap::revert(p, open, &overlap).await?;
            None
        }
        (Step::Stage | Step::Cancel, _) => {
            withdraw(p, open).await?;
            None
        }
        // A key rotation's retirement (CompleteRotation, the timer) cut off: retired again.
        (Step::Promote, Some(overlap)) => Some(Healed {
            rotation: overlap::retire(p, open, &overlap).await?,
            rotated: true,
        }),
        (Step::KeyRotate, _) => overlap::heal(p, open, None).await?.map(|rotation| Healed {
            rotation,
            rotated: true,
        }),
        (Step::Rotate | Step::Promote, _) => heal_from_live(p, open).await?,
        (Step::Rollback, _) => {
            let intent = open.intent.clone();
            match previous::settle(p, open).await? {
                // Not `recovered`: the rollback itself finished, which its step tells apart
                // from a secret read back (`steps/rollback.rs`).
                Settled::RolledBack(done) => Some(Healed {
                    rotation: Rotation {
                        client: Box::default(),
                        metadata: RotationMetadata {
                            rotated_at: done.at,
                            ..RotationMetadata::new(
                                intent.rotation_id,
                                Strategy::Immediate,
                                intent.caller,
                                intent.reason,
                            )
                        },
                        stored: done.stored,
                        replayed: false,
                        promote_after: None,
                        credential: None,
                    },
                    rotated: true,
                }),
                Settled::Unchanged => None,
                Settled::Other(open) => heal_from_live(p, *open).await?,
            }
        }
    };
    let rotation = healed.as_ref().map(|h| &h.rotation);
    if let Some(key) = &intent.idempotency_key {
        idempotency::settle_recovered(p, key, client_id, intent, rotation).await;
    }
    info!(
        rotation_id = %intent.rotation_id,
        step = ?intent.step,
        recovered = true,
        stored = rotation.map(|r| r.stored.version.get()),
        "healed an open rotation"
    );
    let origin = Origin {
        caller: intent.caller.clone(),
        peer: None,
        trace_id: intent.trace_id.clone().unwrap_or_default(),
        on_behalf_of: None,
        service_actor: None,
    };
    let report = Report {
        origin: &origin,
        client_id,
        reason: intent.reason.as_ref(),
        strategy: intent.step.strategy(),
    };
    let outcome = match rotation {
        Some(_) => Outcome::HealStored,
        None => Outcome::HealUnchanged,
    };
    p.finish(
        &report,
        intent.rotation_id,
        outcome,
        rotation.map(|r| r.stored.version),
    );
    Ok(healed)
}

/// Heals a rotation or promotion from the secret Auth0 accepts now. A promotion staged its
/// secret in Vault before Auth0 saw it: when Auth0 holds the staged secret, the promotion is
/// finished in Vault; when Auth0 still holds the current one, the rotation stays staged.
pub(super) async fn heal_from_live<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'_>,
) -> Result<Option<Healed>, RotationError> {
    let Open {
        client_id,
        path,
        intent,
        fence,
        before,
    } = open;
    let live = p.issuer.read_secret(client_id).await?;
    let current = p
        .store
        .read_secret(path)
        .await
        .map_err(RotationError::Vault)?;
    let staged = before
        .staged
        .as_ref()
        .filter(|s| intent.step == Step::Promote && s.rotation_id == intent.rotation_id);
    let metadata = RotationMetadata {
        recovered: true,
        ..RotationMetadata::new(
            intent.rotation_id,
            match staged {
                Some(_) => Strategy::Staged,
                None => Strategy::Immediate,
            },
            staged.map_or(intent.caller.clone(), |s| s.caller.clone()),
            staged.map_or(intent.reason.clone(), |s| s.reason.clone()),
        )
    };
    let recorded = staged
        .map(|s| s.kv_version)
        .or(before.last.as_ref().map(|l| l.kv_version))
        .unwrap_or(KvVersion::NONE);
    let healed = |version, rotated| Healed {
        rotation: Rotation {
            client: live.client.clone(),
            metadata: metadata.clone(),
            stored: p.stored(path.to_owned(), version),
            replayed: false,
            promote_after: None,
            credential: None,
        },
        rotated,
    };
    let healed = match current {
        // Auth0 still holds the current secret and the staged one waits: the promotion
        // never reached Auth0, and the rotation stays staged.
        Some(held)
            if held.value.holds(&live.secret) && staged.is_some() && held.value.next.is_some() =>
        {
            None
        }
        // Vault already holds the live secret. A version newer than the last one recorded
        // was written by this intent just before it was cut off; otherwise Auth0 never
        // rotated under it, or a newer rotation is in place.
        Some(held) if held.value.holds(&live.secret) => {
            (held.version > recorded).then(|| healed(held.version, true))
        }
        current => {
            // Vault held another secret (the staged one, or an older one): Auth0's has
            // changed since. Vault held none (a first rotation): the live secret may be the
            // new one or the old one.
            let rotated = current.is_some();
            let cas = current
                .as_ref()
                .map_or(KvVersion::NONE, |held| held.version);
            let secrets = KeySecrets::replaced(
                current.as_ref().map(|held| &held.value),
                live.secret.clone(),
                p.settings.previous_secret_ttl,
            );
            let version = p
                .store
                .write_secret(path, client_id, &secrets, cas)
                .await
                .map_err(RotationError::Vault)?;
            Some(healed(version, rotated))
        }
    };
    let closed = match &healed {
        Some(h) => p.settle(
            before.closed_with(LastRotation {
                metadata: h.rotation.metadata.clone(),
                kv_version: h.rotation.stored.version,
                credential: None,
            }),
            client_id,
            intent.rotation_id,
            Outcome::Recovered,
            Left::Rotation(&h.rotation),
        ),
        None => before,
    };
    // A failure to close is logged, and the intent healed again.
    let _ = p.close(client_id, intent.rotation_id, fence, closed).await;
    Ok(healed)
}

/// Removes `next_client_secret` from the key, if present, and closes `intent` with no staged
/// rotation: the step of a cancellation, and the heal of a stage or cancellation cut off.
/// Returns the key's version.
pub(super) async fn withdraw<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'_>,
) -> Result<KvVersion, RotationError> {
    let (client_id, path, intent) = (open.client_id, open.path, open.intent);
    let version = match p.store.read_secret(path).await {
        Ok(Some(key)) if key.value.next.is_some() => {
            let secrets = key.value.with_next(None);
            p.store
                .write_secret(path, client_id, &secrets, key.version)
                .await
        }
        Ok(key) => Ok(key.map_or(KvVersion::NONE, |k| k.version)),
        Err(e) => Err(e),
    }
    .map_err(RotationError::Vault)?;
    let (outcome, cancelled) = match intent.step {
        Step::Cancel => (Outcome::Cancelled, Some(intent.rotation_id)),
        // A stage cut off: the caller was not told it was staged.
        _ => (Outcome::Withdrawn, open.before.cancelled),
    };
    let closed = ClientState {
        staged: None,
        cancelled,
        ..open.before
    };
    let left = Left::Key {
        stored: p.stored(path.to_owned(), version),
        caller: intent.caller.clone(),
    };
    let closed = p.settle(closed, client_id, intent.rotation_id, outcome, left);
    p.close(client_id, intent.rotation_id, open.fence, closed)
        .await
        .map_err(RotationError::Vault)?;
    Ok(version)
}

/// Takes over the intent open in `record` (a dead rotation's, or one this replica left) and
/// heals it. A lost race for the record is not an error: whoever won heals it.
pub(super) async fn heal_orphan<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    record: Versioned<ClientState>,
) -> Result<(), RotationError> {
    let Some(orphan) = record.value.intent.clone() else {
        return Ok(());
    };
    let before = record.value.settled();
    let taken = ClientState {
        lease: Some(p.new_lease()),
        ..record.value
    };
    let fence = match p
        .ledger
        .write_state(client_id, &taken, record.version)
        .await
    {
        Ok(fence) => fence,
        Err(StoreError::CasMismatch) => return Ok(()),
        Err(e) => return Err(RotationError::Vault(e)),
    };
    warn!(rotation_id = %orphan.rotation_id, started_at = ?orphan.started_at, "healing a rotation left open");
    let path = p.path(client_id);
    let open = Open {
        client_id,
        path: &path,
        intent: &orphan,
        fence,
        before: before.clone(),
    };
    match heal(p, open).await {
        Ok(_) => Ok(()),
        Err(e) => {
            // Leave the intent for the next attempt without holding its lease.
            let open = ClientState {
                intent: Some(orphan),
                ..before
            };
            if let Err(release) = p.ledger.write_state(client_id, &open, fence).await {
                warn!(error = %release, "could not release the lease after a failed heal");
            }
            Err(e)
        }
    }
}
