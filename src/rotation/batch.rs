//! Batches (RotateSecrets): the clients a selector picks from the tenant's client list, and
//! many rotations run a bounded number at a time, each exactly as RotateSecret runs it (its own
//! lease, intent, idempotency key and audit), reported as each finishes.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::{StreamExt, stream::FuturesUnordered};
use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use serde_json::Value;
use tokio::{sync::mpsc, time::Instant};

use super::{
    IssuerErrorKind, Ledger, RotationError, RotationService, SecretIssuer, SecretStore,
    client::Client,
    ids::{ClientId, ValidationError},
    records::{RotateCommand, Rotation},
};

/// The most clients one batch names or selects.
pub const BATCH_MAX: usize = 1000;

/// How often one client of a batch is tried while Auth0's budget has no room for it.
const RATE_LIMITED_ATTEMPTS: u32 = 5;

/// Picks clients by id, application type, name and `client_metadata`; every part given must
/// match.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    clients: Option<GlobSet>,
    app_types: Vec<String>,
    name: Option<GlobMatcher>,
    metadata: BTreeMap<String, String>,
}

impl Selector {
    pub fn parse(
        clients: &[String],
        app_types: &[String],
        name: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self, ValidationError> {
        let glob = |p: &str| Glob::new(p).map_err(|_| ValidationError::Selector);
        let clients = match clients.is_empty() {
            true => None,
            false => {
                let mut set = GlobSetBuilder::new();
                for pattern in clients {
                    set.add(glob(pattern)?);
                }
                Some(set.build().map_err(|_| ValidationError::Selector)?)
            }
        };
        let name = match name.is_empty() {
            true => None,
            false => Some(glob(name)?.compile_matcher()),
        };
        Ok(Self {
            clients,
            app_types: app_types.to_vec(),
            name,
            metadata,
        })
    }

    pub fn matches(&self, client_id: &ClientId, client: &Client) -> bool {
        let text = |v: &Option<String>| v.as_deref().unwrap_or("").to_owned();
        let metadata = client.client_metadata.0.clone().unwrap_or_default();
        self.clients
            .as_ref()
            .is_none_or(|set| set.is_match(client_id.as_str()))
            && (self.app_types.is_empty() || self.app_types.contains(&text(&client.app_type.0)))
            && self
                .name
                .as_ref()
                .is_none_or(|glob| glob.is_match(text(&client.name.0)))
            && self
                .metadata
                .iter()
                .all(|(k, v)| metadata.get(k) == Some(&Value::String(v.clone())))
    }
}

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationService<I, S, L> {
    /// The rotatable clients `selector` picks, from every page of the tenant's client list.
    pub async fn select(&self, selector: &Selector) -> Result<Vec<ClientId>, RotationError> {
        self.rotatable_clients(BATCH_MAX, |id, client| {
            selector.matches(&id, client).then_some(id)
        })
        .await?
        .ok_or_else(|| ValidationError::BatchTooLarge.into())
    }

    /// Rotates every command, `concurrency` at a time, each with `each` to finish once
    /// started (tried again, up to five times, when Auth0's budget had no room in time), and
    /// reports each as it finishes. Stops starting new rotations once `done` is
    /// closed (the caller hung up); those started finish, as RotateSecret's do.
    pub async fn rotate_many(
        self: &Arc<Self>,
        commands: Vec<RotateCommand>,
        concurrency: usize,
        each: Duration,
        done: mpsc::Sender<(ClientId, Result<Rotation, RotationError>)>,
    ) {
        let mut pending = commands.into_iter();
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < concurrency.max(1) && !done.is_closed() {
                let Some(command) = pending.next() else { break };
                let this = Arc::clone(self);
                running.push(async move {
                    let client_id = command.client_id.clone();
                    let mut attempts = 1;
                    loop {
                        let result = this.rotate(command.clone(), Instant::now() + each).await;
                        // Auth0's budget had no room in time: nothing was sent, the key was
                        // released; a batch has no caller waiting, so it tries again later.
                        match &result {
                            Err(RotationError::Issuer(e))
                                if e.kind() == IssuerErrorKind::RateLimited
                                    && attempts < RATE_LIMITED_ATTEMPTS =>
                            {
                                attempts += 1;
                                let wait = e.retry_after().unwrap_or(Duration::from_secs(1));
                                tokio::time::sleep(wait).await;
                            }
                            _ => return (client_id, result),
                        }
                    }
                });
            }
            match running.next().await {
                Some(finished) => {
                    // A caller who hung up is not told; the rotation is done all the same.
                    let _ = done.send(finished).await;
                }
                None => return,
            }
        }
    }
}
