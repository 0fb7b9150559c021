//! Command line and environment, parsed and validated once at start-up into [`Config`].
//!
//! Every setting is a flag with an environment fallback; `secret-rotator serve --help` lists them
//! all. Secrets are `SecretString` from the moment they are read and their values are never shown
//! (`hide_env_values`), not even in parse errors.

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use reqwest::Url;
use secrecy::SecretString;

use crate::{
    auth::{JwksSource, TlsFiles},
    rotation::PathTemplate,
};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(Box<ServeArgs>),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC listen address.
    #[arg(long, env = "ROTATOR_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,

    /// Auth0 tenant domain, e.g. acme.eu.auth0.com.
    #[arg(long, env = "AUTH0_DOMAIN")]
    pub auth0_domain: String,

    /// Client id of the service's own machine-to-machine application.
    #[arg(long, env = "AUTH0_CLIENT_ID")]
    pub auth0_client_id: Option<String>,

    /// Client secret of the service's own machine-to-machine application.
    #[arg(long, env = "AUTH0_CLIENT_SECRET", hide_env_values = true, value_parser = secret)]
    pub auth0_client_secret: Option<SecretString>,

    /// Static Management API token, instead of client credentials.
    #[arg(long, env = "AUTH0_MANAGEMENT_TOKEN", hide_env_values = true, value_parser = secret)]
    pub auth0_management_token: Option<SecretString>,

    /// Where Auth0 is reached (emulators, proxies) [default: https://{AUTH0_DOMAIN}].
    #[arg(long, env = "AUTH0_BASE_URL")]
    pub auth0_base_url: Option<Url>,

    /// Management API token audience [default: https://{AUTH0_DOMAIN}/api/v2/].
    #[arg(long, env = "AUTH0_AUDIENCE")]
    pub auth0_audience: Option<String>,

    /// PEM bundle of the CAs trusted for Auth0's certificate, in addition to the system's.
    #[arg(long, env = "AUTH0_CACERT")]
    pub auth0_cacert: Option<PathBuf>,

    /// Timeout for connecting to Auth0.
    #[arg(long, env = "AUTH0_CONNECT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub auth0_connect_timeout: Duration,

    /// Timeout for one Auth0 request, answer included.
    #[arg(long, env = "AUTH0_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub auth0_timeout: Duration,

    /// Vault (or OpenBao) address.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Url,

    /// Vault token.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true, value_parser = secret)]
    pub vault_token: SecretString,

    /// Vault Enterprise namespace.
    #[arg(long, env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,

    /// PEM file of the CA that signed Vault's certificate.
    #[arg(long, env = "VAULT_CACERT")]
    pub vault_cacert: Option<PathBuf>,

    /// Timeout for one Vault request.
    #[arg(long, env = "VAULT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub vault_timeout: Duration,

    /// KV v2 mount the secrets are written to.
    #[arg(long, env = "ROTATOR_VAULT_MOUNT", default_value = "secret")]
    pub vault_mount: String,

    /// Path of a client's secret inside the mount; placeholders {client_id} (required) and {domain}.
    #[arg(
        long,
        env = "ROTATOR_VAULT_PATH",
        default_value = "auth0/clients/{client_id}"
    )]
    pub vault_path: String,

    /// Where the service keeps its leases, intents and idempotency keys, inside the mount.
    #[arg(long, env = "ROTATOR_STATE_PATH", default_value = "secret-rotator")]
    pub state_path: String,

    /// How long a client's lease lasts; longer than ROTATOR_MAX_DEADLINE plus AUTH0_TIMEOUT.
    #[arg(long, env = "ROTATOR_LEASE_TTL", default_value = "90s", value_parser = duration)]
    pub lease_ttl: Duration,

    /// How often every replica looks for rotations left open and heals them.
    #[arg(long, env = "ROTATOR_RECONCILE_INTERVAL", default_value = "30s", value_parser = duration)]
    pub reconcile_interval: Duration,

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

    /// Test only: pause between Auth0's answer and the Vault write.
    #[arg(long, env = "ROTATOR_TEST_PAUSE_AFTER_AUTH0", hide = true, value_parser = duration)]
    pub test_pause_after_auth0: Option<Duration>,

    /// Deadline of a call whose caller set none (grpc-timeout).
    #[arg(long, env = "ROTATOR_DEADLINE", default_value = "30s", value_parser = duration)]
    pub deadline: Duration,

    /// Callers' deadlines are capped to this.
    #[arg(long, env = "ROTATOR_MAX_DEADLINE", default_value = "60s", value_parser = duration)]
    pub max_deadline: Duration,

    /// Rotations running at once in this process; more wait until their deadline.
    #[arg(long, env = "ROTATOR_MAX_CONCURRENT_ROTATIONS", default_value_t = 16)]
    pub max_concurrent_rotations: usize,

    /// Largest request accepted, in bytes.
    #[arg(long, env = "ROTATOR_MAX_REQUEST_BYTES", default_value_t = 4096)]
    pub max_request_bytes: usize,

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

    /// Authorization policy (TOML); reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "ROTATOR_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,

    /// How often the policy, TLS and JWKS files are checked for changes.
    #[arg(long, env = "ROTATOR_RELOAD_INTERVAL", default_value = "5s", value_parser = duration)]
    pub reload_interval: Duration,

    /// Write audit events (target `audit`) to this file, as JSON lines, instead of the log.
    #[arg(long, env = "ROTATOR_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// How long shutdown waits for in-flight calls before the process exits.
    #[arg(long, env = "ROTATOR_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Log filter (tracing EnvFilter syntax). vaultrs is off by default: every Vault error is
    /// logged by the service itself, and vaultrs reports expected 404s as errors.
    #[arg(long, env = "ROTATOR_LOG", default_value = "info,vaultrs=off")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "ROTATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// The validated configuration. Built only by [`ServeArgs::into_config`].
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub security: SecurityConfig,
    pub limits: Limits,
    pub auth0: Auth0Config,
    pub vault: VaultConfig,
    pub rotation: RotationConfig,
    pub deadline: Duration,
    pub shutdown_grace: Duration,
    pub log: LogConfig,
}

