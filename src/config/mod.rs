//! Command line and environment, parsed and validated once at start-up into [`Config`].
//!
//! Every setting is a flag with an environment fallback; `secret-rotator serve --help` lists them
//! all. Flags come in groups (`auth0`, `vault`, `rotation`, `security`, and the server's own
//! below), each of which validates itself and builds the settings of the part it configures.
//! Secrets are `SecretString` from the moment they are read and their values are never shown
//! (`hide_env_values`), not even in parse errors.

mod auth0;
mod log;
mod rotation;
mod schedule;
mod security;
mod vault;
mod webhook;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use reqwest::Url;
use secrecy::SecretString;

pub use self::{
    auth0::Auth0Args, log::LogArgs, rotation::RotationArgs, schedule::ScheduleArgs,
    schedule::ScheduleSettings, schedule::load as load_schedule, security::SecurityArgs,
    vault::VaultArgs, webhook::WebhookArgs,
};
use crate::{rotation::Spelled, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "secret-rotator",
    version,
    about = "Rotates Auth0 client secrets into Vault KV v2"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and environment. Help and version print and exit; anything
    /// else wrong is one line that names the setting as the user gave it (the environment
    /// variable, or the flag) and never echoes the value, which may be a secret.
    pub fn from_args() -> Result<Self, String> {
        match Self::try_parse() {
            Ok(cli) => Ok(cli),
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => Err(explain(&e)),
        }
    }
}

/// One line for a command-line error, in terms of the setting the user gave.
fn explain(e: &clap::Error) -> String {
    use clap::{
        CommandFactory,
        error::{ContextKind, ContextValue, ErrorKind},
    };
    let first_line = || {
        e.render()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned()
    };
    let named = |arg: &str| -> Option<String> {
        let long = arg.split_whitespace().next()?.strip_prefix("--")?;
        let command = Cli::command();
        let serve = command.find_subcommand("serve")?;
        let spec = serve.get_arguments().find(|a| a.get_long() == Some(long))?;
        let env = spec.get_env()?.to_string_lossy().into_owned();
        let on_command_line = std::env::args()
            .any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
        Some(match std::env::var_os(&env).is_some() && !on_command_line {
            true => format!("{env} (--{long})"),
            false => format!("--{long} ({env})"),
        })
    };
    match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::ValueValidation | ErrorKind::InvalidValue, Some(ContextValue::String(arg))) => {
            let why = std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_else(|| "not an accepted value".to_owned());
            match named(arg) {
                Some(name) => format!("{name} is invalid: {why}"),
                None => first_line(),
            }
        }
        (ErrorKind::MissingRequiredArgument, Some(ContextValue::Strings(args))) => {
            let names: Vec<String> = args
                .iter()
                .map(|a| named(a).unwrap_or_else(|| a.clone()))
                .collect();
            format!("missing: {}", names.join(", "))
        }
        _ => first_line(),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(Box<ServeArgs>),
    /// Operator commands, talking to a running server.
    #[command(flatten)]
    Operate(Box<crate::cli::Operation>),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub auth0: Auth0Args,
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(flatten)]
    pub rotation: RotationArgs,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The listener, its limits, and shutdown.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// gRPC listen address.
    #[arg(long, env = "ROTATOR_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,

    /// Deadline of a call whose caller set none (grpc-timeout).
    #[arg(long, env = "ROTATOR_DEADLINE", default_value = "30s", value_parser = duration)]
    pub deadline: Duration,

    /// Callers' deadlines are capped to this.
    #[arg(long, env = "ROTATOR_MAX_DEADLINE", default_value = "60s", value_parser = duration)]
    pub max_deadline: Duration,

    /// Largest request accepted, in bytes.
    #[arg(long, env = "ROTATOR_MAX_REQUEST_BYTES", default_value_t = 4096)]
    pub max_request_bytes: usize,

    /// How long shutdown waits for in-flight calls before the process exits.
    #[arg(long, env = "ROTATOR_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Connections open at once, at most; more wait in the kernel's backlog. Lowered at start
    /// to stay well under the process's file descriptor limit.
    #[arg(long, env = "ROTATOR_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// A connection that sends no request this long after it was accepted is closed.
    #[arg(long, env = "ROTATOR_FIRST_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub first_request_timeout: Duration,

    /// A connection without a request for this long is closed.
    #[arg(long, env = "ROTATOR_IDLE_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Requests in flight on one connection (HTTP/2 streams), at most.
    #[arg(long, env = "ROTATOR_MAX_STREAMS_PER_CONNECTION", default_value_t = 64)]
    pub max_streams_per_connection: u32,

    /// The admin listener (plain HTTP): /metrics (Prometheus), /healthz, /readyz. Keep it off
    /// public networks.
    #[arg(long, env = "ROTATOR_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,

    /// Label rotation metrics with the client id too (one series per client).
    #[arg(
        long,
        env = "ROTATOR_METRICS_PER_CLIENT",
        default_value_t = false,
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub metrics_per_client: bool,

    /// How often Vault and Auth0 are checked after start; health is NOT_SERVING while a
    /// check fails.
    #[arg(long, env = "ROTATOR_READINESS_INTERVAL", default_value = "10s", value_parser = duration)]
    pub readiness_interval: Duration,
}

