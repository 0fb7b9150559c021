//! Settings of the rotation protocol: leases, recovery, idempotency.

use std::{num::NonZeroU32, time::Duration};

use clap::Args;

use super::{ConfigError, duration, nonzero_duration, spelled};
use crate::rotation::{ClientId, KeyBits, KeySettings, PathTemplate, Settings, Spelled};

#[derive(Debug, Args)]
pub struct RotationArgs {
    /// How long a client's lease lasts; longer than ROTATOR_MAX_DEADLINE plus AUTH0_TIMEOUT.
    #[arg(long, env = "ROTATOR_LEASE_TTL", default_value = "90s", value_parser = duration)]
    pub lease_ttl: Duration,

    /// How long the reconciler rests between passes over the client records (one replica at a
    /// time scans), and the longest a replica waits before retrying a rotation it left open.
    #[arg(long, env = "ROTATOR_RECONCILE_INTERVAL", default_value = "30s", value_parser = duration)]
    pub reconcile_interval: Duration,

    /// Client records the scanning replica reads per second during a pass.
    #[arg(long, env = "ROTATOR_RECONCILE_RATE", default_value_t = 50)]
    pub reconcile_rate: u32,

    /// How long an idempotency key replays its first answer.
    #[arg(long, env = "ROTATOR_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = duration)]
    pub idempotency_window: Duration,

    /// Rotate even when the Auth0 token lacks read:client_keys, so that a lost answer could
    /// not be recovered.
    #[arg(
        long,
        env = "ROTATOR_ALLOW_UNRECOVERABLE_ROTATIONS",
        default_value_t = false,
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub allow_unrecoverable_rotations: bool,

    /// Names this replica in leases [default: host name, process id and a random suffix].
    #[arg(long, env = "ROTATOR_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// Rotations running at once in this process; more wait until their deadline.
    #[arg(long, env = "ROTATOR_MAX_CONCURRENT_ROTATIONS", default_value_t = 16)]
    pub max_concurrent_rotations: usize,

    /// How long the key keeps the secret a rotation replaced, as previous_client_secret, for
    /// consumers that have not switched yet (Auth0's propagation takes up to 30 s). 0s keeps
    /// none and saves an immediate rotation one Vault read.
    #[arg(long, env = "ROTATOR_PREVIOUS_SECRET_TTL", default_value = "10m", value_parser = duration)]
    pub previous_secret_ttl: Duration,

    /// How long a staged rotation's next secret is distributed before it is promoted, when the
    /// request does not say (distribute_for).
    #[arg(long, env = "ROTATOR_STAGED_DISTRIBUTE_FOR", default_value = "5m", value_parser = duration)]
    pub staged_distribute_for: Duration,

    /// The longest distribute_for a request may ask for.
    #[arg(long, env = "ROTATOR_STAGED_MAX_DISTRIBUTE_FOR", default_value = "24h", value_parser = spelled)]
    pub staged_max_distribute_for: Spelled,

    /// Rotations each client's ledger record keeps for ListRotations (1 to 100).
    #[arg(long, env = "ROTATOR_HISTORY_KEPT", default_value_t = 20)]
    pub history_kept: usize,

    /// Compare every client Vault holds with Auth0 this often, on the replica that scans
    /// (rounded up to ROTATOR_RECONCILE_INTERVAL) [default: never].
    #[arg(long, env = "ROTATOR_DRIFT_SCAN_INTERVAL", value_parser = duration)]
    pub drift_scan_interval: Option<Duration>,

    /// How often the scanning replica reads every client record although no replica died or
    /// started (a safety sweep; at rest it reads only the replicas' shared record).
    #[arg(long, env = "ROTATOR_FULL_SCAN_INTERVAL", default_value = "1h", value_parser = duration)]
    pub full_scan_interval: Duration,

