//! A key rotation's end (`steps/keys.rs` runs its start): the switch closed with its overlap
//! ([`close_switched`]), the heal of one cut off ([`heal`]: finished after the switch,
//! withdrawn before it), and the old key retired when the overlap ends ([`retire`]). Also what
//! both read of a client: its key method and which credentials each method has attached.

use uuid::Uuid;

use super::{
    client::{AuthenticationMethod, Client},
    error::RotationError,
    ids::{AuthMethod, ClientId, CredentialId},
    outcome::Outcome,
    pipeline::{Left, Open, Pipeline},
    ports::{Attachments, Ledger, SecretIssuer, SecretStore},
    records::{
        KeyEntry, KvVersion, LastRotation, Overlap, RotatedCredential, Rotation, RotationMetadata,
        StoredKey, Strategy,
    },
    state::ClientState,
};
use tracing::info;

/// Credentials this service registers are named after their rotation.
pub(super) const NAME_PREFIX: &str = "secret-rotator ";

pub(super) fn credential_name(rotation_id: Uuid) -> String {
    format!("{NAME_PREFIX}{rotation_id}")
}

/// The method a client authenticates with, if it has no secret: Private Key JWT first.
pub(super) fn key_method(client: &Client) -> Option<AuthMethod> {
    let methods = client.client_authentication_methods.0.as_ref()?;
    if methods.private_key_jwt.0.is_some() {
        Some(AuthMethod::PrivateKeyJwt)
    } else if methods.self_signed_tls_client_auth.0.is_some() {
        Some(AuthMethod::SelfSignedTls)
    } else if methods.tls_client_auth.0.is_some() {
        Some(AuthMethod::CaSignedTls)
    } else {
        None
    }
}

/// The client's `client_authentication_methods` as ids per method.
pub(super) fn attachments(client: &Client) -> Attachments {
    let Some(methods) = client.client_authentication_methods.0.as_ref() else {
        return Vec::new();
    };
    let ids = |m: &Option<AuthenticationMethod>| -> Option<Vec<CredentialId>> {
        let method = m.as_ref()?;
        Some(
            method
                .credentials
                .0
                .iter()
                .flatten()
                .filter_map(|c| {
                    c.id.0
                        .as_deref()
                        .and_then(|id| CredentialId::parse(id).ok())
                })
                .collect(),
        )
    };
    [
        (AuthMethod::PrivateKeyJwt, ids(&methods.private_key_jwt.0)),
        (
            AuthMethod::SelfSignedTls,
            ids(&methods.self_signed_tls_client_auth.0),
        ),
        (AuthMethod::CaSignedTls, ids(&methods.tls_client_auth.0)),
    ]
    .into_iter()
    .filter_map(|(m, ids)| ids.filter(|ids| !ids.is_empty()).map(|ids| (m, ids)))
    .collect()
}

pub(super) fn attached(all: &Attachments, method: AuthMethod) -> Vec<CredentialId> {
    all.iter()
        .find(|(m, _)| *m == method)
        .map(|(_, ids)| ids.clone())
        .unwrap_or_default()
}

/// `all` with `method`'s credentials replaced by `ids`.
pub(super) fn with_method(
    all: &Attachments,
    method: AuthMethod,
    ids: Vec<CredentialId>,
) -> Attachments {
    let mut changed: Attachments = all.iter().filter(|(m, _)| *m != method).cloned().collect();
    if !ids.is_empty() {
        changed.push((method, ids));
    }
    changed
}

/// Closes a switched key rotation: the record keeps the rotation as the last one and the
/// overlap, and the timer retires the old key when it ends.
#[allow(clippy::too_many_arguments)]
pub(super) async fn close_switched<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: &Open<'_>,
    credential: RotatedCredential,
    retiring: Option<CredentialId>,
    version: KvVersion,
    distribute_for: std::time::Duration,
    client: &Client,
) -> Rotation {
    let (client_id, intent) = (open.client_id, open.intent);
    let metadata = RotationMetadata::new(
        intent.rotation_id,
        Strategy::Key,
        intent.caller.clone(),
        intent.reason.clone(),
    );
    let overlap = Overlap {
        rotation_id: intent.rotation_id,
        method: credential.method,
        credential: credential.credential_id.clone(),
        retiring,
        caller: intent.caller.clone(),
        reason: intent.reason.clone(),
        retire_after: metadata.rotated_at + distribute_for,
        cancelled: false,
    };
    let rotation = Rotation {
        client: Box::new(client.clone()),
        metadata: metadata.clone(),
        stored: p.stored(open.path.to_owned(), version),
        replayed: false,
        promote_after: Some(overlap.retire_after),
        credential: Some(credential),
    };
    let closed = ClientState {
        overlap: Some(overlap.clone()),
        ..open.before.closed_with(LastRotation {
            metadata,
            kv_version: version,
            credential: rotation.credential.clone(),
        })
    };
    let closed = p.settle(
        closed,
        client_id,
        intent.rotation_id,
        Outcome::Rotated,
        Left::Rotation(&rotation),
    );
    // Consumers have the new key: a failure to close is healed, and the rotation stands.
    let _ = p
        .close(client_id, intent.rotation_id, open.fence, closed)
        .await;
    p.timer
        .note(client_id, intent.rotation_id, overlap.retire_after);
    rotation
}

