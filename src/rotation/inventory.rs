//! The tenant's clients with what the service knows of each (ListClients): a page of Auth0's
//! client list, for each client its ledger record's last rotation, and for a key client the
//! credentials it has attached. Never a secret or a key: the issuer lists clients without
//! their secrets, credentials are public keys' metadata, and the record holds none.

use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, stream};

use super::{
    client::Client,
    error::{IssuerError, RotationError},
    ids::{AuthMethod, ClientId, CredentialId},
    overlap::{attached, attachments, key_method},
    pipeline::Pipeline,
    ports::{CredentialInfo, Ledger, PageCursor, SecretIssuer, SecretStore},
    records::{Drift, RotationMetadata, StoredSecret},
    schedule::ScheduledRotation,
    service::RotationService,
};

/// Ledger records read at once for one page.
const READS_AT_ONCE: usize = 16;
/// Key clients' credential lists read from Auth0 at once for one page.
const CREDENTIAL_READS_AT_ONCE: usize = 4;

/// One client as ListClients shows it.
#[derive(Debug, Clone)]
pub struct InventoryEntry {
    pub client_id: ClientId,
    pub client: Client,
    /// Whether the service rotates what it authenticates with: its secret
    /// (`client_secret_post` or `client_secret_basic`), a key or a self-signed certificate.
    pub rotatable: bool,
    /// The key or certificate method it authenticates with; `None` for a secret.
    pub method: Option<AuthMethod>,
    /// A key client's attached credentials, in Auth0's order.
    pub credentials: Vec<AttachedCredential>,
    /// How old the credential in use is: the key's `created_at`, or the last rotation's age.
    pub credential_age: Option<Duration>,
    /// The last rotation the service stored, and where.
    pub last: Option<(RotationMetadata, StoredSecret)>,
    /// How long ago `last` was stored.
    pub age: Option<std::time::Duration>,
    /// What the last drift check on this replica found.
    pub drift: Option<Drift>,
    /// When a schedule rotates it next.
    pub next_rotation: Option<ScheduledRotation>,
}

/// A credential attached to a key client. Only its id is known when the grant may not read
/// credentials (`read:client_credentials`).
#[derive(Debug, Clone)]
pub struct AttachedCredential {
    pub info: CredentialInfo,
    /// The one consumers use: the last rotation's, or the only one attached.
    pub in_use: bool,
}

/// A page of [`InventoryEntry`].
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub entries: Vec<InventoryEntry>,
    pub next: Option<PageCursor>,
}

/// Whether a client authenticates with its secret.
pub fn secret_based(client: &Client) -> bool {
    matches!(
        client.token_endpoint_auth_method.0.as_deref(),
        Some("client_secret_post" | "client_secret_basic")
    )
}

/// Whether the service rotates what `client` authenticates with: its secret, a key or a
/// self-signed certificate (CA-signed certificates belong to a CA).
pub fn rotatable(client: &Client) -> bool {
    match key_method(client) {
        Some(method) => method != AuthMethod::CaSignedTls,
        None => secret_based(client),
    }
}

/// The client's id, when the service may rotate it: a secret, a key or a self-signed
/// certificate, and not the service's own application unless its credential is in Vault.
pub(super) fn rotatable_id<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
    client: &Client,
) -> Option<ClientId> {
    let id = client
        .client_id
        .0
        .as_deref()
        .and_then(|id| ClientId::parse(id).ok())?;
    (rotatable(client) && !p.refuses_own(&id)).then_some(id)
}

/// Every page of the tenant's client list (100 clients a request).
pub(super) async fn all_clients<I: SecretIssuer, S: SecretStore, L: Ledger>(
    p: &Pipeline<I, S, L>,
) -> Result<Vec<Client>, RotationError> {
    let mut all = Vec::new();
    let mut from: Option<PageCursor> = None;
    loop {
        let page = p.issuer.list_clients(from.as_ref(), 100).await?;
        all.extend(page.clients);
        match page.next {
            Some(next) => from = Some(next),
            None => return Ok(all),
        }
    }
}

/// What `pick` makes of each rotatable client (not the service's own), from every page of the
/// tenant's client list; `None` once more than `limit` were picked.
pub(super) async fn rotatable_clients<I: SecretIssuer, S: SecretStore, L: Ledger, T>(
    service: &RotationService<I, S, L>,
    limit: usize,
    mut pick: impl FnMut(ClientId, &Client) -> Option<T>,
) -> Result<Option<Vec<T>>, RotationError> {
    let p = service.pipeline();
    let mut picked = Vec::new();
    let mut from: Option<PageCursor> = None;
    loop {
        let page = p.issuer.list_clients(from.as_ref(), 100).await?;
        for client in &page.clients {
            if let Some(id) = rotatable_id(p, client) {
                picked.extend(pick(id, client));
            }
        }
        if picked.len() > limit {
            return Ok(None);
        }
        match page.next {
            Some(next) => from = Some(next),
            None => return Ok(Some(picked)),
        }
    }
}

