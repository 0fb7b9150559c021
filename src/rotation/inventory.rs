//! The tenant's clients with what the service knows of each (ListClients): a page of Auth0's
//! client list, and for each client its ledger record's last rotation. Never a secret: the
//! issuer lists clients without their secrets, and the record holds none.

use std::time::SystemTime;

use futures_util::{StreamExt, stream};

use super::{
    Ledger, RotationError, RotationService, SecretIssuer, SecretStore,
    client::Client,
    ids::{ClientId, ValidationError},
    records::{Drift, RotationMetadata, StoredSecret},
    scheduler::ScheduledRotation,
};

/// Ledger records read at once for one page.
const READS_AT_ONCE: usize = 16;

/// Where the next page of Auth0's client list starts: Auth0's checkpoint, kept opaque but
/// checked (a short string of URL-safe characters) before it is sent back to Auth0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor(String);

impl PageCursor {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"-_.~=".contains(&b);
        match !raw.is_empty() && raw.len() <= 256 && raw.bytes().all(safe) {
            true => Ok(Self(raw.to_owned())),
            false => Err(ValidationError::PageToken),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of the issuer's client list.
#[derive(Debug, Clone, Default)]
pub struct ClientPage {
    pub clients: Vec<Client>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageCursor>,
}

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

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// What `pick` makes of each rotatable client (secret-based, not the service's own), from
    /// every page of the tenant's client list; `None` once more than `limit` were picked.
    pub(super) async fn rotatable_clients<T>(
        &self,
        limit: usize,
        mut pick: impl FnMut(ClientId, &Client) -> Option<T>,
    ) -> Result<Option<Vec<T>>, RotationError> {
        let mut picked = Vec::new();
        let mut from: Option<PageCursor> = None;
        loop {
            let page = self.issuer.list_clients(from.as_ref(), 100).await?;
            for client in &page.clients {
                let Some(id) = client
                    .client_id
                    .0
                    .as_deref()
                    .and_then(|id| ClientId::parse(id).ok())
                else {
                    continue;
                };
                if secret_based(client) && !self.is_own(&id) {
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

    /// A page of the tenant's clients (at most `size`, from `from` on), those `visible` keeps,
    /// each with its last rotation: one Management API request and one ledger read per client
    /// shown.
    pub async fn inventory(
        &self,
        from: Option<&PageCursor>,
        size: usize,
        visible: impl Fn(&ClientId) -> bool,
    ) -> Result<Inventory, RotationError> {
        let page = self.issuer.list_clients(from, size).await?;
        let shown: Vec<(ClientId, Client)> = page
            .clients
            .into_iter()
            .filter_map(|client| {
                let id = ClientId::parse(client.client_id.0.as_deref()?).ok()?;
                visible(&id).then_some((id, client))
            })
            .collect();
        let now = SystemTime::now();
        let entries = stream::iter(shown)
            .map(|(client_id, client)| async move {
                let record = self.ledger.read_state(&client_id).await;
                (client_id, client, record)
            })
            .buffered(READS_AT_ONCE)
            .map(|(client_id, client, record)| {
                let state = record.map_err(RotationError::Vault)?.value;
                let rotatable = secret_based(&client) && !self.is_own(&client_id);
                let next_rotation = rotatable
                    .then(|| self.next_rotation(&client_id, &client, &state))
                    .flatten();
                let last = state.last;
                let age = last
                    .as_ref()
                    .and_then(|l| now.duration_since(l.metadata.rotated_at).ok());
                let last = last.map(|l| {
                    let path = self.settings.path.render(&client_id);
                    (l.metadata, self.stored(path, l.kv_version))
                });
                Ok(InventoryEntry {
                    drift: self.known_drift(&client_id),
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
}
