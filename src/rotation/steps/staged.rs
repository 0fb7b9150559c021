//! A staged rotation: consumers get the next secret before Auth0 accepts it. Three steps, each
//! under the client's lease:
//!
//! 1. **Stage** (RotateSecret, strategy staged): the service makes the next secret itself and
//!    writes it to the key as `next_client_secret` beside the unchanged `client_secret`
//!    (check-and-set); the ledger record keeps the staged rotation. Auth0 is only read:
//!    consumers read the key and pick the next secret up.
//! 2. **Promote**, when `promote_after` has passed (any replica's timer) or on
//!    CompleteRotation: Auth0's secret is set to the staged one (PATCH), checked, then the key
//!    becomes `client_secret` = next, `previous_client_secret` = the old one.
//! 3. **Cancel** before promotion removes `next_client_secret`.
//!
//! The staged secret is in Vault before Auth0 sees it, so a promotion cut off anywhere is
//! healed from Auth0's live secret: equal to the staged one, the promotion is finished in Vault;
//! equal to the current one, the rotation stays staged. A stage or cancel cut off withdraws the
//! staged secret (`recovery.rs`).

use rand::Rng;
use secrecy::SecretString;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::{
    audit::Origin,
    rotation::{
        command::RotateCommand,
        error::{IssuerError, RotationError, StoreError, Transport},
        ids::ClientId,
        outcome::Outcome,
        pipeline::{Left, Pipeline},
        ports::{Ledger, OwnCredential, SecretIssuer, SecretStore},
        records::{
            Intent, KeySecrets, Rotation, RotationMetadata, Staged, Step, StoredSecret, Strategy,
        },
        recovery,
        state::{Acquired, ClientState},
    },
};

/// Auth0's secret alphabet and length (64 characters of `[A-Za-z0-9_-]`).
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const SECRET_LEN: usize = 64;

/// A cancelled staged rotation: the key no longer holds its secret.
#[derive(Debug, Clone)]
pub struct Cancelled {
    pub rotation_id: Uuid,
    pub stored: StoredSecret,
}

/// A new secret from the thread's CSPRNG (ChaCha, seeded by the OS), never logged.
fn next_secret() -> SecretString {
    let mut rng = rand::rng();
    let secret: String = (0..SECRET_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    SecretString::from(secret)
}

/// Stage, under the lease taken for `intent`: the next secret goes to the key beside the
/// current one, and the record keeps the staged rotation.
pub(super) async fn stage<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    command: &RotateCommand,
    intent: &Intent,
    path: &str,
    lease: Acquired,
    deadline: Instant,
) -> Result<Rotation, RotationError> {
    let client_id = &command.client_id;
    let rotation_id = intent.rotation_id;
    let found = async {
        let distribute_for = p.distribute_for(command.strategy, command.distribute_for)?;
        let client = p.issuer.read_client(client_id).await?;
        if client.client_authentication_methods.0.is_some() {
            return Ok(Err(client));
        }
        let current = p
            .store
            .read_secret(path)
            .await
            .map_err(RotationError::VaultBeforeRotation)?
            .ok_or_else(|| RotationError::NothingToStage {
                client_id: client_id.clone(),
            })?;
        Ok(Ok((client, current, distribute_for)))
    }
    .await;
    let (client, current, distribute_for) = match found {
        Ok(Ok(found)) => found,
        // No secret: the client's key is rotated, which overlaps by itself.
        Ok(Err(keyed)) => {
            return super::keys::rotate(p, command, intent, path, lease, keyed, deadline).await;
        }
        Err(refusal) => return p.refuse(client_id, rotation_id, lease, refusal).await,
    };
    let secrets = current.value.with_next(Some(next_secret()));
    let version = match p
        .store_with_retries(path, client_id, &secrets, current.version, deadline)
        .await
    {
        Ok(version) => version,
        Err(e) => {
            // Auth0 was not touched; a staged secret that did reach Vault is withdrawn by the
            // heal of the intent.
            p.left_open.note(client_id, rotation_id);
            return Err(RotationError::VaultBeforeRotation(e));
        }
    };
    let metadata = RotationMetadata::new(
        rotation_id,
        Strategy::Staged,
        intent.caller.clone(),
        intent.reason.clone(),
    );
    let staged = Staged {
        rotation_id,
        caller: intent.caller.clone(),
        trace_id: intent.trace_id.clone(),
        reason: intent.reason.clone(),
        staged_at: metadata.rotated_at,
        promote_after: metadata.rotated_at + distribute_for,
        kv_version: version,
    };
    let rotation = Rotation {
        client: Box::new(client),
        metadata,
        stored: p.stored(path.to_owned(), version),
        replayed: false,
        promote_after: Some(staged.promote_after),
        credential: None,
    };
    let closed = ClientState {
        staged: Some(staged.clone()),
        ..lease.before
    };
    let closed = p.settle(
        closed,
        client_id,
        rotation_id,
        Outcome::Staged,
        Left::Rotation(&rotation),
    );
    // The caller must not be told "staged" unless the record says so: otherwise the heal
    // withdraws the secret.
    p.close(client_id, rotation_id, lease.fence, closed)
        .await
        .map_err(RotationError::VaultBeforeRotation)?;
    p.timer.note(client_id, rotation_id, staged.promote_after);
    info!(%rotation_id, vault.version = %version, promote_after = %humantime::format_rfc3339_seconds(staged.promote_after), "next secret staged");
    Ok(rotation)
}

