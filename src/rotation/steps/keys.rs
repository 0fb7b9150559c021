//! A key rotation, for clients that authenticate with a key (Private Key JWT) or a self-signed
//! certificate (mTLS). Auth0 accepts two credentials attached at once, so the rotation overlaps
//! by itself and consumers read one field. Under the client's lease:
//!
//! 1. the new key pair is made here and written to Vault as `next_private_key` before Auth0
//!    knows its public key: nothing can be lost;
//! 2. its public key (or a certificate of it) is registered, named after the rotation, and
//!    attached beside the credential in use;
//! 3. where the client may use client credentials, Auth0 is asked for a token with an assertion
//!    signed by the new key; a refusal withdraws the new credential;
//! 4. the switch: Vault's `private_key` is the new key, `previous_private_key` the old one; the
//!    record keeps the overlap;
//! 5. after the overlap (a timer, the scanning replica, or CompleteRotation) the old credential
//!    is detached and deleted and dropped from Vault ([`retire`]).
//!
//! Cut off before the switch, the rotation is withdrawn (the new credential detached and
//! deleted, `next_private_key` removed); after it, finished. [`heal`] tells them apart by the
//! credential named after the rotation.

use std::time::SystemTime;

use tokio::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

use crate::rotation::{
    client::Client,
    command::RotateCommand,
    error::{IssuerError, RotationError, StoreError, Transport},
    ids::{AuthMethod, ClientId, CredentialId},
    keys::{Certificate, KeyAlgorithm, KeyPair},
    overlap::{
        NAME_PREFIX, attached, attachments, close_switched, credential_name, heal, key_method,
        with_method,
    },
    pipeline::{Open, Pipeline},
    ports::{
        Attachments, CredentialInfo, Ledger, NewCredential, OwnCredential, SecretIssuer,
        SecretStore,
    },
    records::{
        Intent, KeyEntry, KvVersion, RotatedCredential, Rotation, Step, StoredKey, Strategy,
        Versioned,
    },
    state::{Acquired, ClientState},
};

/// What the rotation found before changing anything.
struct Plan {
    method: AuthMethod,
    all: Attachments,
    /// The credential consumers use now, if any is attached.
    in_use: Option<CredentialId>,
    held: Option<Versioned<StoredKey>>,
    alg: KeyAlgorithm,
    /// Credentials this service registered that nothing uses any more.
    unused: Vec<CredentialId>,
    verify: bool,
}

async fn plan<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    client: &Client,
    path: &str,
) -> Result<Plan, RotationError> {
    let method = match key_method(client) {
        Some(AuthMethod::CaSignedTls) => {
            return Err(RotationError::CaSignedCertificates {
                client_id: client_id.clone(),
            });
        }
        Some(method) => method,
        None => return Err(IssuerError::ClientNotRotatable.into()),
    };
    let all = attachments(client);
    let ids = attached(&all, method);
    let held = p
        .store
        .read_key(path)
        .await
        .map_err(RotationError::VaultBeforeRotation)?;
    let vault_has = held
        .as_ref()
        .and_then(|h| h.value.current.as_ref())
        .map(|c| c.credential_id.clone());
    // Two attached leave no room: one of them must be the key Vault holds, and the other is
    // then someone else's.
    let elsewhere = |credential: &CredentialId| RotationError::KeysManagedElsewhere {
        client_id: client_id.clone(),
        credential: credential.clone(),
    };
    let in_use = match ids.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [a, b, ..] => {
            return Err(match &vault_has {
                Some(v) if v == a => elsewhere(b),
                _ => elsewhere(a),
            });
        }
    };
    let pool = p.issuer.credentials(client_id).await?;
    let attached_anywhere: Vec<&CredentialId> = all.iter().flat_map(|(_, ids)| ids).collect();
    let unused: Vec<CredentialId> = pool
        .iter()
        .filter(|c| {
            c.name
                .as_deref()
                .is_some_and(|n| n.starts_with(NAME_PREFIX))
                && !attached_anywhere.contains(&&c.id)
        })
        .map(|c| c.id.clone())
        .collect();
    if pool.len() - unused.len() >= 4 {
        return Err(RotationError::CredentialPoolFull {
            client_id: client_id.clone(),
        });
    }
    let in_use_info = in_use
        .as_ref()
        .and_then(|id| pool.iter().find(|c| &c.id == id));
    let alg = in_use_info
        .and_then(|c| c.alg.as_deref())
        .and_then(KeyAlgorithm::parse)
        .or_else(|| {
            held.as_ref()
                .and_then(|h| h.value.current.as_ref())
                .and_then(|c| c.algorithm)
        })
        .unwrap_or_default();
    let verify = method == AuthMethod::PrivateKeyJwt
        && client
            .grant_types
            .0
            .iter()
            .flatten()
            .any(|g| g == "client_credentials");
    Ok(Plan {
        method,
        all,
        in_use,
        held,
        alg,
        unused,
        verify,
    })
}

