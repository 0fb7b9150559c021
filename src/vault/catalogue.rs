//! The scheduler's client catalogue in the ledger, in parts: one record of 10,000 clients would
//! pass Vault's entry limit (integrated storage refuses entries over 1 MiB by default). Each
//! part's clients are one JSON string: OpenBao refuses a request body of more than a thousand
//! or so JSON strings ("refused JSON input due to high complexity"), which 500 clients as
//! objects pass. A head record names the parts' generation, so a reader never mixes two
//! listings: a part of another generation reads as no catalogue, and the scheduler lists again.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::kv::Kv;
use crate::rotation::{Catalogue, Client, StoreError};

/// Clients per part: about 150 KB of JSON, far below the entry limit and Vault's longest JSON
/// string (1 MiB by default).
const PART: usize = 500;

#[derive(Serialize, Deserialize)]
struct Head {
    listed_at: SystemTime,
    parts: usize,
    generation: Uuid,
}

#[derive(Serialize, Deserialize)]
struct Part {
    generation: Uuid,
    /// `Vec<Client>` as JSON text.
    clients: String,
}

fn head_path(prefix: &str) -> String {
    format!("{prefix}/catalogue")
}

fn part_path(prefix: &str, n: usize) -> String {
    format!("{prefix}/catalogue-parts/{n}")
}

/// The catalogue, if it was listed after `listed_after`: an older one costs its head only.
pub(super) async fn read(
    kv: &Kv,
    prefix: &str,
    listed_after: SystemTime,
) -> Result<Option<Catalogue>, StoreError> {
    let Some(head) = kv.read::<Head>(&head_path(prefix)).await? else {
        return Ok(None);
    };
    let head = head.value;
    if head.listed_at <= listed_after {
        return Ok(None);
    }
    let mut clients = Vec::new();
    for n in 0..head.parts {
        // A part of another generation: no catalogue. One an older release wrote another way
        // is an error the scheduler logs before it lists the tenant (and writes it anew).
        let part = match kv.read::<Part>(&part_path(prefix, n)).await? {
            Some(part) if part.value.generation == head.generation => part.value,
            _ => return Ok(None),
        };
        match serde_json::from_str::<Vec<Client>>(&part.clients) {
            Ok(part) => clients.extend(part),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(Catalogue {
        listed_at: head.listed_at,
        clients,
    }))
}

/// The parts first, then the head that names them: a reader sees the old catalogue or the new
/// one, never half of each.
pub(super) async fn write(kv: &Kv, prefix: &str, catalogue: &Catalogue) -> Result<(), StoreError> {
    let generation = Uuid::new_v4();
    let parts: Vec<&[Client]> = catalogue.clients.chunks(PART).collect();
    for (n, clients) in parts.iter().enumerate() {
        let path = part_path(prefix, n);
        let part = Part {
            generation,
            clients: serde_json::to_string(clients).map_err(|e| {
                StoreError::Unexpected(format!("the client catalogue cannot be written: {e}"))
            })?,
        };
        let cas = kv.current_version(&path).await?;
        kv.write(&path, &part, cas, "a part of the client catalogue")
            .await?;
    }
    let path = head_path(prefix);
    let head = Head {
        listed_at: catalogue.listed_at,
        parts: parts.len(),
        generation,
    };
    let cas = kv.current_version(&path).await?;
    kv.write(&path, &head, cas, "the client catalogue").await?;
    Ok(())
}