/// How callers are authenticated and authorized.
#[derive(Debug, Clone)]
pub enum SecurityConfig {
    /// Plaintext, no authentication; the listener is loopback-only.
    Insecure,
    Tls(Box<TlsSecurity>),
}

#[derive(Debug, Clone)]
pub struct TlsSecurity {
    pub tls: TlsFiles,
    /// Bearer-token callers, when a JWKS is configured.
    pub jwt: Option<JwtConfig>,
    pub policy: PathBuf,
    pub reload_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub jwks: JwksSource,
    pub issuer: String,
    pub audience: String,
    pub refresh: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_deadline: Duration,
    pub max_concurrent_rotations: usize,
    pub max_request_bytes: usize,
    pub caller_rotations_per_minute: NonZeroU32,
    pub caller_rotation_burst: NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct RotationConfig {
    pub replica_id: String,
    pub lease_ttl: Duration,
    pub reconcile_interval: Duration,
    pub idempotency_window: Duration,
    pub allow_unrecoverable: bool,
    pub pause_after_auth0: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
    pub audit_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Auth0Config {
    pub domain: String,
    pub base_url: Url,
    pub ca_cert: Option<PathBuf>,
    pub credentials: Auth0Credentials,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// How the service authenticates to the Management API. `SecretString`'s `Debug` is redacted.
#[derive(Debug, Clone)]
pub enum Auth0Credentials {
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
        audience: String,
    },
    StaticToken(SecretString),
}

#[derive(Debug, Clone)]
pub struct VaultConfig {
    pub addr: Url,
    pub token: SecretString,
    pub namespace: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub timeout: Duration,
    pub mount: String,
    pub path: PathTemplate,
    pub state_prefix: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("AUTH0_DOMAIN must be a host name such as acme.eu.auth0.com (no scheme, port or path)")]
    Auth0Domain,
    #[error("{0} must be an http or https URL without query or fragment")]
    Url(&'static str),
    #[error(
        "set either AUTH0_CLIENT_ID with AUTH0_CLIENT_SECRET, or AUTH0_MANAGEMENT_TOKEN (not both)"
    )]
    Auth0Credentials,
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
}