/// ListClients: a page of the tenant's clients (at most `size`, from `from` on), those
/// `visible` keeps, each with its last rotation: one Management API request for the page, one
/// more per key client shown (its credentials), and one ledger read per client shown.
pub async fn page<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
    from: Option<&PageCursor>,
    size: usize,
    visible: impl Fn(&ClientId) -> bool,
) -> Result<Inventory, RotationError> {
    let p = service.pipeline();
    let page = p.issuer.list_clients(from, size).await?;
    let shown: Vec<(ClientId, Client)> = page
        .clients
        .into_iter()
        .filter_map(|client| {
            let id = ClientId::parse(client.client_id.0.as_deref()?).ok()?;
            visible(&id).then_some((id, client))
        })
        .collect();
    let now = SystemTime::now();
    let schedule = service.schedule();
    let read = stream::iter(shown)
        .map(|(client_id, client)| async move {
            let record = p.ledger.read_state(&client_id).await;
            (client_id, client, record)
        })
        .buffered(READS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    let entries = stream::iter(read)
        .map(|(client_id, client, record)| {
            let schedule = schedule.clone();
            async move {
                let state = record.map_err(RotationError::Vault)?.value;
                let rotatable = rotatable(&client) && !p.refuses_own(&client_id);
                let method = key_method(&client);
                let last = state.last;
                let in_use = last
                    .as_ref()
                    .and_then(|l| l.credential.as_ref())
                    .map(|c| c.credential_id.clone());
                let credentials = match method {
                    Some(method) => {
                        attached_credentials(service, &client_id, &client, method, in_use).await?
                    }
                    None => Vec::new(),
                };
                let next_rotation = schedule.as_ref().filter(|_| rotatable).and_then(|s| {
                    let at = last.as_ref().map(|l| l.metadata.rotated_at);
                    let expires = last
                        .as_ref()
                        .and_then(|l| l.credential.as_ref())
                        .and_then(|c| c.expires_at);
                    s.next_rotation(&client_id, &client, at, expires, service.started())
                });
                let age = last
                    .as_ref()
                    .and_then(|l| now.duration_since(l.metadata.rotated_at).ok());
                let credential_age = match method {
                    Some(_) => credentials
                        .iter()
                        .find(|c| c.in_use)
                        .and_then(|c| c.info.created())
                        .and_then(|created| now.duration_since(created).ok()),
                    None => age,
                };
                let last = last.map(|l| (l.metadata, p.stored(p.path(&client_id), l.kv_version)));
                Ok(InventoryEntry {
                    drift: service.known_drift(&client_id),
                    next_rotation,
                    rotatable,
                    method,
                    credentials,
                    credential_age,
                    age,
                    client_id,
                    client,
                    last,
                })
            }
        })
        .buffered(CREDENTIAL_READS_AT_ONCE)
        .collect::<Vec<Result<InventoryEntry, RotationError>>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Inventory {
        entries,
        next: page.next,
    })
}

/// The credentials `client` has attached for `method`, as Auth0 describes them; only their ids
/// when the grant may not read credentials. `in_use` is the one the last rotation made.
async fn attached_credentials<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
    client_id: &ClientId,
    client: &Client,
    method: AuthMethod,
    in_use: Option<CredentialId>,
) -> Result<Vec<AttachedCredential>, RotationError> {
    let ids = attached(&attachments(client), method);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let pool = match service.pipeline().issuer.credentials(client_id).await {
        Ok(pool) => pool,
        Err(IssuerError::MissingScope(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let in_use = in_use
        .filter(|id| ids.contains(id))
        .or_else(|| (ids.len() == 1).then(|| ids[0].clone()));
    Ok(ids
        .into_iter()
        .map(|id| AttachedCredential {
            in_use: in_use.as_ref() == Some(&id),
            info: pool
                .iter()
                .find(|c| c.id == id)
                .cloned()
                .unwrap_or_else(|| CredentialInfo {
                    id,
                    name: None,
                    credential_type: method.credential_type().to_owned(),
                    kid: None,
                    alg: None,
                    thumbprint_sha256: None,
                    created_at: None,
                    expires_at: None,
                }),
        })
        .collect())
}
