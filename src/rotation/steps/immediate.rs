//! An immediate rotation: one step. Auth0 makes the new secret (rotate-secret) and the old one
//! stops working at once; the pipeline stores the new one. Its heal reads the live secret back
//! (`recovery.rs`): never a second rotate-secret.

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::rotation::{
    command::RotateCommand,
    error::{IssuerError, RotationError},
    pipeline::Pipeline,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{Intent, KeySecrets, Rotation, RotationMetadata, Strategy},
    recovery,
    state::Acquired,
};

/// Rotates at Auth0 and stores the answer, under the lease taken for `intent`.
pub(super) async fn rotate<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    command: &RotateCommand,
    intent: &Intent,
    path: String,
    lease: Acquired,
    deadline: Instant,
) -> Result<Rotation, RotationError> {
    let client_id = &command.client_id;
    let rotation_id = intent.rotation_id;
    // The key is read while Auth0 rotates, so the read adds no wait: its secret becomes the
    // previous one. Without a previous secret to keep, the read is skipped.
    let keep_previous = !p.settings.previous_secret_ttl.is_zero();
    let (issued, before) = tokio::join!(p.issuer.rotate_secret(client_id), async {
        match keep_previous {
            true => p.store.read_secret(&path).await,
            false => Ok(None),
        }
    });
    let issued = match issued {
        Ok(issued) => issued,
        Err(e) if e.outcome_unknown() => {
            return recovery::lost_answer(p, client_id, intent, lease, e).await;
        }
        // Auth0 refuses rotate-secret to a client without a secret: its key is rotated.
        Err(IssuerError::ClientNotRotatable) => {
            return match p.issuer.read_client(client_id).await {
                Ok(client) if crate::rotation::overlap::key_method(&client).is_some() => {
                    super::keys::rotate(p, command, intent, &path, lease, client, deadline).await
                }
                Ok(_) => {
                    p.refuse(
                        client_id,
                        rotation_id,
                        lease,
                        IssuerError::ClientNotRotatable.into(),
                    )
                    .await
                }
                Err(e) => p.refuse(client_id, rotation_id, lease, e.into()).await,
            };
        }
        Err(e) => return p.refuse(client_id, rotation_id, lease, e.into()).await,
    };
    let before = before.unwrap_or_else(|e| {
        warn!(error = %e, "could not read the key's secret; the new one is stored without previous_client_secret");
        None
    });
    let secrets = KeySecrets::replaced(
        before.as_ref().map(|b| &b.value),
        issued.secret.clone(),
        p.settings.previous_secret_ttl,
    );
    let metadata = RotationMetadata::new(
        rotation_id,
        Strategy::Immediate,
        command.origin.caller.clone(),
        command.reason.clone(),
    );
    debug!(%rotation_id, "Auth0 rotated the secret; storing it");
    let cas = lease.observed;
    let rotation = p
        .store_and_close(
            client_id,
            path,
            &secrets,
            cas,
            &lease,
            issued.client,
            metadata,
            deadline,
        )
        .await?;
    info!(%rotation_id, vault.version = %rotation.stored.version, "rotation stored");
    Ok(rotation)
}
