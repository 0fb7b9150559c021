//! Staged rotations: consumers get the next secret before Auth0 accepts it.
//!
//! 1. **Stage** (RotateSecret, strategy staged), under the client's lease: the service makes the
//!    next secret itself and writes it to the key as `next_client_secret` beside the unchanged
//!    `client_secret` (check-and-set); the ledger record keeps the staged rotation. Auth0 is not
//!    touched: consumers read the key and pick the next secret up.
//! 2. **Promote**, when `promote_after` has passed (any replica) or on CompleteRotation, under
//!    the lease: Auth0's secret is set to the staged one (PATCH), checked, then the key becomes
//!    `client_secret` = next, `previous_client_secret` = the old one.
//! 3. **Cancel** before promotion removes `next_client_secret`.
//!
//! The staged secret is in Vault before Auth0 sees it, so a promotion cut off anywhere is
//! healed from Auth0's live secret (`recovery.rs`): equal to the staged one, the promotion is
//! finished in Vault; equal to the current one, the rotation stays staged. A stage or cancel
//! cut off withdraws the staged secret.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use rand::Rng;
use secrecy::SecretString;
use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span, error, field, info, info_span, warn};
use uuid::Uuid;

use super::{
    error::{RotationError, StoreError},
    ids::{ClientId, ValidationError},
    notify::{Notification, NotificationKind},
    ports::{Ledger, SecretIssuer, SecretStore},
    records::{
        Acquired, ClientState, Intent, KeySecrets, KvVersion, RotateCommand, Rotation,
        RotationMetadata, Staged, Step, StoredSecret, Strategy,
    },
    service::{RotationService, audit_rotation},
};
use crate::audit::{Event, Origin};

/// Auth0's secret alphabet and length (64 characters of `[A-Za-z0-9_-]`).
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const SECRET_LEN: usize = 64;

