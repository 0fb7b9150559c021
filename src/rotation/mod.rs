//! The rotation protocol, generic over its ports ([`SecretIssuer`], [`SecretStore`],
//! [`Ledger`]). It owns its vocabulary (ids, records, the Client model, errors) and imports no
//! adapter, no transport and no configuration: the adapters implement the ports, the gRPC layer
//! translates, `app` composes.
//!
//! A rotation of client C:
//! 1. takes C's lease in the ledger and records the intent, in one check-and-set write (an open
//!    intent left by a dead rotation is healed first);
//! 2. calls Auth0's rotate-secret;
//! 3. writes the secret with check-and-set against the KV version observed under the lease;
//! 4. closes the intent and releases the lease in one check-and-set write.
//!
//! An intent that stays open (crash, lost answer, Vault failure) is healed by reading the live
//! secret back from Auth0 and storing it: never by rotating again.
//!
//! # Layout
//! - `ports`: the three traits the protocol is generic over;
//! - `error`: the ports' errors with their `kind()`, and [`RotationError`];
//! - `ids`: validated ids and request values; `records`: versions, commands and stored records;
//! - `client`: Auth0's Client object, tolerant of anything Auth0 sends;
//! - `service`: [`RotationService`] and one rotation from request to answer;
//! - `store`: storing a secret Auth0 now holds, and closing the rotation that got it;
//! - `lease`: the per-client lease (local lock, ledger lease, fence) and waiting for it;
//! - `idempotency`: binding idempotency keys to answers;
//! - `batch`: many rotations a bounded number at a time, and selecting clients (RotateSecrets);
//! - `drift`: whether Vault holds Auth0's secret, on demand and by the scanner's passes;
//! - `history`: each client's last rotations, kept in its ledger record;
//! - `inventory`: the tenant's clients with their last rotations (ListClients);
//! - `schedule`: schedule rules and when each client is due; `scheduler`: every replica's
//!   passes that rotate the due clients;
//! - `notify`: notifications for a webhook, recorded with the step they report;
//! - `staged`: staged rotations: stage the next secret in Vault, promote it at Auth0, cancel;
//! - `recovery`: healing an open intent from Auth0's live secret;
//! - `reconciler`: finding open intents: this replica's own at once, everyone's by one scanner;
//! - `tests`: in-memory fakes of the ports and the protocol's tests.

mod batch;
pub mod client;
mod drift;
mod error;
mod history;
mod idempotency;
mod ids;
mod inventory;
mod lease;
mod notify;
mod ports;
mod reconciler;
mod records;
mod recovery;
mod schedule;
mod scheduler;
mod service;
mod staged;
mod store;
#[cfg(test)]
mod tests;

pub use batch::{BATCH_MAX, Selector};
pub use client::Client;
pub use error::{
    IssuerError, IssuerErrorKind, Reached, RotationError, StoreError, StoreErrorKind, Transport,
};
pub use history::HistoryEntry;
pub use ids::{
    CLIENT_ID_MAX, ClientId, IDEMPOTENCY_KEY_MAX, IdempotencyKey, OwnedKey, PathTemplate,
    REASON_MAX, Reason, ValidationError,
};
pub use inventory::{ClientPage, Inventory, InventoryEntry, PageCursor, secret_based};
pub use notify::{Notification, NotificationKind};
pub use ports::{Ledger, SecretIssuer, SecretStore};
pub use records::{
    Acquired, ClientState, Drift, IdempotencyOutcome, IdempotencyRecord, Intent, IssuedSecret,
    KeySecrets, KvVersion, LastRotation, LastSeen, Lease, PreviousSecret, RotateCommand, Rotation,
    RotationMetadata, RotationStatus, Staged, Step, StoredSecret, Strategy, Validated, Versioned,
    millis,
};
pub use schedule::{Rule, Schedule, Window, WindowError};
pub use scheduler::{SCHEDULER_CALLER, ScheduledRotation};
pub use service::{RotationService, ScheduleSource, Settings};
pub use staged::Cancelled;