/// Heals a key rotation cut off before it closed: finished when Vault already switched to the
/// credential named after it, withdrawn otherwise (the credential detached and deleted,
/// `next_private_key` removed). `distribute_for` is the overlap a finished one keeps.
pub(super) async fn heal<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'_>,
    distribute_for: Option<std::time::Duration>,
) -> Result<Option<Rotation>, RotationError> {
    let (client_id, path, intent) = (open.client_id, open.path, open.intent);
    let name = credential_name(intent.rotation_id);
    let pool = p.issuer.credentials(client_id).await?;
    let ours = pool
        .iter()
        .find(|c| c.name.as_deref() == Some(name.as_str()));
    let held = p.store.read_key(path).await.map_err(RotationError::Vault)?;
    let switched = held.as_ref().and_then(|h| {
        let current = h.value.current.as_ref()?;
        ours.filter(|o| o.id == current.credential_id)
            .map(|_| (h, current))
    });
    let client = p.issuer.read_client(client_id).await?;
    let all = attachments(&client);
    let method = key_method(&client).unwrap_or(AuthMethod::PrivateKeyJwt);
    if let Some((held, current)) = switched {
        let retiring = held
            .value
            .previous
            .as_ref()
            .map(|e| e.credential_id.clone())
            .or_else(|| {
                attached(&all, method)
                    .into_iter()
                    .find(|id| *id != current.credential_id)
            });
        let credential = RotatedCredential {
            method,
            credential_id: current.credential_id.clone(),
            key_id: current.key_id.clone(),
            expires_at: ours.and_then(|o| o.expires()),
        };
        let distribute_for = distribute_for.unwrap_or(p.settings.distribute_for);
        let rotation = close_switched(
            p,
            &open,
            credential,
            retiring,
            held.version,
            distribute_for,
            &client,
        )
        .await;
        return Ok(Some(rotation));
    }
    if let Some(ours) = ours {
        detach_and_delete(p, client_id, &all, method, &ours.id).await?;
    }
    let version = match held {
        Some(held) if held.value.next.is_some() => {
            let withdrawn = StoredKey {
                next: None,
                ..held.value
            };
            p.store
                .write_key(path, client_id, &withdrawn, held.version)
                .await
                .map_err(RotationError::Vault)?
        }
        Some(held) => held.version,
        None => KvVersion::NONE,
    };
    let left = Left::Key {
        stored: p.stored(path.to_owned(), version),
        caller: intent.caller.clone(),
    };
    let closed = p.settle(
        open.before.clone(),
        client_id,
        intent.rotation_id,
        Outcome::Withdrawn,
        left,
    );
    p.close(client_id, intent.rotation_id, open.fence, closed)
        .await
        .map_err(RotationError::Vault)?;
    Ok(None)
}

/// Detaches `credential` from `method` (when attached: `all` is what the client has attached)
/// and deletes it; both are idempotent.
async fn detach_and_delete<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    all: &Attachments,
    method: AuthMethod,
    credential: &CredentialId,
) -> Result<(), RotationError> {
    let before = attached(all, method);
    let ids: Vec<CredentialId> = before
        .iter()
        .filter(|id| *id != credential)
        .cloned()
        .collect();
    if ids.len() != before.len() {
        p.issuer
            .attach(client_id, &with_method(all, method, ids))
            .await?;
    }
    p.issuer.delete_credential(client_id, credential).await?;
    Ok(())
}