/// A dry run's checks of a key rotation: the client's method, what is attached, the pool, and
/// that the grant may read credentials. Reads only.
pub(in crate::rotation) async fn check<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    client: &Client,
    path: &str,
) -> Result<(), RotationError> {
    plan(p, client_id, client, path)
        .await
        .map(|_| ())
        .map_err(|e| scope_named(client_id, e))
}

/// The lease's intent becomes a key rotation's: its heal differs from a secret's, and its
/// history entry says which credential it rotates.
async fn reintend<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    intent: &Intent,
    method: Option<AuthMethod>,
    lease: Acquired,
) -> Result<Acquired, StoreError> {
    let mut before = lease.before;
    if let Some(method) = method {
        before.history_key(intent.rotation_id, method);
    }
    let mine = ClientState {
        lease: Some(p.new_lease()),
        intent: Some(intent.clone()),
        ..before.clone()
    };
    let fence = p.ledger.write_state(client_id, &mine, lease.fence).await?;
    Ok(Acquired {
        fence,
        before,
        ..lease
    })
}

/// Rotates the key of `client` (read by the caller: it has no secret), under the lease taken
/// for `intent`.
pub(super) async fn rotate<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    command: &RotateCommand,
    intent: &Intent,
    path: &str,
    lease: Acquired,
    client: Client,
    deadline: Instant,
) -> Result<Rotation, RotationError> {
    let client_id = &command.client_id;
    let intent = Intent {
        step: Step::KeyRotate,
        ..intent.clone()
    };
    let rotation_id = intent.rotation_id;
    let lease = reintend(p, client_id, &intent, key_method(&client), lease)
        .await
        .map_err(RotationError::VaultBeforeRotation)?;
    let planned = async {
        let distribute_for = p.distribute_for(Strategy::Key, command.distribute_for)?;
        Ok((plan(p, client_id, &client, path).await?, distribute_for))
    }
    .await;
    let (plan, distribute_for) = match planned {
        Ok(planned) => planned,
        Err(refusal) => {
            let refusal = scope_named(client_id, refusal);
            return p.refuse(client_id, rotation_id, lease, refusal).await;
        }
    };
    // CPU-bound: off the async workers.
    let bits = p.settings.keys.bits;
    let key = match tokio::task::spawn_blocking(move || KeyPair::generate(bits)).await {
        Ok(Ok(key)) => key,
        Ok(Err(e)) => return p.refuse(client_id, rotation_id, lease, e.into()).await,
        Err(_) => {
            return p
                .refuse(client_id, rotation_id, lease, RotationError::Internal)
                .await;
        }
    };
    // 1. The new private key is in Vault before Auth0 knows its public key.
    let held = plan
        .held
        .as_ref()
        .map(|h| h.value.clone())
        .unwrap_or_default();
    let staged = StoredKey {
        next: Some(key.private_pem().clone()),
        ..held.clone()
    };
    let cas = plan.held.as_ref().map_or(KvVersion::NONE, |h| h.version);
    let staged_version = match p.store.write_key(path, client_id, &staged, cas).await {
        Ok(version) => version,
        Err(e) => {
            return p
                .refuse(
                    client_id,
                    rotation_id,
                    lease,
                    RotationError::VaultBeforeRotation(e),
                )
                .await;
        }
    };
    let open = Open {
        client_id,
        path,
        intent: &intent,
        fence: lease.fence,
        before: lease.before.clone(),
    };
    // 2 and 3. Registered, attached beside the key in use, verified. Any failure from here on
    // is healed at once: withdrawn before the switch, finished after it.
    let switched = tokio::time::timeout_at(
        deadline,
        register_and_verify(p, client_id, &plan, &key, rotation_id),
    )
    .await
    .unwrap_or_else(|_| Err(IssuerError::OutcomeUnknown(Transport::TimedOut).into()));
    let (credential, certificate) = match switched {
        Ok(registered) => registered,
        Err(refusal) => {
            heal_now(p, open, distribute_for).await;
            return Err(scope_named(client_id, refusal));
        }
    };
    // 4. The switch: consumers read the new key.
    // A key's id is Auth0's kid; a certificate's, its SHA-256 thumbprint.
    let key_id = match &certificate {
        None => credential
            .kid
            .clone()
            .unwrap_or_else(|| key.kid().to_owned()),
        Some(cert) => credential
            .thumbprint_sha256
            .clone()
            .unwrap_or_else(|| cert.thumbprint_sha256.clone()),
    };
    let held_key_id = key_id.clone();
    let new_entry = KeyEntry {
        private_key: key.private_pem().clone(),
        key_id,
        credential_id: credential.id.clone(),
        algorithm: (plan.method == AuthMethod::PrivateKeyJwt).then_some(plan.alg),
        certificate: certificate.map(|c| c.pem),
    };
    let switched = StoredKey {
        current: Some(new_entry),
        next: None,
        previous: held.current.clone(),
    };
    let version = match p
        .store
        .write_key(path, client_id, &switched, staged_version)
        .await
    {
        Ok(version) => version,
        Err(e) => {
            warn!(%rotation_id, error = %e, "could not switch Vault to the new key; withdrawing it");
            heal_now(p, open, distribute_for).await;
            return Err(RotationError::VaultBeforeRotation(e));
        }
    };
    let rotation = close_switched(
        p,
        &open,
        RotatedCredential {
            method: plan.method,
            credential_id: credential.id.clone(),
            key_id: held_key_id,
            expires_at: credential.expires(),
        },
        plan.in_use.clone(),
        version,
        distribute_for,
        &client,
    )
    .await;
    info!(%rotation_id, vault.version = %version, credential = %credential.id, "key rotated; the old key is retired after the overlap");
    Ok(rotation)
}

