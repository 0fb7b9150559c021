//! Builds the front door from its settings: the gate callers pass, the listener's TLS, and the
//! watcher that keeps policy, certificates and keys current.

use std::{num::NonZeroU32, path::PathBuf, sync::Arc, time::Duration};

use tracing::info;

use super::{
    Gate, Mode,
    jwt::{JwksError, JwksSource, JwtVerifier},
    policy::{Policy, PolicyError},
    reload::{Refresh, Reloadable, Trigger, watch},
    tls::{ListenerTls, TlsError, TlsFiles},
};

/// How callers are authenticated, authorized and limited. Built and validated by `config`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None`: development mode, plaintext without authentication (loopback only).
    pub tls: Option<TlsSettings>,
    pub limits: Limits,
    /// Refusals of one kind are audited once per this window, then as one event with a count.
    pub refusal_audit_window: Duration,
    /// How often the watched files are checked for changes.
    pub reload_interval: Duration,
}

/// The rate limits of the front door.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rotations (and promotions and cancellations) per caller.
    pub rotations: Rate,
    /// GetRotationStatus calls per caller.
    pub status: Rate,
    /// Refused attempts (unauthenticated, denied) per peer address.
    pub refusals: Rate,
}

/// A sustained rate per minute and a burst.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub files: TlsFiles,
    /// Bearer-token callers, when a JWKS is configured.
    pub jwt: Option<JwtSettings>,
    pub policy: PathBuf,
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub jwks: JwksSource,
    pub issuer: String,
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// How often a JWKS URL is fetched again.
    pub refresh: Duration,
}

/// The HTTP client that fetches a JWKS URL: bounded, so that a JWKS host that hangs cannot
/// hold the reload watcher.
fn jwks_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("secret-rotator/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("authorization policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("JWKS: {0}")]
    Jwks(#[from] JwksError),
}

/// The gate callers pass, and what keeps it current.
pub struct Security {
    pub gate: Arc<Gate>,
    /// The listener's TLS; `None` in development mode.
    pub tls: Option<Arc<ListenerTls>>,
    watched: Vec<Arc<dyn Refresh>>,
    reload_interval: Duration,
}

impl Security {
    /// Loads policy, TLS files and JWKS once; fails when any cannot be loaded.
    pub async fn build(settings: &Settings) -> Result<Self, SecurityError> {
        let (mode, tls, watched) = match &settings.tls {
            None => (Mode::Insecure, None, Vec::new()),
            Some(secure) => {
                let tls = Arc::new(secure.files.clone().reloadable().await?);
                let policy_file = secure.policy.clone();
                let policy = Arc::new(
                    Reloadable::new(
                        "authorization policy",
                        Trigger::Files(vec![policy_file.clone()]),
                        move || {
                            let loaded = Policy::load(&policy_file);
                            async move { loaded }
                        },
                    )
                    .await?,
                );
                info!(
                    rules = policy.get().rule_count(),
                    "authorization policy loaded"
                );
                let jwt = match &secure.jwt {
                    None => None,
                    Some(jwt) => Some(Arc::new(
                        JwtVerifier::new(
                            jwt.jwks.clone(),
                            jwt.issuer.clone(),
                            jwt.audience.clone(),
                            jwt.leeway,
                            jwt.refresh,
                            jwks_client(),
                        )
                        .await?,
                    )),
                };
                let mut watched: Vec<Arc<dyn Refresh>> = vec![
                    Arc::clone(&policy) as Arc<dyn Refresh>,
                    Arc::clone(&tls) as Arc<dyn Refresh>,
                ];
                watched.extend(jwt.clone().map(|j| j as Arc<dyn Refresh>));
                let mode = Mode::Secure { jwt, policy };
                (mode, Some(tls), watched)
            }
        };
        let gate = Gate::new(mode, settings.limits);
        Ok(Self {
            gate: Arc::new(gate),
            tls,
            watched,
            reload_interval: settings.reload_interval,
        })
    }

    /// Reloads the policy, TLS files and JWKS when they change (a JWKS URL when it is due), and
    /// all of them on SIGHUP, with `also` (the schedule). Runs for ever; returns at once when
    /// there is nothing to watch.
    pub fn watch(&self, also: Vec<Arc<dyn Refresh>>) -> impl Future<Output = ()> + Send + 'static {
        let mut items = self.watched.clone();
        items.extend(also);
        watch(items, self.reload_interval)
    }
}
