//! How old the secrets are: read at each scrape from the replica's age book
//! (`rotation/ages.rs`), which this module does not name (metrics depend on nothing), through
//! [`SecretAgeSource`]. Only the scanning replica's figures count; the others report 0, so
//! that `max()` across replicas is the answer.

use std::{
    sync::{Arc, Mutex, Weak},
    time::{Duration, SystemTime},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

/// The ages a scrape reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretAges {
    /// The oldest last rotation's age; `None` when no rotation is on record or this replica's
    /// figures do not count.
    pub oldest: Option<Duration>,
    /// Clients past their maximum age.
    pub overdue: usize,
    /// Each client's age, by client id (asked for only with `ROTATOR_METRICS_PER_CLIENT`).
    pub by_client: Vec<(String, Duration)>,
}

/// What knows the ages (the rotation layer's age book).
pub trait SecretAgeSource: Send + Sync {
    fn secret_ages(&self, now: SystemTime, by_client: bool) -> SecretAges;
}

static SOURCE: Mutex<Option<Weak<dyn SecretAgeSource>>> = Mutex::new(None);

/// Scrapes read the ages from `source` from now on (while it lives).
pub fn secret_ages_from(source: &Arc<dyn SecretAgeSource>) {
    *SOURCE.lock().expect("age source poisoned") = Some(Arc::downgrade(source));
}

/// The `secret_rotator_*_age_*` and `secret_rotator_clients_overdue` series, present from the
/// first scrape.
#[derive(Debug)]
pub(super) struct Ages;

impl Collector for Ages {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per_client = super::PER_CLIENT.load(std::sync::atomic::Ordering::Relaxed);
        let source = SOURCE
            .lock()
            .expect("age source poisoned")
            .as_ref()
            .and_then(Weak::upgrade);
        let ages = source
            .map(|s| s.secret_ages(SystemTime::now(), per_client))
            .unwrap_or_default();
        let oldest = ConstGauge::new(ages.oldest.unwrap_or_default().as_secs_f64());
        oldest.encode(encoder.encode_descriptor(
            "secret_rotator_oldest_secret_age_seconds",
            "Age of the oldest secret or key the service stored, from the ledger (the scanning replica's; 0 on the others)",
            None,
            MetricType::Gauge,
        )?)?;
        let overdue = ConstGauge::new(i64::try_from(ages.overdue).unwrap_or(i64::MAX));
        overdue.encode(encoder.encode_descriptor(
            "secret_rotator_clients_overdue",
            "Clients whose last rotation is older than ROTATOR_MAX_SECRET_AGE or past their schedule rule's due time (the scanning replica's; 0 on the others)",
            None,
            MetricType::Gauge,
        )?)?;
        if per_client {
            let mut family = encoder.encode_descriptor(
                "secret_rotator_secret_age_seconds",
                "Age of each client's last rotation (only with ROTATOR_METRICS_PER_CLIENT=true; the scanning replica's)",
                None,
                MetricType::Gauge,
            )?;
            for (client_id, age) in &ages.by_client {
                let labels = [("client_id", client_id.as_str())];
                ConstGauge::new(age.as_secs_f64()).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