/// The validated configuration: each part's settings. Built only by [`ServeArgs::into_config`].
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub security: crate::auth::Settings,
    pub auth0: crate::auth0::Settings,
    pub vault: crate::vault::Settings,
    pub rotation: crate::rotation::Settings,
    /// Scheduled rotations, when a schedule file is configured.
    pub schedule: Option<ScheduleSettings>,
    /// Notifications, when a webhook is configured.
    pub webhook: Option<crate::webhook::Settings>,
    pub log: telemetry::Settings,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen_addr: SocketAddr,
    pub deadline: Duration,
    pub max_deadline: Duration,
    pub max_request_bytes: usize,
    pub shutdown_grace: Duration,
    pub connections: crate::listener::Limits,
    pub max_streams_per_connection: u32,
    pub readiness_interval: Duration,
    pub admin_addr: SocketAddr,
    pub metrics_per_client: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("AUTH0_DOMAIN must be a host name such as acme.eu.auth0.com (no scheme, port or path)")]
    Auth0Domain,
    #[error("{0} must be an http or https URL without query or fragment")]
    Url(&'static str),
    #[error(
        "set AUTH0_CLIENT_ID with exactly one of AUTH0_CLIENT_SECRET, AUTH0_CLIENT_SECRET_FILE, \
         AUTH0_CLIENT_ASSERTION_KEY_FILE or AUTH0_CREDENTIALS_VAULT_PATH, or AUTH0_MANAGEMENT_TOKEN \
         alone"
    )]
    Auth0Credentials,
    #[error("{0}")]
    OwnCredential(String),
    #[error("set either VAULT_TOKEN or VAULT_TOKEN_FILE (not both)")]
    VaultToken,
    #[error("{0}")]
    VaultLogin(&'static str),
    #[error("ROTATOR_VAULT_MOUNT must be a mount name such as secret (letters, digits, -, _, /)")]
    VaultMount,
    #[error("ROTATOR_VAULT_PATH is invalid: {0}")]
    VaultPath(String),
    #[error("{0} file {1} cannot be read")]
    File(&'static str, PathBuf),
    #[error(
        "ROTATOR_INSECURE=true serves plaintext without authentication, so ROTATOR_LISTEN_ADDR must be a loopback address (127.0.0.1 or ::1), not {0}"
    )]
    InsecureNotLoopback(SocketAddr),
    #[error("{0} is required unless ROTATOR_INSECURE=true")]
    SecureRequires(&'static str),
    #[error(
        "callers need a way to identify themselves: set ROTATOR_TLS_CLIENT_CA (mutual TLS), ROTATOR_JWKS_FILE or ROTATOR_JWKS_URL (bearer tokens), or both"
    )]
    NoCallerIdentity,
    #[error("bearer tokens need ROTATOR_JWT_ISSUER and ROTATOR_JWT_AUDIENCE")]
    JwtClaims,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("ROTATOR_DEADLINE must not exceed ROTATOR_MAX_DEADLINE")]
    DeadlineAboveMax,
    #[error("{0} must be more than zero")]
    ZeroDuration(&'static str),
    #[error("ROTATOR_STATE_PATH is invalid: {0}")]
    StatePath(String),
    #[error(
        "ROTATOR_LEASE_TTL must be longer than ROTATOR_MAX_DEADLINE plus AUTH0_TIMEOUT, or a live rotation could lose its lease"
    )]
    LeaseTooShort,
    #[error(
        "ROTATOR_STAGED_DISTRIBUTE_FOR must be at least 1s and at most ROTATOR_STAGED_MAX_DISTRIBUTE_FOR"
    )]
    DistributeFor,
    #[error("ROTATOR_KEY_BITS must be 2048, 3072 or 4096")]
    KeyBits,
    #[error("{0}")]
    Webhook(&'static str),
    #[error("{0}")]
    Traces(String),
    #[error("ROTATOR_HISTORY_KEPT must be from 1 to 100")]
    HistoryKept,
    #[error("{0}")]
    Budget(&'static str),
    #[error("AUTH0_RATE_LIMITS: {0}")]
    RateLimits(String),
    #[error("ROTATOR_SCHEDULE_FILE: {0}")]
    Schedule(String),
}

impl ServeArgs {
    /// Checks every setting once; the rest of the program trusts the result.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let Self {
            server,
            auth0,
            vault,
            rotation,
            security,
            schedule,
            webhook,
            log,
        } = self;
        let auth0 = auth0.into_settings()?;
        let (vault, path) = vault.into_settings(&auth0.domain)?;
        let security = security.into_settings(server.listen_addr)?;
        let server = server.into_settings()?;
        // The service's own application is rotated only when its credential is in Vault, where
        // every replica reads it: elsewhere, rotating it would cut the service off from Auth0.
        let own_client = match &auth0.credentials {
            crate::auth0::Credentials::ClientCredentials { client_id, .. } => {
                crate::rotation::ClientId::parse(client_id).ok()
            }
            crate::auth0::Credentials::StaticToken(_) => None,
        };
        let own_credential_path = match &auth0.credentials {
            crate::auth0::Credentials::ClientCredentials {
                source: crate::auth0::CredentialSource::Vault(path),
                ..
            } => Some(path.clone()),
            _ => None,
        };
        let rotation = rotation.into_settings(
            path,
            server.max_deadline,
            server.max_deadline + auth0.timeout,
            own_client,
            own_credential_path,
        )?;
        let webhook = webhook.into_settings(format!("/secret-rotator/{}", auth0.domain))?;
        Ok(Config {
            server,
            security,
            auth0,
            vault,
            rotation,
            schedule: schedule.into_settings()?,
            webhook,
            log: log.into_settings()?,
        })
    }
}

