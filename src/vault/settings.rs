//! What the Vault adapter needs to know, built and validated by `config`.

use std::{path::PathBuf, time::Duration};

use reqwest::Url;
use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: Url,
    pub token: Token,
    /// Vault Enterprise namespace.
    pub namespace: Option<String>,
    /// PEM bundle of the CAs that sign Vault's certificate.
    pub ca_cert: Option<PathBuf>,
    /// One request.
    pub timeout: Duration,
    /// The KV v2 mount secrets and the ledger live in.
    pub mount: String,
    /// Where the ledger's records live inside the mount.
    pub state_prefix: String,
}

/// Where the Vault token comes from.
#[derive(Debug, Clone)]
pub enum Token {
    Static(SecretString),
    /// A file read again whenever it changes, as Vault Agent rewrites it.
    File(PathBuf),
    /// AppRole login at `auth/{mount}/login`, the secret id read from a file at each login.
    AppRole {
        mount: String,
        role_id: String,
        secret_id_file: PathBuf,
    },
    /// Kubernetes login at `auth/{mount}/login` with the pod's service-account token.
    Kubernetes {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
}