/// Ends the overlap of key rotation `overlap` under `lease` (CompleteRotation, or the timer):
/// the old credential detached and deleted, and dropped from Vault. Idempotent, so it is also
/// the heal of a retirement cut off.
pub(super) async fn retire<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'_>,
    overlap: &Overlap,
) -> Result<Rotation, RotationError> {
    let (client_id, path) = (open.client_id, open.path);
    let client = p.issuer.read_client(client_id).await?;
    let all = attachments(&client);
    if let Some(old) = &overlap.retiring {
        detach_and_delete(p, client_id, &all, overlap.method, old).await?;
    }
    let held = p.store.read_key(path).await.map_err(RotationError::Vault)?;
    let last = open
        .before
        .last
        .clone()
        .filter(|l| l.metadata.rotation_id == overlap.rotation_id);
    let credential = last
        .as_ref()
        .and_then(|l| l.credential.clone())
        .or_else(|| {
            held.as_ref()
                .and_then(|h| h.value.current.as_ref())
                .map(|c| RotatedCredential {
                    method: overlap.method,
                    credential_id: c.credential_id.clone(),
                    key_id: c.key_id.clone(),
                    expires_at: None,
                })
        });
    let version = match held {
        Some(held) if held.value.previous.is_some() => {
            let retired = StoredKey {
                previous: None,
                ..held.value
            };
            p.store
                .write_key(path, client_id, &retired, held.version)
                .await
                .map_err(RotationError::Vault)?
        }
        Some(held) => held.version,
        None => KvVersion::NONE,
    };
    let metadata = last
        .as_ref()
        .map(|l| l.metadata.clone())
        .unwrap_or_else(|| {
            RotationMetadata::new(
                overlap.rotation_id,
                Strategy::Key,
                overlap.caller.clone(),
                overlap.reason.clone(),
            )
        });
    let rotation = Rotation {
        client: Box::new(client),
        metadata: metadata.clone(),
        stored: p.stored(path.to_owned(), version),
        replayed: false,
        promote_after: None,
        credential,
    };
    let closed = match overlap.cancelled {
        // A cancelled rotation's new key retired: the record keeps the rotation before it
        // and the cancellation, with the version without the key.
        true => ClientState {
            overlap: None,
            last: open.before.last.clone().map(|l| LastRotation {
                kv_version: version,
                ..l
            }),
            ..open.before.clone()
        },
        false => p.settle(
            ClientState {
                overlap: None,
                last: Some(LastRotation {
                    metadata,
                    kv_version: version,
                    credential: rotation.credential.clone(),
                }),
                ..open.before.clone()
            },
            client_id,
            overlap.rotation_id,
            Outcome::Retired,
            Left::Rotation(&rotation),
        ),
    };
    p.close(client_id, overlap.rotation_id, open.fence, closed)
        .await
        .map_err(RotationError::Vault)?;
    p.timer.forget(client_id, overlap.rotation_id);
    info!(rotation_id = %overlap.rotation_id, "the old key is retired");
    Ok(rotation)
}

/// Undoes key rotation `overlap` while its overlap lasts (CancelRotation): Vault's key goes
/// back to the old credential, the new one kept as previous, and the overlap goes on the other
/// way round: the new credential stays attached until the overlap was to end, for consumers
/// that read it just before, and is then retired (detached and deleted) as an old key is.
/// Idempotent, so it is also the heal of a cancellation cut off. Returns the key's version, or
/// `None` (the record closed unchanged) when Vault holds no old key to go back to.
pub(super) async fn revert<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'_>,
    overlap: &Overlap,
) -> Result<Option<KvVersion>, RotationError> {
    let (client_id, path, rotation_id) = (open.client_id, open.path, overlap.rotation_id);
    let Some(old) = overlap.retiring.clone() else {
        return unchanged(p, open).await;
    };
    let held = p.store.read_key(path).await.map_err(RotationError::Vault)?;
    let is = |entry: &Option<KeyEntry>, id: &CredentialId| {
        entry.as_ref().is_some_and(|e| e.credential_id == *id)
    };
    let (version, back) = match held {
        // Still switched, the old key kept as previous: the two change places.
        Some(held)
            if is(&held.value.current, &overlap.credential) && is(&held.value.previous, &old) =>
        {
            let reverted = StoredKey {
                current: held.value.previous.clone(),
                next: None,
                previous: held.value.current.clone(),
            };
            let version = p
                .store
                .write_key(path, client_id, &reverted, held.version)
                .await
                .map_err(RotationError::Vault)?;
            (version, reverted.current)
        }
        // Reverted in Vault before this step was cut off.
        Some(held) if is(&held.value.current, &old) => (held.version, held.value.current),
        // No old key in Vault (the client's first key came from elsewhere), or the key was
        // written over outside the service: consumers cannot be given the old key back.
        _ => return unchanged(p, open).await,
    };
    // The rotation in force is the one that made the old key, when the history still knows it.
    let last = open
        .before
        .stored_before(rotation_id)
        .filter(|m| m.strategy == Strategy::Key)
        .map(|metadata| LastRotation {
            metadata,
            kv_version: version,
            credential: back.as_ref().map(|k| RotatedCredential {
                method: overlap.method,
                credential_id: k.credential_id.clone(),
                key_id: k.key_id.clone(),
                expires_at: None,
            }),
        });
    let closed = ClientState {
        overlap: Some(Overlap {
            credential: old,
            retiring: Some(overlap.credential.clone()),
            cancelled: true,
            ..overlap.clone()
        }),
        cancelled: Some(rotation_id),
        last,
        ..open.before.clone()
    };
    let left = Left::Key {
        stored: p.stored(path.to_owned(), version),
        caller: open.intent.caller.clone(),
    };
    let closed = p.settle(closed, client_id, rotation_id, Outcome::Cancelled, left);
    p.close(client_id, rotation_id, open.fence, closed)
        .await
        .map_err(RotationError::Vault)?;
    info!(%rotation_id, "key rotation cancelled: consumers have the old key again; the new one is retired when the overlap ends");
    Ok(Some(version))
}

/// Closes the record of `open` as it was: nothing was changed.
async fn unchanged<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'_>,
) -> Result<Option<KvVersion>, RotationError> {
    p.close(
        open.client_id,
        open.intent.rotation_id,
        open.fence,
        open.before,
    )
    .await
    .map_err(RotationError::Vault)?;
    Ok(None)
}