/// How long an automatic promotion may take, and how long it waits before trying again.
const PROMOTION_DEADLINE: Duration = Duration::from_secs(30);
const PROMOTION_RETRY: Duration = Duration::from_secs(5);

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

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// The distribution time a staged request asked for, within bounds, or the default; an
    /// immediate request may not name one.
    pub fn distribute_for(&self, command: &RotateCommand) -> Result<Duration, ValidationError> {
        let max = self.settings.max_distribute_for;
        match (command.strategy, command.distribute_for) {
            (Strategy::Immediate, Some(_)) => Err(ValidationError::DistributeForImmediate),
            (_, None) => Ok(self.settings.distribute_for),
            (Strategy::Staged, Some(d)) if d >= Duration::from_secs(1) && d <= max => Ok(d),
            (Strategy::Staged, Some(_)) => Err(ValidationError::DistributeForRange {
                max: humantime::format_duration(max).to_string(),
            }),
        }
    }

    /// Stage step, under the lease taken for `intent`: the next secret goes to the key beside
    /// the current one, and the record keeps the staged rotation. Auth0 is only read.
    pub(super) async fn stage(
        &self,
        command: &RotateCommand,
        intent: &Intent,
        path: &str,
        lease: Acquired,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let client_id = &command.client_id;
        let rotation_id = intent.rotation_id;
        let staged = async {
            let distribute_for = self.distribute_for(command)?;
            let client = self.issuer.read_client(client_id).await?;
            if client.client_authentication_methods.0.is_some() {
                return Err(super::IssuerError::ClientNotRotatable.into());
            }
            let current = self
                .store
                .read_secret(path)
                .await
                .map_err(RotationError::VaultBeforeRotation)?
                .ok_or_else(|| RotationError::NothingToStage {
                    client_id: client_id.clone(),
                })?;
            Ok((client, current, distribute_for))
        }
        .await;
        let (client, current, distribute_for) = match staged {
            Ok(found) => found,
            Err(refusal) => {
                let closed = self.with_failure(lease.before, client_id, rotation_id, &refusal);
                self.close(client_id, rotation_id, lease.fence, closed)
                    .await;
                return Err(refusal);
            }
        };
        let secrets = current.value.with_next(Some(next_secret()));
        let version = match self
            .store_with_retries(path, client_id, &secrets, current.version, deadline)
            .await
        {
            Ok(version) => version,
            Err(e) => {
                // Auth0 was not touched; a staged secret that did reach Vault is withdrawn by
                // the heal of the intent.
                self.note_left_open(client_id, rotation_id);
                return Err(RotationError::VaultBeforeRotation(e));
            }
        };
        let now = SystemTime::now();
        let staged = Staged {
            rotation_id,
            caller: intent.caller.clone(),
            trace_id: intent.trace_id.clone(),
            reason: intent.reason.clone(),
            staged_at: now,
            promote_after: now + distribute_for,
            kv_version: version,
        };
        let rotation = Rotation {
            client: Box::new(client),
            metadata: RotationMetadata {
                rotation_id,
                rotated_at: now,
                reason: staged.reason.clone(),
                caller: staged.caller.clone(),
                recovered: false,
                strategy: Strategy::Staged,
            },
            stored: self.stored(path.to_owned(), version),
            replayed: false,
            promote_after: Some(staged.promote_after),
        };
        let closed = ClientState {
            staged: Some(staged.clone()),
            ..lease.before
        };
        let closed = self.with_rotation(closed, NotificationKind::Staged, client_id, &rotation);
        // The caller must not be told "staged" unless the record says so: otherwise the heal
        // withdraws the secret.
        self.try_close(client_id, rotation_id, lease.fence, closed)
            .await
            .map_err(RotationError::VaultBeforeRotation)?;
        self.note_staged(client_id, rotation_id, staged.promote_after);
        info!(%rotation_id, vault.version = %version, promote_after = %humantime::format_rfc3339_seconds(staged.promote_after), "next secret staged");
        Ok(rotation)
    }

    /// CompleteRotation: promotes staged rotation `rotation_id` now. Repeated after it was
    /// promoted, answers the promotion again (`replayed`).
    pub async fn complete(
        self: &Arc<Self>,
        client_id: ClientId,
        rotation_id: Uuid,
        origin: Origin,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let this = Arc::clone(self);
        let span = info_span!(
            "promotion",
            %client_id,
            %rotation_id,
            trace_id = %origin.trace_id,
            outcome = field::Empty,
        );
        // In its own task: a caller who hangs up cannot cut it off between Auth0 and Vault.
        self.detached(deadline, span, async move {
            this.recovery_possible()?;
            let result = this
                .locked(
                    &client_id,
                    rotation_id,
                    this.promote_under_lease(&client_id, rotation_id, &origin, deadline),
                )
                .await;
            let (event, outcome) = match &result {
                Ok(r) if r.replayed => (Event::Succeeded, "replayed"),
                Ok(r) if r.metadata.recovered => (Event::Recovered, "recovered"),
                Ok(_) => (Event::Succeeded, "promoted"),
                Err(e) => (Event::Failed, e.outcome()),
            };
            let version = result.as_ref().ok().map(|r| r.stored.version);
            tracing::Span::current().record("outcome", outcome);
            crate::metrics::rotation(outcome, "staged", client_id.as_str());
            audit_rotation(
                event,
                &origin,
                &client_id,
                None,
                rotation_id,
                outcome,
                version,
            );
            result
        })
        .await
    }

    async fn promote_under_lease(
        &self,
        client_id: &ClientId,
        rotation_id: Uuid,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<Rotation, RotationError> {
        let path = self.settings.path.render(client_id);
        let intent = step_intent(rotation_id, Step::Promote, origin);
        let lease = self.acquire(client_id, &path, &intent, deadline).await?;
        let staged = match lease.before.staged.clone() {
            Some(s) if s.rotation_id == rotation_id => s,
            _ => {
                let before = lease.before.clone();
                self.close(client_id, rotation_id, lease.fence, lease.before)
                    .await;
                return match before.last {
                    // Already promoted: the same answer again.
                    Some(last) if last.metadata.rotation_id == rotation_id => Ok(Rotation {
                        client: Box::default(),
                        stored: self.stored(path, last.kv_version),
                        metadata: last.metadata,
                        replayed: true,
                        promote_after: None,
                    }),
                    _ => Err(RotationError::NotStaged {
                        client_id: client_id.clone(),
                        rotation_id,
                    }),
                };
            }
        };
        let key = match self.store.read_secret(&path).await {
            Ok(Some(key)) if key.value.next.is_some() => key,
            read => {
                // The staged secret is gone from Vault (written over outside the service):
                // there is nothing to promote, and the staged rotation is over.
                let error = RotationError::VaultBeforeRotation(match read {
                    Err(e) => e,
                    Ok(_) => StoreError::Unexpected(
                        "the staged secret is no longer in the key (written over outside the service); the staged rotation is dropped".into(),
                    ),
                });
                let closed = match &error {
                    RotationError::VaultBeforeRotation(StoreError::Unexpected(_)) => {
                        let dropped = ClientState {
                            staged: None,
                            ..lease.before
                        };
                        self.with_failure(dropped, client_id, rotation_id, &error)
                    }
                    _ => lease.before,
                };
                self.close(client_id, rotation_id, lease.fence, closed)
                    .await;
                return Err(error);
            }
        };
        let next = key.value.next.clone().expect("checked above");
        let issued = match self.issuer.set_secret(client_id, &next).await {
            Ok(issued) if issued.secret_is(&next) => issued,
            outcome => {
                let lost = match outcome {
                    Err(e) if !e.outcome_unknown() => {
                        let e = RotationError::from(e);
                        let closed = self.with_failure(lease.before, client_id, rotation_id, &e);
                        self.close(client_id, rotation_id, lease.fence, closed)
                            .await;
                        return Err(e);
                    }
                    Err(e) => e,
                    // Auth0 answered with another secret: what it holds is read back.
                    Ok(_) => super::IssuerError::OutcomeUnknown(super::Transport::Unreadable),
                };
                warn!(%rotation_id, error = %lost, "Auth0's answer to the promotion was lost; reading the live secret back");
                return match self
                    .heal(client_id, &path, &intent, lease.fence, lease.before)
                    .await
                {
                    Ok(Some(healed)) => Ok(healed.rotation),
                    // Auth0 still holds the current secret: the rotation stays staged.
                    Ok(None) => Err(lost.into()),
                    Err(heal) => {
                        error!(%rotation_id, error = %heal, "NEEDS RESYNC: the live secret could not be read back yet; this replica retries the heal shortly");
                        Err(RotationError::OutcomeUnknown {
                            client_id: client_id.clone(),
                            rotation_id,
                            source: lost,
                        })
                    }
                };
            }
        };
        debug!(%rotation_id, "Auth0 holds the staged secret; promoting it in Vault");
        let secrets =
            KeySecrets::replaced(Some(&key.value), next, self.settings.previous_secret_ttl);
        let metadata = RotationMetadata {
            rotation_id,
            rotated_at: SystemTime::now(),
            reason: staged.reason,
            caller: staged.caller,
            recovered: false,
            strategy: Strategy::Staged,
        };
        let rotation = self
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
        self.forget_staged(client_id, rotation_id);
        info!(%rotation_id, vault.version = %rotation.stored.version, "staged secret promoted");
        Ok(rotation)
    }

    /// CancelRotation: removes staged rotation `rotation_id`'s secret from the key. Repeated
    /// after it was cancelled, answers the same.
    pub async fn cancel(
        &self,
        client_id: &ClientId,
        rotation_id: Uuid,
        origin: &Origin,
        deadline: Instant,
    ) -> Result<Cancelled, RotationError> {
        let path = self.settings.path.render(client_id);
        let result = self
            .locked(client_id, rotation_id, async {
                let intent = step_intent(rotation_id, Step::Cancel, origin);
                let lease = self.acquire(client_id, &path, &intent, deadline).await?;
                let before = lease.before.clone();
                let staged_here = before
                    .staged
                    .as_ref()
                    .is_some_and(|s| s.rotation_id == rotation_id);
                let refusal = match &before.last {
                    _ if staged_here => None,
                    _ if before.cancelled == Some(rotation_id) => {
                        // Cancelled before: the same answer again, changing nothing.
                        self.close(client_id, rotation_id, lease.fence, lease.before)
                            .await;
                        let version = self
                            .store
                            .current_version(&path)
                            .await
                            .map_err(RotationError::Vault)?;
                        return Ok(Cancelled {
                            rotation_id,
                            stored: self.stored(path.clone(), version),
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
                    self.close(client_id, rotation_id, lease.fence, lease.before)
                        .await;
                    return Err(refusal);
                }
                let version = self
                    .withdraw_staged(client_id, &path, &intent, lease.fence, lease.before)
                    .await?;
                self.forget_staged(client_id, rotation_id);
                Ok(Cancelled {
                    rotation_id,
                    stored: self.stored(path.clone(), version),
                })
            })
            .await;
        let (event, outcome) = match &result {
            Ok(_) => (Event::Succeeded, "cancelled"),
            Err(e) => (Event::Failed, e.outcome()),
        };
        let version = result.as_ref().ok().map(|c| c.stored.version);
        crate::metrics::rotation(outcome, "staged", client_id.as_str());
        audit_rotation(
            event,
            origin,
            client_id,
            None,
            rotation_id,
            outcome,
            version,
        );
        result
    }

    /// Removes `next_client_secret` from the key, if present, and closes `intent` with no
    /// staged rotation (the step of a stage or cancel, and their heal). Returns the key's
    /// version.
    pub(super) async fn withdraw_staged(
        &self,
        client_id: &ClientId,
        path: &str,
        intent: &Intent,
        fence: KvVersion,
        before: ClientState,
    ) -> Result<KvVersion, RotationError> {
        let version = match self.store.read_secret(path).await {
            Ok(Some(key)) if key.value.next.is_some() => {
                let secrets = key.value.with_next(None);
                self.store
                    .write_secret(path, client_id, &secrets, key.version)
                    .await
            }
            Ok(key) => Ok(key.map_or(KvVersion::NONE, |k| k.version)),
            Err(e) => Err(e),
        }
        .map_err(RotationError::Vault)?;
        let cancelled = match intent.step {
            Step::Cancel => Some(intent.rotation_id),
            _ => before.cancelled,
        };
        let closed = ClientState {
            staged: None,
            cancelled,
            ..before
        };
        let mut notification = match intent.step {
            Step::Cancel => Notification::new(
                NotificationKind::Cancelled,
                client_id,
                Some(intent.rotation_id),
            ),
            // A stage cut off: the caller was not told it was staged.
            _ => Notification {
                outcome: Some("withdrawn".into()),
                ..Notification::new(
                    NotificationKind::Failed,
                    client_id,
                    Some(intent.rotation_id),
                )
            },
        };
        notification.stored = Some(self.stored(path.to_owned(), version));
        notification.caller = intent.caller.clone();
        let mut closed = closed;
        closed.history_failed(
            intent.rotation_id,
            match intent.step {
                Step::Cancel => "cancelled",
                _ => "withdrawn",
            },
        );
        self.record(&mut closed, notification);
        self.try_close(client_id, intent.rotation_id, fence, closed)
            .await
            .map_err(RotationError::Vault)?;
        Ok(version)
    }

    /// Remembers when a staged rotation is due, for this replica's promotion timer.
    pub(super) fn note_staged(&self, client_id: &ClientId, rotation_id: Uuid, due: SystemTime) {
        let mut staged = self.staged_due.lock().expect("staged map poisoned");
        staged.insert(client_id.clone(), (rotation_id, due));
        self.staged_added.notify_one();
    }

    fn forget_staged(&self, client_id: &ClientId, rotation_id: Uuid) {
        let mut staged = self.staged_due.lock().expect("staged map poisoned");
        if staged
            .get(client_id)
            .is_some_and(|(id, _)| *id == rotation_id)
        {
            staged.remove(client_id);
        }
    }

    /// Promotes the staged rotations this replica knows of (its own, and those the scanner
    /// found) when they fall due; for ever.
    pub(super) async fn promote_due_forever(self: &Arc<Self>) {
        loop {
            let earliest = {
                let staged = self.staged_due.lock().expect("staged map poisoned");
                staged
                    .iter()
                    .min_by_key(|(_, (_, due))| *due)
                    .map(|(c, (id, due))| (c.clone(), *id, *due))
            };
            let Some((client_id, rotation_id, due)) = earliest else {
                self.staged_added.notified().await;
                continue;
            };
            if let Ok(wait) = due.duration_since(SystemTime::now()) {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.staged_added.notified() => {}
                }
                continue;
            }
            self.forget_staged(&client_id, rotation_id);
            // The start of a trace of its own, as a caller's RPC would be.
            let span = debug_span!("scheduled promotion", otel.kind = "internal");
            let origin = Origin {
                caller: Some("scheduler".into()),
                peer: None,
                trace_id: crate::trace::start(&span),
            };
            let deadline = Instant::now() + PROMOTION_DEADLINE;
            // Nobody waits on a timer's promotion: it leaves callers their reserve.
            let background = crate::upstream::Call {
                priority: crate::upstream::Priority::Background,
                deadline: Some(deadline),
            };
            match crate::upstream::within(
                background,
                self.complete(client_id.clone(), rotation_id, origin, deadline)
                    .instrument(span),
            )
            .await
            {
                Ok(_) => {}
                // Promoted or cancelled meanwhile (another replica, a caller).
                Err(RotationError::NotStaged { .. }) => {}
                Err(e) => {
                    warn!(%client_id, %rotation_id, error = %e, "could not promote a staged rotation; will retry");
                    if !e.leaves_open_intent() {
                        self.note_staged(
                            &client_id,
                            rotation_id,
                            SystemTime::now() + PROMOTION_RETRY,
                        );
                    }
                }
            }
        }
    }
}

/// The intent of a promotion or cancellation of staged rotation `rotation_id`.
fn step_intent(rotation_id: Uuid, step: Step, origin: &Origin) -> Intent {
    Intent {
        rotation_id,
        step,
        caller: origin.caller.clone(),
        trace_id: Some(origin.trace_id.clone()),
        reason: None,
        started_at: SystemTime::now(),
        idempotency_key: None,
    }
}