/// Promote staged rotation `rotation_id` now (CompleteRotation, or the timer). Repeated after
/// it was promoted, answers the promotion again (`replayed`).
pub(in crate::rotation) async fn promote<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    rotation_id: Uuid,
    origin: &Origin,
    deadline: Instant,
) -> Result<Rotation, RotationError> {
    p.recovery_possible()?;
    p.locked(client_id, rotation_id, async {
        let path = p.path(client_id);
        let intent = Intent::new(rotation_id, Step::Promote, origin);
        let lease = recovery::acquire(p, client_id, &path, &intent, deadline).await?;
        // A key rotation in its overlap: completing it retires the old key.
        if let Some(overlap) = lease
            .before
            .overlap
            .clone()
            .filter(|o| o.rotation_id == rotation_id)
        {
            let open = crate::rotation::pipeline::Open {
                client_id,
                path: &path,
                intent: &intent,
                fence: lease.fence,
                before: lease.before,
            };
            return crate::rotation::overlap::retire(p, open, &overlap).await;
        }
        let staged = match lease.before.staged.clone() {
            Some(s) if s.rotation_id == rotation_id => s,
            _ => {
                let before = lease.before.clone();
                let _ = p
                    .close(client_id, rotation_id, lease.fence, lease.before)
                    .await;
                return match before.last {
                    // Already promoted: the same answer again.
                    Some(last) if last.metadata.rotation_id == rotation_id => Ok(Rotation {
                        client: Box::default(),
                        stored: p.stored(path, last.kv_version),
                        metadata: last.metadata,
                        replayed: true,
                        promote_after: None,
                        credential: None,
                    }),
                    _ => Err(RotationError::NotStaged {
                        client_id: client_id.clone(),
                        rotation_id,
                    }),
                };
            }
        };
        let key = match p.store.read_secret(&path).await {
            Ok(Some(key)) if key.value.next.is_some() => key,
            Err(e) => {
                let _ = p
                    .close(client_id, rotation_id, lease.fence, lease.before)
                    .await;
                return Err(RotationError::VaultBeforeRotation(e));
            }
            Ok(_) => {
                // The staged secret is gone from Vault (written over outside the service):
                // there is nothing to promote, and the staged rotation is over.
                let gone = RotationError::VaultBeforeRotation(StoreError::Unexpected(
                    "the staged secret is no longer in the key (written over outside the service); the staged rotation is dropped".into(),
                ));
                let lease = Acquired {
                    before: ClientState {
                        staged: None,
                        ..lease.before
                    },
                    ..lease
                };
                return p.refuse(client_id, rotation_id, lease, gone).await;
            }
        };
        let next = key.value.next.clone().expect("checked above");
        let issued = match p.issuer.set_secret(client_id, &next).await {
            Ok(issued) if issued.secret_is(&next) => issued,
            Err(e) if !e.outcome_unknown() => {
                return p.refuse(client_id, rotation_id, lease, e.into()).await;
            }
            // Auth0 answered with another secret: what it holds is read back.
            lost => {
                let lost = lost
                    .err()
                    .unwrap_or(IssuerError::OutcomeUnknown(Transport::Unreadable));
                return recovery::lost_answer(p, client_id, &intent, lease, lost).await;
            }
        };
        // The service's own secret must get it a Management API token before replicas are
        // told to use it; if not, the old one is put back and the staged one withdrawn.
        if p.is_own(client_id) && !proved(p, &next).await {
            if let Err(e) = p.issuer.set_secret(client_id, &key.value.current).await {
                warn!(%rotation_id, error = %e, "could not put the service's own secret back; the reconciler heals the promotion");
                return Err(e.into());
            }
            let open = crate::rotation::pipeline::Open {
                client_id,
                path: &path,
                intent: &intent,
                fence: lease.fence,
                before: lease.before,
            };
            recovery::withdraw(p, open).await?;
            p.timer.forget(client_id, rotation_id);
            return Err(RotationError::OwnCredentialNotProved {
                client_id: client_id.clone(),
            });
        }
        debug!(%rotation_id, "Auth0 holds the staged secret; promoting it in Vault");
        let secrets = KeySecrets::replaced(Some(&key.value), next, p.settings.previous_secret_ttl);
        let metadata =
            RotationMetadata::new(rotation_id, Strategy::Staged, staged.caller, staged.reason);
        let rotation = p
            .store_and_close(
                client_id,
                path,
                &secrets,
                key.version,
                &lease,
                issued.client,
                metadata,
                deadline,
            )
            .await?;
        p.timer.forget(client_id, rotation_id);
        info!(%rotation_id, vault.version = %rotation.stored.version, "staged secret promoted");
        Ok(rotation)
    })
    .await
}