impl ServeArgs {
    /// Checks every setting once; the rest of the program trusts the result.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let Self {
            listen_addr,
            auth0_domain,
            auth0_client_id,
            auth0_client_secret,
            auth0_management_token,
            auth0_base_url,
            auth0_audience,
            auth0_cacert,
            auth0_connect_timeout,
            auth0_timeout,
            vault_addr,
            vault_token,
            vault_namespace,
            vault_cacert,
            vault_timeout,
            vault_mount,
            vault_path,
            state_path,
            lease_ttl,
            reconcile_interval,
            idempotency_window,
            allow_unrecoverable_rotations,
            replica_id,
            test_pause_after_auth0,
            deadline,
            max_deadline,
            max_concurrent_rotations,
            max_request_bytes,
            caller_rotations_per_minute,
            caller_rotation_burst,
            insecure,
            tls_cert,
            tls_key,
            tls_client_ca,
            jwks_file,
            jwks_url,
            jwks_refresh,
            jwt_issuer,
            jwt_audience,
            policy_file,
            reload_interval,
            audit_log,
            shutdown_grace,
            log,
            log_format,
        } = self;

        let domain = auth0_domain.trim().to_ascii_lowercase();
        if !is_host_name(&domain) {
            return Err(ConfigError::Auth0Domain);
        }
        let base_url = match auth0_base_url {
            Some(url) => url,
            None => {
                Url::parse(&format!("https://{domain}")).map_err(|_| ConfigError::Auth0Domain)?
            }
        };
        check_url(&base_url, "AUTH0_BASE_URL")?;
        let credentials = match (auth0_client_id, auth0_client_secret, auth0_management_token) {
            (Some(client_id), Some(client_secret), None) if !client_id.trim().is_empty() => {
                Auth0Credentials::ClientCredentials {
                    client_id: client_id.trim().to_owned(),
                    client_secret,
                    audience: auth0_audience.unwrap_or_else(|| format!("https://{domain}/api/v2/")),
                }
            }
            (None, None, Some(token)) => Auth0Credentials::StaticToken(token),
            _ => return Err(ConfigError::Auth0Credentials),
        };
        check_url(&vault_addr, "VAULT_ADDR")?;
        let mount = vault_mount.trim_matches('/').to_owned();
        if mount.is_empty()
            || !mount
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/'))
        {
            return Err(ConfigError::VaultMount);
        }
        let path = PathTemplate::parse(&vault_path, &domain).map_err(ConfigError::VaultPath)?;
        let state_prefix = state_path.trim_matches('/').to_owned();
        check_state_path(&state_prefix, &path).map_err(ConfigError::StatePath)?;
        for (name, file) in [
            ("VAULT_CACERT", &vault_cacert),
            ("AUTH0_CACERT", &auth0_cacert),
            ("ROTATOR_TLS_CERT", &tls_cert),
            ("ROTATOR_TLS_KEY", &tls_key),
            ("ROTATOR_TLS_CLIENT_CA", &tls_client_ca),
            ("ROTATOR_JWKS_FILE", &jwks_file),
            ("ROTATOR_POLICY_FILE", &policy_file),
        ] {
            if let Some(path) = file
                && std::fs::File::open(path).is_err()
            {
                return Err(ConfigError::File(name, path.clone()));
            }
        }
        let security = if insecure {
            if !listen_addr.ip().is_loopback() {
                return Err(ConfigError::InsecureNotLoopback(listen_addr));
            }
            SecurityConfig::Insecure
        } else {
            let cert = tls_cert.ok_or(ConfigError::SecureRequires("ROTATOR_TLS_CERT"))?;
            let key = tls_key.ok_or(ConfigError::SecureRequires("ROTATOR_TLS_KEY"))?;
            let policy = policy_file.ok_or(ConfigError::SecureRequires("ROTATOR_POLICY_FILE"))?;
            let jwks = match (jwks_file, jwks_url) {
                (Some(file), _) => Some(JwksSource::File(file)),
                (None, Some(url)) => {
                    check_url(&url, "ROTATOR_JWKS_URL")?;
                    Some(JwksSource::Url(url))
                }
                (None, None) => None,
            };
            if jwks.is_none() && tls_client_ca.is_none() {
                return Err(ConfigError::NoCallerIdentity);
            }
            let jwt = match jwks {
                None => None,
                Some(jwks) => Some(JwtConfig {
                    jwks,
                    issuer: jwt_issuer
                        .filter(|s| !s.is_empty())
                        .ok_or(ConfigError::JwtClaims)?,
                    audience: jwt_audience
                        .filter(|s| !s.is_empty())
                        .ok_or(ConfigError::JwtClaims)?,
                    refresh: jwks_refresh,
                }),
            };
            SecurityConfig::Tls(Box::new(TlsSecurity {
                tls: TlsFiles {
                    cert,
                    key,
                    client_ca: tls_client_ca,
                },
                jwt,
                policy,
                reload_interval,
            }))
        };
        let nonzero = |v: u32, name| NonZeroU32::new(v).ok_or(ConfigError::Zero(name));
        let limits = Limits {
            max_deadline,
            max_concurrent_rotations,
            max_request_bytes,
            caller_rotations_per_minute: nonzero(
                caller_rotations_per_minute,
                "ROTATOR_CALLER_ROTATIONS_PER_MINUTE",
            )?,
            caller_rotation_burst: nonzero(caller_rotation_burst, "ROTATOR_CALLER_ROTATION_BURST")?,
        };
        if max_concurrent_rotations == 0 {
            return Err(ConfigError::Zero("ROTATOR_MAX_CONCURRENT_ROTATIONS"));
        }
        if max_request_bytes < 256 {
            return Err(ConfigError::Zero(
                "ROTATOR_MAX_REQUEST_BYTES (at least 256)",
            ));
        }
        if deadline > max_deadline {
            return Err(ConfigError::DeadlineAboveMax);
        }
        for (value, name) in [
            (auth0_connect_timeout, "AUTH0_CONNECT_TIMEOUT"),
            (auth0_timeout, "AUTH0_TIMEOUT"),
            (vault_timeout, "VAULT_TIMEOUT"),
            (deadline, "ROTATOR_DEADLINE"),
            (max_deadline, "ROTATOR_MAX_DEADLINE"),
            (reload_interval, "ROTATOR_RELOAD_INTERVAL"),
            (jwks_refresh, "ROTATOR_JWKS_REFRESH"),
            (lease_ttl, "ROTATOR_LEASE_TTL"),
            (reconcile_interval, "ROTATOR_RECONCILE_INTERVAL"),
            (idempotency_window, "ROTATOR_IDEMPOTENCY_WINDOW"),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if lease_ttl <= max_deadline + auth0_timeout {
            return Err(ConfigError::LeaseTooShort);
        }
        Ok(Config {
            listen_addr,
            security,
            limits,
            auth0: Auth0Config {
                domain,
                base_url,
                ca_cert: auth0_cacert,
                credentials,
                connect_timeout: auth0_connect_timeout,
                timeout: auth0_timeout,
            },
            vault: VaultConfig {
                addr: vault_addr,
                token: vault_token,
                namespace: vault_namespace.filter(|ns| !ns.trim().is_empty()),
                ca_cert: vault_cacert,
                timeout: vault_timeout,
                mount,
                path,
                state_prefix,
            },
            rotation: RotationConfig {
                replica_id: replica_id
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(default_replica_id),
                lease_ttl,
                reconcile_interval,
                idempotency_window,
                allow_unrecoverable: allow_unrecoverable_rotations,
                pause_after_auth0: test_pause_after_auth0,
            },
            deadline,
            shutdown_grace,
            log: LogConfig {
                filter: log,
                format: log_format,
                audit_file: audit_log,
            },
        })
    }
}