impl ServerArgs {
    fn into_settings(self) -> Result<Server, ConfigError> {
        if self.max_request_bytes < 256 {
            return Err(ConfigError::Zero(
                "ROTATOR_MAX_REQUEST_BYTES (at least 256)",
            ));
        }
        if self.deadline > self.max_deadline {
            return Err(ConfigError::DeadlineAboveMax);
        }
        nonzero_duration(self.deadline, "ROTATOR_DEADLINE")?;
        nonzero_duration(self.max_deadline, "ROTATOR_MAX_DEADLINE")?;
        nonzero_duration(self.first_request_timeout, "ROTATOR_FIRST_REQUEST_TIMEOUT")?;
        nonzero_duration(self.idle_timeout, "ROTATOR_IDLE_TIMEOUT")?;
        nonzero_duration(self.readiness_interval, "ROTATOR_READINESS_INTERVAL")?;
        if self.max_connections == 0 {
            return Err(ConfigError::Zero("ROTATOR_MAX_CONNECTIONS"));
        }
        if self.max_streams_per_connection == 0 {
            return Err(ConfigError::Zero("ROTATOR_MAX_STREAMS_PER_CONNECTION"));
        }
        Ok(Server {
            listen_addr: self.listen_addr,
            deadline: self.deadline,
            max_deadline: self.max_deadline,
            max_request_bytes: self.max_request_bytes,
            shutdown_grace: self.shutdown_grace,
            connections: crate::listener::Limits {
                max_connections: self.max_connections,
                first_request: self.first_request_timeout,
                idle: self.idle_timeout,
            },
            max_streams_per_connection: self.max_streams_per_connection,
            readiness_interval: self.readiness_interval,
            admin_addr: self.admin_addr,
            metrics_per_client: self.metrics_per_client,
        })
    }
}

fn readable(name: &'static str, file: Option<&PathBuf>) -> Result<(), ConfigError> {
    match file {
        Some(path) if std::fs::File::open(Path::new(path)).is_err() => {
            Err(ConfigError::File(name, path.clone()))
        }
        _ => Ok(()),
    }
}

fn nonzero_duration(value: Duration, name: &'static str) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::ZeroDuration(name));
    }
    Ok(())
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn check_url(url: &Url, name: &'static str) -> Result<(), ConfigError> {
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.query().is_none()
        && url.fragment().is_none();
    ok.then_some(()).ok_or(ConfigError::Url(name))
}

// clap value parsers. Errors never echo the value: it may be a secret or a mistyped one.
fn secret(s: &str) -> Result<SecretString, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(s.trim().to_owned()))
}

fn duration(s: &str) -> Result<Duration, String> {
    spelled(s).map(|d| d.get())
}

/// A duration that is printed back as it was spelled ("24h", not "1day").
fn spelled(s: &str) -> Result<Spelled, String> {
    Spelled::parse(s).map_err(|_| "expected a duration such as 500ms, 5s or 2m".into())
}

#[cfg(test)]
mod tests;
