//! Prometheus metrics (OpenMetrics text), one registry for the process. Parts record through
//! the functions here; `app` serves [`encode`] on the admin listener. Labels are low
//! cardinality: outcomes, strategies, RPC and upstream operation names, HTTP statuses; a client
//! id only with `ROTATOR_METRICS_PER_CLIENT=true`. Never a secret.

use std::{
    sync::{
        LazyLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode as encode_text},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

mod ages;

pub use ages::{SecretAgeSource, SecretAges, secret_ages_from};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rotation {
    outcome: String,
    class: &'static str,
    strategy: String,
    /// `caller` (a request), `scheduler` or `promotion-timer`.
    actor: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Step {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientRotation {
    client_id: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Upstream {
    upstream: String,
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct By {
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
    commit: &'static str,
}

/// What refused or delayed a request: the `by` label of `secret_rotator_rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitedBy {
    /// A caller's rotations.
    Caller,
    /// A caller's GetRotationStatus.
    Status,
    /// Refusals throttled by address.
    Address,
    /// Auth0 answered 429.
    Auth0,
    /// The tenant's budget had no room before the caller's deadline.
    Auth0Budget,
}

impl RateLimitedBy {
    const ALL: [Self; 5] = [
        Self::Caller,
        Self::Status,
        Self::Address,
        Self::Auth0,
        Self::Auth0Budget,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Status => "status",
            Self::Address => "address",
            Self::Auth0 => "auth0",
            Self::Auth0Budget => "auth0_budget",
        }
    }
}

/// The process's own figures, read at each scrape (`metrics-process`): the `process_*` series
/// every Prometheus client library exports.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = metrics_process::collector::collect();
        if let Some(seconds) = now.cpu_seconds_total {
            let metric = ConstCounter::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                metric.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                now.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                now.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                now.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (0: unlimited)",
                now.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                now.threads,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                now.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value.and_then(|v| i64::try_from(v).ok()) else {
                continue;
            };
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Scheduled {
    rule: String,
    dry_run: String,
}

struct Metrics {
    registry: Registry,
    rotations: Family<Rotation, Counter>,
    steps: Family<Step, Counter>,
    client_rotations: Family<ClientRotation, Counter>,
    rpc_duration: Family<Rpc, Histogram>,
    upstream_duration: Family<Upstream, Histogram>,
    open_intents: Gauge,
    needs_resync: Gauge,
    drifted_clients: Gauge,
    token_refreshes: Counter,
    rate_limited: Family<By, Counter>,
    reconciler_runs: Family<Result_, Counter>,
    ready: Gauge,
    schedule_due: Family<Scheduled, Gauge>,
    vault_token_expiry: Gauge<f64, AtomicU64>,
}

/// When the service's Vault token expires, as seconds since the epoch (f64 bits): NaN while
/// unknown, +Inf for a token that does not expire. The gauge's time left is computed from it
/// at each scrape.
static VAULT_TOKEN_EXPIRES: AtomicU64 = AtomicU64::new(0x7ff8_0000_0000_0000);

/// Latencies from 1 ms to about 33 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

static PER_CLIENT: AtomicBool = AtomicBool::new(false);

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let rotations = Family::<Rotation, Counter>::default();
    let steps = Family::<Step, Counter>::default();
    let client_rotations = Family::<ClientRotation, Counter>::default();
    let rpc_duration = Family::<Rpc, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
    let upstream_duration =
        Family::<Upstream, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
    let open_intents = Gauge::default();
    let needs_resync = Gauge::default();
    let drifted_clients = Gauge::default();
    let token_refreshes = Counter::default();
    let rate_limited = Family::<By, Counter>::default();
    let reconciler_runs = Family::<Result_, Counter>::default();
    let ready = Gauge::default();
    let schedule_due = Family::<Scheduled, Gauge>::default();
    let vault_token_expiry = Gauge::<f64, AtomicU64>::default();
    let build = Family::<Build, Gauge>::default();
    build
        .get_or_create(&Build {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("GIT_COMMIT"),
        })
        .set(1);
    registry.register(
        "secret_rotator_build_info",
        "1, labelled with the running build's version and git commit",
        build,
    );
    registry.register_collector(Box::new(Process));
    registry.register_collector(Box::new(ages::Ages));
    for by in RateLimitedBy::ALL {
        let _ = rate_limited.get_or_create(&By { by: by.as_str() });
    }
    registry.register(
        "secret_rotator_vault_token_expiry_seconds",
        "Time left before the service's Vault token expires (+Inf: it does not; absent until known), \
         whatever its source: VAULT_TOKEN (renewed at two thirds of its TTL), a token file, a login",
        vault_token_expiry.clone(),
    );
    registry.register(
        "secret_rotator_rotations",
        "Rotation steps by outcome (ok, staged, promoted, cancelled, replayed, recovered, or the refusal's or failure's name), its class, strategy and actor (caller, scheduler, promotion-timer)",
        rotations.clone(),
    );
    registry.register(
        "secret_rotator_rotation_steps",
        "Rotation steps by class: ok, refused (the caller's request cannot be done) or failed (the service or an upstream failed); what alerts page on",
        steps.clone(),
    );
    registry.register(
        "secret_rotator_client_rotations",
        "Rotation steps by client (only with ROTATOR_METRICS_PER_CLIENT=true)",
        client_rotations.clone(),
    );
    registry.register(
        "secret_rotator_rpc_duration_seconds",
        "Time to answer each RPC, from the server's side",
        rpc_duration.clone(),
    );
    registry.register(
        "secret_rotator_upstream_duration_seconds",
        "Time of each request to Auth0 or Vault, by operation and HTTP status (error: no answer)",
        upstream_duration.clone(),
    );
    registry.register(
        "secret_rotator_open_intents",
        "Rotations this replica has open: in progress, or left open to be healed",
        open_intents.clone(),
    );
    registry.register(
        "secret_rotator_needs_resync",
        "Rotations left open (by this replica, or by a replica that died and its scan found) that it could not heal yet (NEEDS RESYNC): Auth0 may hold a secret Vault lacks",
        needs_resync.clone(),
    );
    registry.register(
        "secret_rotator_drifted_clients",
        "Clients whose Vault secret the last drift scan found different from Auth0's (ROTATOR_DRIFT_SCAN_INTERVAL)",
        drifted_clients.clone(),
    );
    registry.register(
        "secret_rotator_token_refreshes",
        "Management API tokens obtained",
        token_refreshes.clone(),
    );
    registry.register(
        "secret_rotator_rate_limited",
        "Requests refused or delayed by a rate limit: caller, status, address (refusals throttled) or auth0",
        rate_limited.clone(),
    );
    registry.register(
        "secret_rotator_reconciler_runs",
        "Reconciler passes by result (clean, healed, failed)",
        reconciler_runs.clone(),
    );
    registry.register(
        "secret_rotator_ready",
        "1 while the readiness checks pass (health SERVING), else 0",
        ready.clone(),
    );
    registry.register(
        "secret_rotator_schedule_due_clients",
        "Clients each schedule rule found due at this replica's last pass (dry_run=\"true\": what a dry-run rule would rotate)",
        schedule_due.clone(),
    );
    Metrics {
        schedule_due,
        vault_token_expiry,
        registry,
        rotations,
        steps,
        client_rotations,
        rpc_duration,
        upstream_duration,
        open_intents,
        needs_resync,
        drifted_clients,
        token_refreshes,
        rate_limited,
        reconciler_runs,
        ready,
    }
});

/// Adds the per-client family's samples from now on (`ROTATOR_METRICS_PER_CLIENT`).
pub fn per_client(enabled: bool) {
    PER_CLIENT.store(enabled, Ordering::Relaxed);
}

/// The metrics in the OpenMetrics text format.
pub fn encode() -> String {
    let expires = f64::from_bits(VAULT_TOKEN_EXPIRES.load(Ordering::Relaxed));
    if !expires.is_nan() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        METRICS.vault_token_expiry.set((expires - now).max(0.0));
    }
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode_text(&mut text, &METRICS.registry);
    text
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every class of rotation step, counted from 0 from the first scrape on: an alert's
/// `increase()` sees the first failure.
pub fn rotation_classes(classes: &[&'static str]) {
    for &class in classes {
        let _ = METRICS.steps.get_or_create(&Step { class });
    }
}

/// A step ended as `outcome` (of `class`), asked for by `actor` (`caller`, or the service's
/// own: `scheduler`, `promotion-timer`).
pub fn rotation(
    outcome: &str,
    class: &'static str,
    strategy: &str,
    actor: &'static str,
    client_id: &str,
) {
    let m = &*METRICS;
    m.steps.get_or_create(&Step { class }).inc();
    m.rotations
        .get_or_create(&Rotation {
            outcome: outcome.to_owned(),
            class,
            strategy: strategy.to_owned(),
            actor,
        })
        .inc();
    if PER_CLIENT.load(Ordering::Relaxed) {
        m.client_rotations
            .get_or_create(&ClientRotation {
                client_id: client_id.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

pub fn rpc(rpc: &str, took: Duration) {
    METRICS
        .rpc_duration
        .get_or_create(&Rpc {
            rpc: rpc.to_owned(),
        })
        .observe(took.as_secs_f64());
}

/// One request to `upstream` ("auth0", "vault"); `status` is the HTTP status, `None` when no
/// answer came.
pub fn upstream(upstream: &str, operation: &str, status: Option<u16>, took: Duration) {
    METRICS
        .upstream_duration
        .get_or_create(&Upstream {
            upstream: upstream.to_owned(),
            operation: operation.to_owned(),
            status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
        })
        .observe(took.as_secs_f64());
}

pub fn open_intents(delta: i64) {
    METRICS.open_intents.inc_by(delta);
}

pub fn needs_resync(count: usize) {
    METRICS
        .needs_resync
        .set(i64::try_from(count).unwrap_or(i64::MAX));
}

pub fn drifted_clients(count: usize) {
    METRICS
        .drifted_clients
        .set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// The due clients each rule found at a scheduler pass: `(rule, dry_run, count)`; rules not
/// named are gone from the schedule.
pub fn schedule_due(counts: &[(String, bool, usize)]) {
    let family = &METRICS.schedule_due;
    family.clear();
    for (rule, dry_run, count) in counts {
        let labels = Scheduled {
            rule: rule.clone(),
            dry_run: dry_run.to_string(),
        };
        family
            .get_or_create(&labels)
            .set(i64::try_from(*count).unwrap_or(i64::MAX));
    }
}

/// When the Vault token in use expires; `None` when it does not.
pub fn vault_token_expires(at: Option<SystemTime>) {
    let secs = match at {
        None => f64::INFINITY,
        Some(at) => at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    };
    VAULT_TOKEN_EXPIRES.store(secs.to_bits(), Ordering::Relaxed);
}

pub fn token_refreshed() {
    METRICS.token_refreshes.inc();
}

pub fn rate_limited(by: RateLimitedBy) {
    METRICS
        .rate_limited
        .get_or_create(&By { by: by.as_str() })
        .inc();
}

pub fn reconciler_run(result: &str) {
    METRICS
        .reconciler_runs
        .get_or_create(&Result_ {
            result: result.to_owned(),
        })
        .inc();
}

pub fn ready(ready: bool) {
    METRICS.ready.set(i64::from(ready));
}

/// Whether the readiness checks pass now (`/readyz`).
pub fn is_ready() -> bool {
    METRICS.ready.get() == 1
}
