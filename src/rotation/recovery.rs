//! Healing open intents: the live secret is read back from Auth0 and stored, never rotated
//! again. Used inline when Auth0's answer is lost, before taking over an expired lease, and by
//! the reconciler (`reconciler.rs`).

use secrecy::ExposeSecret;
use tracing::{info, warn};

use super::{
    error::{RotationError, StoreError},
    ids::ClientId,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{
        ClientState, Intent, KvVersion, LastRotation, Rotation, RotationMetadata, Versioned,
    },
    service::{RotationService, audit_rotation},
};
use crate::audit::{Event, Origin};

/// What healing an intent stored.
pub(super) struct Healed {
    pub rotation: Rotation,
    /// Auth0's secret certainly changed since the last one stored (Vault held another one, or
    /// this intent's rotation had stored it). False when Vault held none: the live secret may
    /// be the old one.
    pub rotated: bool,
}

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// Stores the secret Auth0 accepts now, unless Vault already holds it, then closes the
    /// intent (the caller holds the lease, `fence`). `previous` is the last rotation the record
    /// held before the intent. Returns the rotation when the intent's rotation did happen, or
    /// may have, `None` when Auth0 never rotated under it.
    pub(super) async fn heal(
        &self,
        client_id: &ClientId,
        path: &str,
        intent: &Intent,
        fence: KvVersion,
        previous: Option<LastRotation>,
    ) -> Result<Option<Healed>, RotationError> {
        let live = self.issuer.read_secret(client_id).await?;
        let current = self
            .store
            .read_secret(path)
            .await
            .map_err(RotationError::Vault)?;
        let metadata = RotationMetadata {
            rotation_id: intent.rotation_id,
            rotated_at: std::time::SystemTime::now(),
            reason: intent.reason.clone(),
            caller: intent.caller.clone(),
            recovered: true,
        };
        let recorded = previous.as_ref().map_or(KvVersion::NONE, |l| l.kv_version);
        let healed = match current {
            // Vault already holds the live secret. A version newer than the last one recorded
            // was written by this intent's rotation just before it was cut off; otherwise
            // Auth0 never rotated under it, or a newer rotation is in place.
            Some(held) if held.value.expose_secret() == live.secret.expose_secret() => {
                (held.version > recorded).then(|| Healed {
                    rotation: Rotation {
                        client: live.client,
                        metadata,
                        stored: self.stored(path.to_owned(), held.version),
                        replayed: false,
                    },
                    rotated: true,
                })
            }
            current => {
                // Vault held another secret: Auth0's has changed since. Vault held none (a
                // first rotation): the live secret may be the new one or the old one.
                let rotated = current.is_some();
                let cas = current.map_or(KvVersion::NONE, |held| held.version);
                let version = self
                    .store
                    .write_secret(path, client_id, &live, cas)
                    .await
                    .map_err(RotationError::Vault)?;
                Some(Healed {
                    rotation: Rotation {
                        client: live.client,
                        metadata,
                        stored: self.stored(path.to_owned(), version),
                        replayed: false,
                    },
                    rotated,
                })
            }
        };
        let rotation = healed.as_ref().map(|h| &h.rotation);
        let last = match rotation {
            Some(r) => Some(LastRotation {
                metadata: r.metadata.clone(),
                kv_version: r.stored.version,
            }),
            None => previous,
        };
        self.close(client_id, intent.rotation_id, fence, last).await;
        if let Some(key) = &intent.idempotency_key {
            self.settle_recovered_key(key, client_id, intent, rotation)
                .await;
        }
        info!(
            rotation_id = %intent.rotation_id,
            recovered = true,
            stored = rotation.map(|r| r.stored.version.get()),
            "healed an open rotation from Auth0's live secret"
        );
        let origin = Origin {
            caller: intent.caller.clone(),
            peer: None,
            trace_id: intent.trace_id.clone().unwrap_or_default(),
        };
        audit_rotation(
            Event::Recovered,
            &origin,
            client_id,
            intent.reason.as_ref(),
            intent.rotation_id,
            if rotation.is_some() {
                "stored"
            } else {
                "already_stored"
            },
            rotation.map(|r| r.stored.version),
        );
        Ok(healed)
    }

    /// Takes over the intent open in `record` (a dead rotation's, or one this replica left)
    /// and heals it. A lost race for the record is not an error: whoever won heals it.
    pub(super) async fn heal_orphan(
        &self,
        client_id: &ClientId,
        record: Versioned<ClientState>,
    ) -> Result<(), RotationError> {
        let ClientState {
            intent: Some(orphan),
            last: previous,
            ..
        } = record.value
        else {
            return Ok(());
        };
        let taken = ClientState {
            lease: Some(self.new_lease()),
            intent: Some(orphan.clone()),
            last: previous.clone(),
        };
        let fence = match self
            .ledger
            .write_state(client_id, &taken, record.version)
            .await
        {
            Ok(fence) => fence,
            Err(StoreError::CasMismatch) => return Ok(()),
            Err(e) => return Err(RotationError::Vault(e)),
        };
        warn!(rotation_id = %orphan.rotation_id, started_at = ?orphan.started_at, "healing a rotation left open");
        let path = self.settings.path.render(client_id);
        match self
            .heal(client_id, &path, &orphan, fence, previous.clone())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                // Leave the intent for the next attempt without holding its lease.
                let open = ClientState {
                    lease: None,
                    intent: Some(orphan),
                    last: previous,
                };
                if let Err(release) = self.ledger.write_state(client_id, &open, fence).await {
                    warn!(error = %release, "could not release the lease after a failed heal");
                }
                Err(e)
            }
        }
    }
}
