//! What callers ask for, validated: one rotation ([`RotateCommand`]) and a batch of them
//! ([`BatchCommand`], the clients named or picked by a [`Selector`]). A command that parses
//! is one the protocol may act on; nothing here touches Auth0 or Vault.

use std::{collections::BTreeMap, time::Duration};

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use serde_json::Value;
use uuid::Uuid;

use super::{
    client::Client,
    ids::{CLIENT_ID_MAX, ClientId, IDEMPOTENCY_KEY_MAX, IdempotencyKey, Reason, ValidationError},
    records::Strategy,
};
use crate::audit::Origin;

/// The most clients one batch names or selects.
pub const BATCH_MAX: usize = 1000;
/// The most rotations of one batch at once, and how many when the request does not say.
const MOST_AT_ONCE: usize = 32;
const DEFAULT_AT_ONCE: usize = 4;
/// A batch's idempotency keys are its prefix and each client's id: the prefix may take what a
/// key has room for beside the longest client id.
const KEY_PREFIX_MAX: usize = IDEMPOTENCY_KEY_MAX - CLIENT_ID_MAX;

/// One validated RotateSecret request.
#[derive(Debug, Clone)]
pub struct RotateCommand {
    pub client_id: ClientId,
    pub reason: Option<Reason>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// Refuse to rotate unless Vault holds the secret Auth0 accepts now.
    pub require_in_sync: bool,
    pub strategy: Strategy,
    /// Staged only: how long the next secret is distributed before it is promoted; the
    /// service's default when `None`.
    pub distribute_for: Option<Duration>,
    /// Who asked, from where, under which trace (for the intent and the audit trail).
    pub origin: Origin,
    /// Rotate only while the client's last stored rotation is still the one seen: a scheduler
    /// that found the client due does not rotate it again once anyone else has.
    pub if_last: Option<LastSeen>,
}

/// The client's last stored rotation as someone saw it: its id, `None` when it had none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSeen(pub Option<Uuid>);

impl RotateCommand {
    pub fn parse(
        client_id: &str,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            client_id: ClientId::parse(client_id)?,
            reason: Reason::parse(reason)?,
            idempotency_key: IdempotencyKey::parse(idempotency_key)?,
            require_in_sync: false,
            strategy: Strategy::Immediate,
            distribute_for: None,
            origin: Origin::default(),
            if_last: None,
        })
    }
}

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

/// Which clients a batch rotates.
#[derive(Debug, Clone)]
pub enum BatchClients {
    Named(Vec<ClientId>),
    /// Those of the tenant's rotatable clients the selector picks.
    Selected(Selector),
}

/// One validated RotateSecrets request: each client's rotation is the RotateSecret this makes
/// for it ([`BatchCommand::command`]).
#[derive(Debug, Clone)]
pub struct BatchCommand {
    pub clients: BatchClients,
    pub reason: Option<Reason>,
    pub strategy: Strategy,
    pub distribute_for: Option<Duration>,
    /// Each client's idempotency key is this followed by its id.
    key_prefix: Option<String>,
    /// Rotations at once.
    pub concurrency: usize,
}

impl BatchCommand {
    /// Checks a batch as RotateSecret checks each field, once for all: the clients named (at
    /// most [`BATCH_MAX`]) or a selector, never both; the reason; the key prefix; how many
    /// at once (0: the default).
    pub fn parse(
        client_ids: &[String],
        selector: Option<Selector>,
        reason: &str,
        key_prefix: &str,
        concurrency: i32,
    ) -> Result<Self, ValidationError> {
        let concurrency = match usize::try_from(concurrency) {
            Ok(0) => DEFAULT_AT_ONCE,
            Ok(n) if n <= MOST_AT_ONCE => n,
            _ => return Err(ValidationError::BatchConcurrency),
        };
        let key_prefix = match key_prefix {
            "" => None,
            p if p.len() <= KEY_PREFIX_MAX && IdempotencyKey::parse(p).is_ok() => {
                Some(p.to_owned())
            }
            _ => return Err(ValidationError::BatchKeyPrefix),
        };
        if client_ids.len() > BATCH_MAX {
            return Err(ValidationError::BatchTooLarge);
        }
        let clients = match (client_ids.is_empty(), selector) {
            (false, None) => BatchClients::Named(
                client_ids
                    .iter()
                    .enumerate()
                    .map(|(n, id)| {
                        ClientId::parse(id).map_err(|_| ValidationError::BatchClientId(n))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (true, Some(selector)) => BatchClients::Selected(selector),
            _ => return Err(ValidationError::BatchClients),
        };
        Ok(Self {
            clients,
            reason: Reason::parse(reason)?,
            strategy: Strategy::Immediate,
            distribute_for: None,
            key_prefix,
            concurrency,
        })
    }

    /// The rotation of `client_id` this batch asks for, on behalf of `origin`.
    pub fn command(&self, client_id: ClientId, origin: Origin) -> RotateCommand {
        let idempotency_key = self.key_prefix.as_ref().map(|prefix| {
            IdempotencyKey::parse(&format!("{prefix}{client_id}"))
                .ok()
                .flatten()
                .expect("a checked prefix and a client id make a key")
        });
        RotateCommand {
            client_id,
            reason: self.reason.clone(),
            idempotency_key,
            require_in_sync: false,
            strategy: self.strategy,
            distribute_for: self.distribute_for,
            origin,
            if_last: None,
        }
    }
}
