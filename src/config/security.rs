//! Caller security: TLS, caller identities, the policy, the per-caller rate limit.

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::Args;
use reqwest::Url;

use super::{ConfigError, check_url, duration, nonzero_duration, readable};
use crate::auth::{JwksSource, JwtSettings, Limits, Rate, Settings, TlsFiles, TlsSettings};

#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// Development mode: plaintext, no authentication, loopback listen address only.
    #[arg(
        long,
        env = "ROTATOR_INSECURE",
        default_value_t = false,
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub insecure: bool,

    /// PEM certificate chain of the gRPC listener.
    #[arg(long, env = "ROTATOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the gRPC listener.
    #[arg(long, env = "ROTATOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM bundle of the CAs whose client certificates identify callers (mutual TLS).
    #[arg(long, env = "ROTATOR_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// JWKS file for bearer-token callers.
    #[arg(long, env = "ROTATOR_JWKS_FILE", conflicts_with = "jwks_url")]
    pub jwks_file: Option<PathBuf>,

    /// JWKS URL for bearer-token callers, fetched again every ROTATOR_JWKS_REFRESH.
    #[arg(long, env = "ROTATOR_JWKS_URL")]
    pub jwks_url: Option<Url>,

    /// How often a JWKS URL is fetched again.
    #[arg(long, env = "ROTATOR_JWKS_REFRESH", default_value = "5m", value_parser = duration)]
    pub jwks_refresh: Duration,

    /// Required `iss` of bearer tokens.
    #[arg(long, env = "ROTATOR_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of bearer tokens.
    #[arg(long, env = "ROTATOR_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on bearer tokens' `exp` and `nbf` (whole seconds).
    #[arg(long, env = "ROTATOR_JWT_LEEWAY", default_value = "30s", value_parser = duration)]
    pub jwt_leeway: Duration,

    /// Authorization policy (TOML); reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "ROTATOR_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,

    /// How often the policy, TLS, JWKS and schedule files are checked for changes.
    #[arg(long, env = "ROTATOR_RELOAD_INTERVAL", default_value = "5s", value_parser = duration)]
    pub reload_interval: Duration,

    /// Rotations one caller may ask for per minute (sustained).
    #[arg(
        long,
        env = "ROTATOR_CALLER_ROTATIONS_PER_MINUTE",
        default_value_t = 30
    )]
    pub caller_rotations_per_minute: u32,

    /// Rotations one caller may ask for in a burst.
    #[arg(long, env = "ROTATOR_CALLER_ROTATION_BURST", default_value_t = 10)]
    pub caller_rotation_burst: u32,

    /// GetRotationStatus calls one caller may make per minute (sustained).
    #[arg(long, env = "ROTATOR_CALLER_STATUS_PER_MINUTE", default_value_t = 120)]
    pub caller_status_per_minute: u32,

    /// GetRotationStatus calls one caller may make in a burst.
    #[arg(long, env = "ROTATOR_CALLER_STATUS_BURST", default_value_t = 30)]
    pub caller_status_burst: u32,

    /// Refused attempts (unauthenticated or denied) one address may make per minute before
    /// its refusals are throttled (RESOURCE_EXHAUSTED, no audit line of their own).
    #[arg(long, env = "ROTATOR_PEER_REFUSALS_PER_MINUTE", default_value_t = 30)]
    pub peer_refusals_per_minute: u32,

    /// Refused attempts one address may make in a burst.
    #[arg(long, env = "ROTATOR_PEER_REFUSAL_BURST", default_value_t = 10)]
    pub peer_refusal_burst: u32,

    /// Refusals of one kind (address, caller, client, outcome) are audited once per this
    /// window; their repeats are written as one event with a count when it ends.
    #[arg(long, env = "ROTATOR_REFUSAL_AUDIT_WINDOW", default_value = "60s", value_parser = duration)]
    pub refusal_audit_window: Duration,
}