    /// A secret whose last rotation is older counts as overdue in
    /// secret_rotator_clients_overdue (as does one past its schedule rule's due time)
    /// [default: off].
    #[arg(long, env = "ROTATOR_MAX_SECRET_AGE", value_parser = duration)]
    pub max_secret_age: Option<Duration>,

    /// RSA key size of the keys key rotations make: 2048, 3072 or 4096.
    #[arg(long, env = "ROTATOR_KEY_BITS", default_value_t = 2048)]
    pub key_bits: u32,

    /// The expires_at a key rotation gives the credential it registers, from its registration
    /// [default: none, the credential does not expire].
    #[arg(long, env = "ROTATOR_KEY_LIFETIME", value_parser = duration)]
    pub key_lifetime: Option<Duration>,

    /// How long the self-signed certificate a key rotation of an mTLS client makes is valid.
    #[arg(long, env = "ROTATOR_CERTIFICATE_LIFETIME", default_value = "365d", value_parser = duration)]
    pub certificate_lifetime: Duration,
}

impl RotationArgs {
    /// `longest_call` is the longest a rotation can hold its lease: the maximum deadline plus
    /// one Auth0 request.
    pub fn into_settings(
        self,
        path: PathTemplate,
        max_wait: Duration,
        longest_call: Duration,
        own_client: Option<ClientId>,
        own_credential_path: Option<String>,
    ) -> Result<Settings, ConfigError> {
        if self.max_concurrent_rotations == 0 {
            return Err(ConfigError::Zero("ROTATOR_MAX_CONCURRENT_ROTATIONS"));
        }
        for (value, name) in [
            (self.lease_ttl, "ROTATOR_LEASE_TTL"),
            (self.reconcile_interval, "ROTATOR_RECONCILE_INTERVAL"),
            (self.idempotency_window, "ROTATOR_IDEMPOTENCY_WINDOW"),
        ] {
            nonzero_duration(value, name)?;
        }
        if self.staged_distribute_for < Duration::from_secs(1)
            || self.staged_distribute_for > self.staged_max_distribute_for.get()
        {
            return Err(ConfigError::DistributeFor);
        }
        if self.lease_ttl <= longest_call {
            return Err(ConfigError::LeaseTooShort);
        }
        // Every rotation writes the record whole: a long history would cost every write.
        if !(1..=100).contains(&self.history_kept) {
            return Err(ConfigError::HistoryKept);
        }
        let reconcile_rate = NonZeroU32::new(self.reconcile_rate)
            .ok_or(ConfigError::Zero("ROTATOR_RECONCILE_RATE"))?;
        let bits = KeyBits::parse(self.key_bits).ok_or(ConfigError::KeyBits)?;
        nonzero_duration(self.certificate_lifetime, "ROTATOR_CERTIFICATE_LIFETIME")?;
        if let Some(lifetime) = self.key_lifetime {
            nonzero_duration(lifetime, "ROTATOR_KEY_LIFETIME")?;
        }
        Ok(Settings {
            own_client,
            own_credential_path,
            path,
            replica: self
                .replica_id
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(default_replica_id),
            lease_ttl: self.lease_ttl,
            max_wait,
            idempotency_window: self.idempotency_window,
            allow_unrecoverable: self.allow_unrecoverable_rotations,
            max_concurrent: self.max_concurrent_rotations,
            reconcile_interval: self.reconcile_interval,
            reconcile_rate,
            previous_secret_ttl: self.previous_secret_ttl,
            distribute_for: self.staged_distribute_for,
            max_distribute_for: self.staged_max_distribute_for.clone(),
            history_kept: self.history_kept,
            drift_scan_interval: self.drift_scan_interval.filter(|d| !d.is_zero()),
            full_scan_interval: self.full_scan_interval,
            max_secret_age: self.max_secret_age.filter(|d| !d.is_zero()),
            keys: KeySettings {
                bits,
                credential_lifetime: self.key_lifetime,
                certificate_lifetime: self.certificate_lifetime,
            },
        })
    }
}

fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}
