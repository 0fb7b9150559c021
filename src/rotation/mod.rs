//! The rotation protocol, generic over its ports ([`SecretIssuer`], [`SecretStore`],
//! [`Ledger`]). It owns its vocabulary (ids, records, the Client model, errors, outcomes) and
//! imports no adapter, no transport and no configuration: the adapters implement the ports, the
//! gRPC layer translates, `app` composes.
//!
//! Every kind of rotation is a sequence of steps, and every step runs through one pipeline
//! (`pipeline.rs`): acquire the client's lease with the step's intent, act (Auth0, Vault), store
//! or refuse, close (history entry and notification in the closing write), finish (metric,
//! audit event). An intent that stays open (crash, lost answer, Vault failure) is healed by its
//! step (`recovery.rs`): a lost secret is read back from Auth0, never rotated again.
//!
//! # Reading order
//!
//! Bottom-up: each file imports only files above it (`scripts/layout.py` checks it in CI).
//!
//! - `ids`: validated names and values (ClientId, Reason, IdempotencyKey, PathTemplate);
//! - `client`: Auth0's Client object, tolerant of anything Auth0 sends;
//! - `keys`: key pairs, self-signed certificates and client assertions for the clients that
//!   authenticate with a key or a certificate (Private Key JWT, mTLS);
//! - `records`: values the protocol reads and writes (versions, intents, leases, secrets);
//! - `error`: the ports' errors with their `kind()`, and [`RotationError`];
//! - `notify`: what a notification for a webhook holds;
//! - `outcome`: [`Outcome`], how a step ended, and its one name;
//! - `history`: one entry of a client's history, written compactly;
//! - `state`: the per-client ledger record ([`ClientState`]) and what taking its lease yields;
//! - `command`: what callers ask for, validated (RotateCommand, BatchCommand, Selector);
//! - `ports`: the three traits the protocol is generic over;
//! - `schedule`: schedule rules and when each client is due;
//! - `locks`, `left_open`, `timer`, `outbox`, `seat`, `ages`: per-replica state, each with its
//!   own API (local locks and remembered records, intents this replica left open, staged
//!   rotations' due times, notifications to deliver, the scheduler lease as its beats hold it,
//!   the ages of the secrets on record);
//! - `settings`: the protocol's settings, fixed at start-up;
//! - `pipeline`: acquire, settle, close, refuse, store, finish: what every step runs through;
//! - `presence`: the replicas' heartbeats and the scanner and scheduler leases, in one shared
//!   record;
//! - `idempotency`: binding idempotency keys to answers;
//! - `overlap`: a key rotation's end: the switch closed with its overlap, its heal, and the old
//!   key retired;
//! - `previous`: a rollback's end: the previous secret in force again, and its heal;
//! - `recovery`: healing an open intent by its step; the heal of a lost answer;
//! - `steps`: RotateSecret, and the steps of each kind (`immediate`, `staged`, `keys`,
//!   `rollback`);
//! - `drift`: whether Vault holds Auth0's secret, and the book of what checks found;
//! - `background`: the one way to start work nobody waits for;
//! - `service`: [`RotationService`], the protocol's API, composing the pipeline;
//! - `inventory`: the tenant's clients with their last rotations (ListClients);
//! - `batch`: RotateSecrets' selection and its rotations, a bounded number at a time;
//! - `catalogue`: the tenant's client list as the scheduler keeps it in Vault;
//! - `scheduler`: the passes that rotate due clients;
//! - `reconciler`: healing intents left open, the scanner's passes, timed promotions;
//! - `tests`: in-memory fakes of the ports and the protocol's tests.

mod ages;
mod background;
pub mod batch;
mod catalogue;
pub mod client;
mod command;
mod drift;
mod error;
mod history;
mod idempotency;
mod ids;
pub mod inventory;
mod keys;
mod left_open;
mod locks;
mod notify;
mod outbox;
mod outcome;
mod overlap;
mod pipeline;
mod ports;
mod presence;
mod previous;
pub mod reconciler;
mod records;
mod recovery;
mod schedule;
pub mod scheduler;
mod seat;
mod service;
mod settings;
mod state;
mod steps;
#[cfg(test)]
mod tests;
mod timer;

pub use background::SCHEDULER_CALLER;
pub use client::Client;
pub use command::{BATCH_MAX, BatchClients, BatchCommand, LastSeen, RotateCommand, Selector};
pub use error::{
    IssuerError, IssuerErrorKind, Reached, RotationError, StoreError, StoreErrorKind, Transport,
};
pub use history::HistoryEntry;
pub use ids::{
    AuthMethod, CLIENT_ID_MAX, ClientId, CredentialId, IDEMPOTENCY_KEY_MAX, IdempotencyKey,
    OwnedKey, PathTemplate, REASON_MAX, Reason, Spelled, ValidationError,
};
pub use inventory::{AttachedCredential, Inventory, InventoryEntry, rotatable, secret_based};
pub use keys::{
    Certificate, KeyAlgorithm, KeyBits, KeyError, KeyPair, public_pem_kid, rsa_thumbprint,
};
pub use notify::{Notification, NotificationKind};
pub use outcome::{Class, Outcome};
pub use ports::BoxFuture;
pub use ports::{
    Attachments, ClientPage, CredentialInfo, CredentialIssuer, Ledger, NewCredential,
    OwnCredential, OwnCredentialStore, PageCursor, SecretIssuer, SecretStore,
};
pub use previous::RolledBackRotation;
pub use records::{
    Beat, Catalogue, Drift, IdempotencyOutcome, IdempotencyRecord, Intent, IssuedSecret, KeyEntry,
    KeySecrets, KvVersion, LastRotation, Lease, Overlap, Presence, PreviousSecret,
    RotatedCredential, Rotation, RotationMetadata, RotationStatus, Staged, Step, StoredKey,
    StoredSecret, Strategy, Validated, Versioned, millis,
};
pub use schedule::{Rule, Schedule, ScheduledRotation, Window, WindowError};
pub use service::{RotationService, ScheduleSource};
pub use settings::{KeySettings, Settings};
pub use state::{Acquired, ClientState};
pub use steps::Cancelled;
