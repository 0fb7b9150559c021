//! Healing open intents: the live secret is read back from Auth0 and stored, never rotated
//! again; a staged secret whose step was cut off is promoted or withdrawn. Used inline when Auth0's answer is lost, before taking over an expired lease, and by
//! the reconciler (`reconciler.rs`).

use tracing::{info, warn};

use super::{
    error::{RotationError, StoreError},
    ids::ClientId,
    notify::NotificationKind,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{
        ClientState, Intent, KeySecrets, KvVersion, LastRotation, Rotation, RotationMetadata, Step,
        Strategy, Versioned,
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
    /// Heals an open intent (the caller holds the lease, `fence`); `before` is the record
    /// without lease and intent. An immediate rotation or a promotion: stores the secret Auth0
    /// accepts now, unless Vault already holds it, and closes the intent. Returns the rotation
    /// when the intent's rotation did happen, or may have, `None` when Auth0 never changed
    /// under it. Staging and cancelling never touch Auth0: their heal withdraws the staged
    /// secret (see `staged.rs`).
    pub(super) async fn heal(
        &self,
        client_id: &ClientId,
        path: &str,
        intent: &Intent,
        fence: KvVersion,
        before: ClientState,
    ) -> Result<Option<Healed>, RotationError> {
        let healed = match intent.step {
            Step::Stage | Step::Cancel => {
                self.withdraw_staged(client_id, path, intent, fence, before)
                    .await?;
                None
            }
            Step::Rotate | Step::Promote => {
                self.heal_from_live(client_id, path, intent, fence, before)
                    .await?
            }
        };
        let rotation = healed.as_ref().map(|h| &h.rotation);
        if let Some(key) = &intent.idempotency_key {
            self.settle_recovered_key(key, client_id, intent, rotation)
                .await;
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

    /// Heals a rotation or promotion from the secret Auth0 accepts now. A promotion staged its
    /// secret in Vault before Auth0 saw it: when Auth0 holds the staged secret, the promotion
    /// is finished in Vault; when Auth0 still holds the current one, the rotation stays staged.
    async fn heal_from_live(
        &self,
        client_id: &ClientId,
        path: &str,
        intent: &Intent,
        fence: KvVersion,
        before: ClientState,
    ) -> Result<Option<Healed>, RotationError> {
        let live = self.issuer.read_secret(client_id).await?;
        let current = self
            .store
            .read_secret(path)
            .await
            .map_err(RotationError::Vault)?;
        let staged = before
            .staged
            .as_ref()
            .filter(|s| intent.step == Step::Promote && s.rotation_id == intent.rotation_id);
        let metadata = RotationMetadata {
            rotation_id: intent.rotation_id,
            rotated_at: std::time::SystemTime::now(),
            reason: staged.map_or(intent.reason.clone(), |s| s.reason.clone()),
            caller: staged.map_or(intent.caller.clone(), |s| s.caller.clone()),
            recovered: true,
            strategy: match staged {
                Some(_) => Strategy::Staged,
                None => Strategy::Immediate,
            },
        };
        let recorded = staged
            .map(|s| s.kv_version)
            .or(before.last.as_ref().map(|l| l.kv_version))
            .unwrap_or(KvVersion::NONE);
        let healed = |version, rotated| Healed {
            rotation: Rotation {
                client: live.client.clone(),
                metadata: metadata.clone(),
                stored: self.stored(path.to_owned(), version),
                replayed: false,
                promote_after: None,
            },
            rotated,
        };
        let healed = match current {
            // Auth0 still holds the current secret and the staged one waits: the promotion
            // never reached Auth0, and the rotation stays staged.
            Some(held)
                if held.value.holds(&live.secret)
                    && staged.is_some()
                    && held.value.next.is_some() =>
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
                    self.settings.previous_secret_ttl,
                );
                let version = self
                    .store
                    .write_secret(path, client_id, &secrets, cas)
                    .await
                    .map_err(RotationError::Vault)?;
                Some(healed(version, rotated))
            }
        };
        let closed = match &healed {
            Some(h) => self.with_rotation(
                before.closed_with(LastRotation {
                    metadata: h.rotation.metadata.clone(),
                    kv_version: h.rotation.stored.version,
                }),
                NotificationKind::Recovered,
                client_id,
                &h.rotation,
            ),
            None => before,
        };
        self.close(client_id, intent.rotation_id, fence, closed)
            .await;
        Ok(healed)
    }

    /// Takes over the intent open in `record` (a dead rotation's, or one this replica left)
    /// and heals it. A lost race for the record is not an error: whoever won heals it.
    pub(super) async fn heal_orphan(
        &self,
        client_id: &ClientId,
        record: Versioned<ClientState>,
    ) -> Result<(), RotationError> {
        let Some(orphan) = record.value.intent.clone() else {
            return Ok(());
        };
        let before = record.value.settled();
        let taken = ClientState {
            lease: Some(self.new_lease()),
            ..record.value
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
            .heal(client_id, &path, &orphan, fence, before.clone())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                // Leave the intent for the next attempt without holding its lease.
                let open = ClientState {
                    intent: Some(orphan),
                    ..before
                };
                if let Err(release) = self.ledger.write_state(client_id, &open, fence).await {
                    warn!(error = %release, "could not release the lease after a failed heal");
                }
                Err(e)
            }
        }
    }
}