/// The ledger's records must never share a key with a client's secret.
fn check_state_path(prefix: &str, secrets: &PathTemplate) -> Result<(), String> {
    let probe = PathTemplate::parse(&format!("{prefix}/{{client_id}}"), "d")
        .map_err(|e| e.replace("{client_id}", "a name"))?;
    let sample = crate::rotation::ClientId::parse("x").expect("valid id");
    let secret_path = secrets.render(&sample);
    let state_path = probe.render(&sample);
    let first = |p: &str| p.split('/').next().unwrap_or_default().to_owned();
    if first(&secret_path) == first(&state_path) {
        return Err(format!(
            "its first segment must differ from ROTATOR_VAULT_PATH's ({})",
            first(&secret_path)
        ));
    }
    Ok(())
}

fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
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
    humantime::parse_duration(s).map_err(|_| "expected a duration such as 500ms, 5s or 2m".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        parse_for("acme.eu.auth0.com", extra)
    }

    fn parse_for(domain: &str, extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec![
            "secret-rotator",
            "serve",
            "--auth0-domain",
            domain,
            "--vault-addr",
            "http://127.0.0.1:8200",
            "--vault-token",
            "t",
            "--insecure",
            "true",
            "--listen-addr",
            "127.0.0.1:50051",
        ];
        argv.extend_from_slice(extra);
        let Command::Serve(args) = Cli::try_parse_from(argv).expect("argv parses").command;
        args.into_config()
    }

    #[test]
    fn credentials_are_either_m2m_or_token() {
        assert_eq!(parse(&[]).unwrap_err(), ConfigError::Auth0Credentials);
        assert_eq!(
            parse(&["--auth0-client-id", "abc"]).unwrap_err(),
            ConfigError::Auth0Credentials
        );
        let both = [
            "--auth0-client-id",
            "abc",
            "--auth0-client-secret",
            "s",
            "--auth0-management-token",
            "t",
        ];
        assert_eq!(parse(&both).unwrap_err(), ConfigError::Auth0Credentials);
        assert!(parse(&["--auth0-management-token", "t"]).is_ok());
    }

    #[test]
    fn defaults_derive_from_the_domain() {
        let cfg = parse(&["--auth0-client-id", "abc", "--auth0-client-secret", "s"]).unwrap();
        assert_eq!(cfg.auth0.base_url.as_str(), "https://acme.eu.auth0.com/");
        match cfg.auth0.credentials {
            Auth0Credentials::ClientCredentials { audience, .. } => {
                assert_eq!(audience, "https://acme.eu.auth0.com/api/v2/")
            }
            other => panic!("unexpected credentials {other:?}"),
        }
        assert_eq!(cfg.vault.mount, "secret");
        assert!(matches!(cfg.security, SecurityConfig::Insecure));
    }

    #[test]
    fn bad_domain_and_path_are_refused() {
        let token = ["--auth0-management-token", "t"];
        for domain in ["https://acme.auth0.com", "acme.auth0.com/x", "", "a..b"] {
            assert_eq!(
                parse_for(domain, &token).unwrap_err(),
                ConfigError::Auth0Domain,
                "{domain:?}"
            );
        }
        let shared = [
            "--auth0-management-token",
            "t",
            "--vault-path",
            "auth0/shared",
        ];
        assert!(matches!(
            parse(&shared).unwrap_err(),
            ConfigError::VaultPath(_)
        ));
    }
}
