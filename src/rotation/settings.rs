//! [`Settings`]: the protocol's settings, fixed at start-up (`config` builds them).

use std::{num::NonZeroU32, time::Duration};

use super::{
    ids::{ClientId, PathTemplate, Spelled},
    keys::KeyBits,
};

/// How key rotations make keys and certificates.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// RSA key size (`ROTATOR_KEY_BITS`).
    pub bits: KeyBits,
    /// The `expires_at` a new credential gets, from its registration (`ROTATOR_KEY_LIFETIME`);
    /// `None`: it does not expire.
    pub credential_lifetime: Option<Duration>,
    /// How long a self-signed mTLS certificate is valid (`ROTATOR_CERTIFICATE_LIFETIME`).
    pub certificate_lifetime: Duration,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            bits: KeyBits::B2048,
            credential_lifetime: None,
            certificate_lifetime: Duration::from_secs(365 * 86_400),
        }
    }
}

/// Settings of the protocol, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: PathTemplate,
    /// Names this replica in leases.
    pub replica: String,
    /// How long a lease lasts; longer than any one rotation can take.
    pub lease_ttl: Duration,
    /// The longest one attempt waits for Auth0's budget (`ROTATOR_MAX_DEADLINE`): the lease
    /// outlasts it by an Auth0 call, so background work that waits longer would let its
    /// lease lapse under it and race its own heal.
    pub max_wait: Duration,
    /// How long an idempotency key replays its answer.
    pub idempotency_window: Duration,
    /// Rotate even when recovery is known to be impossible (no `read:client_keys`).
    pub allow_unrecoverable: bool,
    /// Rotations running at once in this process; more wait until their deadline.
    pub max_concurrent: usize,
    /// How long the reconciler rests between passes, and the most it waits before retrying
    /// an intent this replica left open.
    pub reconcile_interval: Duration,
    /// Ledger records the reconciler reads per second during a pass.
    pub reconcile_rate: NonZeroU32,
    /// How long the key keeps the secret a rotation replaced (`previous_client_secret`).
    pub previous_secret_ttl: Duration,
    /// How long a staged secret is distributed before promotion, unless the request says.
    pub distribute_for: Duration,
    /// The longest a request may ask for, as configured.
    pub max_distribute_for: Spelled,
    /// The service's own Auth0 application, if it has one (client credentials): rotated only
    /// when its credential is kept in Vault (`own_credential_path`), else never rotated,
    /// listed as not rotatable, never selected.
    pub own_client: Option<ClientId>,
    /// Where the service's own credential is kept in Vault (`AUTH0_CREDENTIALS_VAULT_PATH`):
    /// the own client's key, which a self-rotation writes and every replica reads.
    pub own_credential_path: Option<String>,
    /// How many rotations each client's record keeps for ListRotations.
    pub history_kept: usize,
    /// How often the scanning replica compares every client Vault holds with Auth0; `None`:
    /// never (only GetRotationStatus with check_drift does).
    pub drift_scan_interval: Option<Duration>,
    /// How often the scanning replica reads every client record even when no replica died
    /// (the safety sweep).
    pub full_scan_interval: Duration,
    /// Clients whose last rotation is older are overdue (`secret_rotator_clients_overdue`),
    /// as well as those past their schedule rule's due time; `None`: only the latter.
    pub max_secret_age: Option<Duration>,
    pub keys: KeySettings,
}
