//! The tenant's clients with what the service knows of each (ListClients): a page of Auth0's
//! client list, and for each client its ledger record's last rotation. Never a secret: the
//! issuer lists clients without their secrets, and the record holds none.

use std::time::SystemTime;

use futures_util::{StreamExt, stream};

use super::{
    client::Client,
    error::RotationError,
    ids::ClientId,
    ports::{Ledger, PageCursor, SecretIssuer, SecretStore},
    records::{Drift, RotationMetadata, StoredSecret},
    schedule::ScheduledRotation,
    service::RotationService,
};

/// Ledger records read at once for one page.
const READS_AT_ONCE: usize = 16;

/// One client as ListClients shows it.
#[derive(Debug, Clone)]
pub struct InventoryEntry {
    pub client_id: ClientId,
    pub client: Client,
    /// Whether it authenticates with its secret (`client_secret_post` or
    /// `client_secret_basic`), so that rotating the secret matters.
    pub rotatable: bool,
    /// The last rotation the service stored, and where.
    pub last: Option<(RotationMetadata, StoredSecret)>,
    /// How long ago `last` was stored.
    pub age: Option<std::time::Duration>,
    /// What the last drift check on this replica found.
    pub drift: Option<Drift>,
    /// When a schedule rotates it next.
    pub next_rotation: Option<ScheduledRotation>,
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

/// What `pick` makes of each rotatable client (secret-based, not the service's own), from every
/// page of the tenant's client list; `None` once more than `limit` were picked.
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
            let Some(id) = client
                .client_id
                .0
                .as_deref()
                .and_then(|id| ClientId::parse(id).ok())
            else {
                continue;
            };
            if secret_based(client) && !p.is_own(&id) {
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
/// `visible` keeps, each with its last rotation: one Management API request and one ledger read
/// per client shown.
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
    let entries = stream::iter(shown)
        .map(|(client_id, client)| async move {
            let record = p.ledger.read_state(&client_id).await;
            (client_id, client, record)
        })
        .buffered(READS_AT_ONCE)
        .map(|(client_id, client, record)| {
            let state = record.map_err(RotationError::Vault)?.value;
            let rotatable = secret_based(&client) && !p.is_own(&client_id);
            let last = state.last;
            let next_rotation = schedule.as_ref().filter(|_| rotatable).and_then(|s| {
                let at = last.as_ref().map(|l| l.metadata.rotated_at);
                s.next_rotation(&client_id, &client, at, service.started())
            });
            let age = last
                .as_ref()
                .and_then(|l| now.duration_since(l.metadata.rotated_at).ok());
            let last = last.map(|l| (l.metadata, p.stored(p.path(&client_id), l.kv_version)));
            Ok(InventoryEntry {
                drift: service.known_drift(&client_id),
                next_rotation,
                rotatable,
                age,
                client_id,
                client,
                last,
            })
        })
        .collect::<Vec<Result<InventoryEntry, RotationError>>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Inventory {
        entries,
        next: page.next,
    })
}