/// Heals a key rotation that failed on its way (withdrawn before the switch, finished after
/// it); one that cannot be healed now is left to this replica's retries.
async fn heal_now<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    open: Open<'_>,
    distribute_for: std::time::Duration,
) {
    let (client_id, rotation_id) = (open.client_id, open.intent.rotation_id);
    if let Err(e) = heal(p, open, Some(distribute_for)).await {
        warn!(%rotation_id, error = %e, "a key rotation could not be healed yet; this replica retries shortly");
        p.left_open.note(client_id, rotation_id);
    }
}

/// A scope the grant lacks, named as key rotation's: secrets are rotated without it.
fn scope_named(client_id: &ClientId, err: RotationError) -> RotationError {
    match err {
        RotationError::Issuer(IssuerError::MissingScope(scope)) => RotationError::KeyScopeMissing {
            client_id: client_id.clone(),
            scope,
        },
        other => other,
    }
}

/// Steps 2 and 3: the new credential registered (unused ones of this service deleted first,
/// when the pool needs room), attached beside the one in use, and verified.
async fn register_and_verify<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client_id: &ClientId,
    plan: &Plan,
    key: &KeyPair,
    rotation_id: Uuid,
) -> Result<(CredentialInfo, Option<Certificate>), RotationError> {
    for unused in &plan.unused {
        p.issuer.delete_credential(client_id, unused).await?;
    }
    let certificate = match plan.method {
        AuthMethod::PrivateKeyJwt => None,
        _ => Some(key.certificate(client_id.as_str(), p.settings.keys.certificate_lifetime)?),
    };
    let pem = match &certificate {
        None => key.public_pem().to_owned(),
        Some(cert) => cert.pem.clone(),
    };
    let created = p
        .issuer
        .create_credential(
            client_id,
            &NewCredential {
                name: credential_name(rotation_id),
                method: plan.method,
                pem,
                alg: (plan.method == AuthMethod::PrivateKeyJwt).then_some(plan.alg),
                expires_at: p
                    .settings
                    .keys
                    .credential_lifetime
                    .map(|l| SystemTime::now() + l),
            },
        )
        .await?;
    let mut ids: Vec<CredentialId> = plan.in_use.iter().cloned().collect();
    ids.push(created.id.clone());
    p.issuer
        .attach(client_id, &with_method(&plan.all, plan.method, ids))
        .await?;
    if p.is_own(client_id) {
        // The service's own key must get it a Management API token before it is handed to
        // the replicas.
        let own = OwnCredential::Key {
            private_key: key.private_pem().clone(),
            key_id: created.kid.clone(),
            algorithm: plan.alg,
        };
        if !p.issuer.proves(&own).await? {
            return Err(RotationError::OwnCredentialNotProved {
                client_id: client_id.clone(),
            });
        }
    } else if plan.verify {
        let assertion = key.assertion(
            client_id.as_str(),
            p.issuer.domain(),
            plan.alg,
            created.kid.as_deref(),
        )?;
        if !p.issuer.authenticates(client_id, &assertion).await? {
            return Err(RotationError::KeyNotVerified {
                client_id: client_id.clone(),
            });
        }
    }
    Ok((created, certificate))
}