impl SecurityArgs {
    /// Secure mode needs a certificate, a key, a policy and at least one way for callers to
    /// identify themselves; insecure mode needs a loopback listener.
    pub fn into_settings(self, listen_addr: SocketAddr) -> Result<Settings, ConfigError> {
        for (name, file) in [
            ("ROTATOR_TLS_CERT", &self.tls_cert),
            ("ROTATOR_TLS_KEY", &self.tls_key),
            ("ROTATOR_TLS_CLIENT_CA", &self.tls_client_ca),
            ("ROTATOR_JWKS_FILE", &self.jwks_file),
            ("ROTATOR_POLICY_FILE", &self.policy_file),
        ] {
            readable(name, file.as_ref())?;
        }
        let tls = if self.insecure {
            if !listen_addr.ip().is_loopback() {
                return Err(ConfigError::InsecureNotLoopback(listen_addr));
            }
            None
        } else {
            Some(self.tls_settings()?)
        };
        nonzero_duration(self.refusal_audit_window, "ROTATOR_REFUSAL_AUDIT_WINDOW")?;
        nonzero_duration(self.reload_interval, "ROTATOR_RELOAD_INTERVAL")?;
        let nonzero = |v: u32, name| NonZeroU32::new(v).ok_or(ConfigError::Zero(name));
        let rate = |per_minute, per_minute_name, burst, burst_name| {
            Ok::<_, ConfigError>(Rate {
                per_minute: nonzero(per_minute, per_minute_name)?,
                burst: nonzero(burst, burst_name)?,
            })
        };
        Ok(Settings {
            tls,
            limits: Limits {
                rotations: rate(
                    self.caller_rotations_per_minute,
                    "ROTATOR_CALLER_ROTATIONS_PER_MINUTE",
                    self.caller_rotation_burst,
                    "ROTATOR_CALLER_ROTATION_BURST",
                )?,
                status: rate(
                    self.caller_status_per_minute,
                    "ROTATOR_CALLER_STATUS_PER_MINUTE",
                    self.caller_status_burst,
                    "ROTATOR_CALLER_STATUS_BURST",
                )?,
                refusals: rate(
                    self.peer_refusals_per_minute,
                    "ROTATOR_PEER_REFUSALS_PER_MINUTE",
                    self.peer_refusal_burst,
                    "ROTATOR_PEER_REFUSAL_BURST",
                )?,
            },
            refusal_audit_window: self.refusal_audit_window,
            reload_interval: self.reload_interval,
        })
    }

    fn tls_settings(&self) -> Result<TlsSettings, ConfigError> {
        let cert = self
            .tls_cert
            .clone()
            .ok_or(ConfigError::SecureRequires("ROTATOR_TLS_CERT"))?;
        let key = self
            .tls_key
            .clone()
            .ok_or(ConfigError::SecureRequires("ROTATOR_TLS_KEY"))?;
        let policy = self
            .policy_file
            .clone()
            .ok_or(ConfigError::SecureRequires("ROTATOR_POLICY_FILE"))?;
        let jwks = match (&self.jwks_file, &self.jwks_url) {
            (Some(file), _) => Some(JwksSource::File(file.clone())),
            (None, Some(url)) => {
                check_url(url, "ROTATOR_JWKS_URL")?;
                Some(JwksSource::Url(url.clone()))
            }
            (None, None) => None,
        };
        if jwks.is_none() && self.tls_client_ca.is_none() {
            return Err(ConfigError::NoCallerIdentity);
        }
        let claim = |value: &Option<String>| {
            value
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or(ConfigError::JwtClaims)
        };
        let jwt = match jwks {
            None => None,
            Some(jwks) => Some(JwtSettings {
                jwks,
                issuer: claim(&self.jwt_issuer)?,
                audience: claim(&self.jwt_audience)?,
                leeway: self.jwt_leeway,
                refresh: self.jwks_refresh,
            }),
        };
        nonzero_duration(self.jwks_refresh, "ROTATOR_JWKS_REFRESH")?;
        Ok(TlsSettings {
            files: TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca.clone(),
            },
            jwt,
            policy,
        })
    }
}
