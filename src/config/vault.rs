//! Vault settings: where, with which token, which mount, and where secrets and the ledger live.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use reqwest::Url;
use secrecy::SecretString;

use super::{ConfigError, check_url, duration, secret};
use crate::{
    rotation::{ClientId, PathTemplate},
    vault::{Settings, Token},
};

/// How the service gets its Vault token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMethod {
    Token,
    Approle,
    Kubernetes,
}

#[derive(Debug, Args)]
pub struct VaultArgs {
    /// Vault (or OpenBao) address.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Url,

    /// Vault token (or VAULT_TOKEN_FILE).
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true, value_parser = secret)]
    pub vault_token: Option<SecretString>,

    /// File holding the Vault token, read again whenever it changes (as Vault Agent writes it).
    #[arg(long, env = "VAULT_TOKEN_FILE")]
    pub vault_token_file: Option<PathBuf>,

    /// How to get a token: token (VAULT_TOKEN or VAULT_TOKEN_FILE), approle or kubernetes.
    #[arg(long, env = "VAULT_AUTH_METHOD", value_enum, default_value = "token")]
    pub vault_auth_method: AuthMethod,

    /// Where the auth method is mounted [default: approle or kubernetes].
    #[arg(long, env = "VAULT_AUTH_MOUNT")]
    pub vault_auth_mount: Option<String>,

    /// AppRole: the role id.
    #[arg(long, env = "VAULT_ROLE_ID")]
    pub vault_role_id: Option<String>,

    /// AppRole: a file holding the secret id (read at each login).
    #[arg(long, env = "VAULT_SECRET_ID_FILE")]
    pub vault_secret_id_file: Option<PathBuf>,

    /// Kubernetes: the Vault role to log in as.
    #[arg(long, env = "VAULT_K8S_ROLE")]
    pub vault_k8s_role: Option<String>,

    /// Kubernetes: the service-account token (read at each login).
    #[arg(
        long,
        env = "VAULT_K8S_TOKEN_PATH",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub vault_k8s_token_path: PathBuf,

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
}

impl VaultArgs {
    /// The adapter's settings and the secrets' path template (`{domain}` filled in).
    pub fn into_settings(self, domain: &str) -> Result<(Settings, PathTemplate), ConfigError> {
        check_url(&self.vault_addr, "VAULT_ADDR")?;
        let mount = self.vault_mount.trim_matches('/').to_owned();
        if mount.is_empty()
            || !mount
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/'))
        {
            return Err(ConfigError::VaultMount);
        }
        let path = PathTemplate::parse(&self.vault_path, domain).map_err(ConfigError::VaultPath)?;
        let state_prefix = self.state_path.trim_matches('/').to_owned();
        check_state_path(&state_prefix, &path).map_err(ConfigError::StatePath)?;
        super::readable("VAULT_CACERT", self.vault_cacert.as_ref())?;
        super::nonzero_duration(self.vault_timeout, "VAULT_TIMEOUT")?;
        let token = match self.vault_auth_method {
            AuthMethod::Token => match (self.vault_token, self.vault_token_file) {
                (Some(token), None) => Token::Static(token),
                (None, Some(file)) => {
                    super::readable("VAULT_TOKEN_FILE", Some(&file))?;
                    Token::File(file)
                }
                _ => return Err(ConfigError::VaultToken),
            },
            AuthMethod::Approle => {
                let (Some(role_id), Some(secret_id_file)) =
                    (self.vault_role_id, self.vault_secret_id_file)
                else {
                    return Err(ConfigError::VaultLogin(
                        "VAULT_AUTH_METHOD=approle needs VAULT_ROLE_ID and VAULT_SECRET_ID_FILE",
                    ));
                };
                super::readable("VAULT_SECRET_ID_FILE", Some(&secret_id_file))?;
                Token::AppRole {
                    mount: self.vault_auth_mount.unwrap_or_else(|| "approle".into()),
                    role_id,
                    secret_id_file,
                }
            }
            AuthMethod::Kubernetes => {
                let Some(role) = self.vault_k8s_role else {
                    return Err(ConfigError::VaultLogin(
                        "VAULT_AUTH_METHOD=kubernetes needs VAULT_K8S_ROLE",
                    ));
                };
                Token::Kubernetes {
                    mount: self.vault_auth_mount.unwrap_or_else(|| "kubernetes".into()),
                    role,
                    jwt_file: self.vault_k8s_token_path,
                }
            }
        };
        let settings = Settings {
            addr: self.vault_addr,
            token,
            namespace: self.vault_namespace.filter(|ns| !ns.trim().is_empty()),
            ca_cert: self.vault_cacert,
            timeout: self.vault_timeout,
            mount,
            state_prefix,
        };
        Ok((settings, path))
    }
}

/// The ledger's records must never share a key with a client's secret.
fn check_state_path(prefix: &str, secrets: &PathTemplate) -> Result<(), String> {
    let probe = PathTemplate::parse(&format!("{prefix}/{{client_id}}"), "d")
        .map_err(|e| e.replace("{client_id}", "a name"))?;
    let sample = ClientId::parse("x").expect("valid id");
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
