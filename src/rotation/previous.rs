//! Putting a rotation's previous secret back (RollbackRotation, `steps/rollback.rs`): once
//! Auth0 accepts Vault's `previous_client_secret` again, the key is written the other way round
//! ([`finish`]); a rollback whose PATCH may or may not have taken effect is settled from
//! Auth0's live secret ([`settle`]): the previous one means it did, the current one that it did
//! not. Consumers reading `client_secret`, `next_client_secret`, `previous_client_secret` in
//! that order find a working secret at every moment in between.

use std::time::SystemTime;

use tokio::time::Instant;
use uuid::Uuid;

use super::{
    error::RotationError,
    outcome::Outcome,
    pipeline::{Left, Open, Pipeline},
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{
        IssuedSecret, KeySecrets, LastRotation, PreviousSecret, RolledBack, RotationMetadata,
        StoredSecret, Strategy, Versioned,
    },
    state::ClientState,
};

/// A rolled back rotation, as the caller is told about it. No secret.
#[derive(Debug, Clone)]
pub struct RolledBackRotation {
    pub rotation_id: Uuid,
    /// The version whose `client_secret` is the secret put back.
    pub stored: StoredSecret,
    pub at: SystemTime,
    /// The rotation had been rolled back before: nothing changed now.
    pub replayed: bool,
}

/// Auth0 accepts Vault's previous secret again: the key is written the other way round and the
/// record closed with the rollback. A write that fails leaves the intent open for [`heal`].
pub(super) async fn finish<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'_>,
    key: Versioned<KeySecrets>,
    issued: IssuedSecret,
    deadline: Instant,
) -> Result<RolledBackRotation, RotationError> {
    let Open {
        client_id,
        path,
        intent,
        fence,
        before,
    } = open;
    let rotation_id = intent.rotation_id;
    let secrets = KeySecrets {
        current: issued.secret,
        next: None,
        previous: Some(PreviousSecret {
            secret: key.value.current.clone(),
            expires_at: SystemTime::now() + p.settings.previous_secret_ttl,
        }),
    };
    let version = p
        .store_with_retries(path, client_id, &secrets, key.version, deadline)
        .await
        .map_err(|source| {
            tracing::error!(
                %rotation_id,
                vault.path = %path,
                error = %source,
                "NEEDS RESYNC: Auth0 accepts the previous secret again and Vault does not hold \
                 it as client_secret yet; this replica retries shortly"
            );
            RotationError::StoreAfterRotation {
                client_id: client_id.clone(),
                rotation_id,
                source,
            }
        })?;
    let at = SystemTime::now();
    let stored = p.stored(path.to_owned(), version);
    let closed = ClientState {
        // The secret in force is the one before: its age counts from the rotation that made
        // it, when the history still knows it.
        last: Some(LastRotation {
            metadata: previous_rotation(&before, rotation_id),
            kv_version: version,
            credential: None,
        }),
        rolled_back: Some(RolledBack {
            rotation_id,
            at,
            kv_version: version,
        }),
        ..before
    };
    let left = Left::Key {
        stored: stored.clone(),
        caller: intent.caller.clone(),
    };
    let closed = p.settle(closed, client_id, rotation_id, Outcome::RolledBack, left);
    // The secret is stored: a failure to close is healed, and the rollback stands.
    let _ = p.close(client_id, rotation_id, fence, closed).await;
    Ok(RolledBackRotation {
        rotation_id,
        stored,
        at,
        replayed: false,
    })
}

/// The rotation whose secret a rollback of `undone` puts back: the newest one before it that
/// stored a secret, or, beyond the history, the undone one's facts.
fn previous_rotation(before: &ClientState, undone: Uuid) -> RotationMetadata {
    before.stored_before(undone).unwrap_or_else(|| {
        before.last.as_ref().map_or_else(
            || RotationMetadata::new(undone, Strategy::Immediate, None, None),
            |l| l.metadata.clone(),
        )
    })
}

/// What Auth0's live secret said about a rollback cut off.
pub(super) enum Settled<'a> {
    /// It is Vault's previous secret: the rollback is finished in Vault.
    RolledBack(RolledBackRotation),
    /// It is Vault's current secret: the PATCH never took effect, nothing changed.
    Unchanged,
    /// Another secret (changed outside the service): to be stored as any heal stores it.
    Other(Box<Open<'a>>),
}

/// Settles a rollback whose PATCH may or may not have taken effect (its answer lost, its step
/// cut off), from the secret Auth0 accepts now.
pub(super) async fn settle<'a, I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'a>,
) -> Result<Settled<'a>, RotationError> {
    let live = p.issuer.read_secret(open.client_id).await?;
    let key = p
        .store
        .read_secret(open.path)
        .await
        .map_err(RotationError::Vault)?;
    let was_previous = key.as_ref().is_some_and(|k| {
        k.value
            .previous
            .as_ref()
            .is_some_and(|prev| live.secret_is(&prev.secret))
    });
    match key {
        Some(key) if was_previous => {
            let deadline = Instant::now() + p.settings.max_wait;
            Ok(Settled::RolledBack(
                finish(p, open, key, live, deadline).await?,
            ))
        }
        Some(key) if key.value.holds(&live.secret) => {
            let (client_id, rotation_id) = (open.client_id, open.intent.rotation_id);
            let _ = p
                .close(client_id, rotation_id, open.fence, open.before)
                .await;
            Ok(Settled::Unchanged)
        }
        _ => Ok(Settled::Other(Box::new(open))),
    }
}