/// Whether the staged secret gets the service a Management API token (a failure to ask counts
/// as no: the old secret is then put back).
pub(super) async fn proved<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    secret: &SecretString,
) -> bool {
    match p
        .issuer
        .proves(&OwnCredential::Secret(secret.clone()))
        .await
    {
        Ok(proved) => proved,
        Err(e) => {
            warn!(error = %e, "could not prove the service's new secret");
            false
        }
    }
}

/// Cancel staged rotation `rotation_id`: its secret is removed from the key. Repeated after it
/// was cancelled, answers the same.
pub(in crate::rotation) async fn cancel<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    rotation_id: Uuid,
    origin: &Origin,
    deadline: Instant,
) -> Result<Cancelled, RotationError> {
    let path = p.path(client_id);
    p.locked(client_id, rotation_id, async {
        let intent = Intent::new(rotation_id, Step::Cancel, origin);
        let lease = recovery::acquire(p, client_id, &path, &intent, deadline).await?;
        let before = &lease.before;
        let staged_here = before
            .staged
            .as_ref()
            .is_some_and(|s| s.rotation_id == rotation_id);
        // A key rotation cut off before its switch was withdrawn by the heal that took this
        // lease: cancelled, as asked.
        let key_withdrawn = before.history.iter().any(|e| {
            e.rotation_id == rotation_id
                && e.strategy == Strategy::Key
                && e.outcome == Outcome::Withdrawn.name()
        });
        // A key rotation in its overlap: consumers go back to the old key, still attached.
        if let Some(overlap) = before
            .overlap
            .clone()
            .filter(|o| o.rotation_id == rotation_id && !o.cancelled)
        {
            let open = crate::rotation::pipeline::Open {
                client_id,
                path: &path,
                intent: &intent,
                fence: lease.fence,
                before: lease.before,
            };
            return match crate::rotation::overlap::revert(p, open, &overlap).await? {
                Some(version) => Ok(Cancelled {
                    rotation_id,
                    stored: p.stored(path.clone(), version),
                }),
                None => Err(RotationError::KeySwitched {
                    client_id: client_id.clone(),
                    rotation_id,
                }),
            };
        }
        let key_switched = before.cancelled != Some(rotation_id)
            && (before
                .overlap
                .as_ref()
                .is_some_and(|o| o.rotation_id == rotation_id)
                || before.last.as_ref().is_some_and(|l| {
                    l.metadata.rotation_id == rotation_id && l.metadata.strategy == Strategy::Key
                }));
        let refusal = match &before.last {
            _ if staged_here => None,
            _ if key_switched => Some(RotationError::KeySwitched {
                client_id: client_id.clone(),
                rotation_id,
            }),
            _ if before.cancelled == Some(rotation_id) || key_withdrawn => {
                // Cancelled before: the same answer again, changing nothing.
                let _ = p
                    .close(client_id, rotation_id, lease.fence, lease.before)
                    .await;
                let version = p
                    .store
                    .current_version(&path)
                    .await
                    .map_err(RotationError::Vault)?;
                return Ok(Cancelled {
                    rotation_id,
                    stored: p.stored(path.clone(), version),
                });
            }
            Some(last) if last.metadata.rotation_id == rotation_id => {
                Some(RotationError::AlreadyPromoted {
                    client_id: client_id.clone(),
                    rotation_id,
                })
            }
            _ => Some(RotationError::NotStaged {
                client_id: client_id.clone(),
                rotation_id,
            }),
        };
        if let Some(refusal) = refusal {
            let _ = p
                .close(client_id, rotation_id, lease.fence, lease.before)
                .await;
            return Err(refusal);
        }
        let open = crate::rotation::pipeline::Open {
            client_id,
            path: &path,
            intent: &intent,
            fence: lease.fence,
            before: lease.before,
        };
        let version = recovery::withdraw(p, open).await?;
        p.timer.forget(client_id, rotation_id);
        Ok(Cancelled {
            rotation_id,
            stored: p.stored(path.clone(), version),
        })
    })
    .await
}
