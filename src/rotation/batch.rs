//! Batches (RotateSecrets): the clients a selector picks from the tenant's client list, and
//! many rotations run a bounded number at a time, each exactly as RotateSecret runs it (its own
//! lease, intent, idempotency key and audit), as background work, reported as each finishes.

use std::{sync::Arc, time::Duration};

use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::sync::mpsc;

use super::{
    background::Background,
    command::{BATCH_MAX, RotateCommand, Selector},
    error::RotationError,
    ids::{ClientId, ValidationError},
    inventory::rotatable_clients,
    ports::{Ledger, SecretIssuer, SecretStore},
    records::Rotation,
    service::RotationService,
};

/// The rotatable clients `selector` picks among those `visible` keeps (the ones the caller may
/// rotate: a selector never reveals the others), from every page of the tenant's client list;
/// more than [`BATCH_MAX`] are refused.
pub async fn select<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
    selector: &Selector,
    visible: impl Fn(&ClientId) -> bool,
) -> Result<Vec<ClientId>, RotationError> {
    rotatable_clients(service, BATCH_MAX, |id, client| {
        (visible(&id) && selector.matches(&id, client)).then_some(id)
    })
    .await?
    .ok_or_else(|| ValidationError::BatchTooLarge.into())
}

/// Rotates every command, `concurrency` at a time, each with `each` to finish once started (as
/// background work: tried again while Auth0's budget has no room), and reports each as it
/// finishes. Stops starting new rotations once `done` is closed (the caller hung up); those
/// started finish, as RotateSecret's do.
pub async fn rotate_many<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &Arc<RotationService<I, S, L>>,
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
            running.push(async move {
                let background = Background {
                    origin: command.origin.clone(),
                    deadline: each,
                };
                let result = background
                    .run(|origin, deadline| {
                        let command = RotateCommand {
                            origin,
                            ..command.clone()
                        };
                        service.rotate(command, deadline)
                    })
                    .await;
                (command.client_id, result)
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
