//! What the Auth0 adapter needs to know, built and validated by `config`.

use std::{path::PathBuf, time::Duration};

use reqwest::Url;
use secrecy::SecretString;

use crate::rotation::KeyAlgorithm;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Tenant domain, e.g. acme.eu.auth0.com.
    pub domain: String,
    /// Where the Management API is reached (the tenant, an emulator, a proxy with a base path).
    pub base_url: Url,
    /// Extra PEM bundle trusted for Auth0's certificate.
    pub ca_cert: Option<PathBuf>,
    pub credentials: Credentials,
    pub connect_timeout: Duration,
    /// One request, answer included.
    pub timeout: Duration,
    /// How the tenant's Management API rate limit is spent.
    pub budget: super::Budget,
}

/// How the service authenticates to the Management API. `SecretString`'s `Debug` is redacted.
#[derive(Debug, Clone)]
pub enum Credentials {
    ClientCredentials {
        client_id: String,
        source: CredentialSource,
        audience: String,
    },
    StaticToken(SecretString),
}

/// Where the service's own client credential comes from: exactly one of them.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// `AUTH0_CLIENT_SECRET`, for the process's life.
    Secret(SecretString),
    /// `AUTH0_CLIENT_SECRET_FILE`, read at every token request (a new secret on disk is used
    /// from the next one on).
    SecretFile(PathBuf),
    /// `AUTH0_CLIENT_ASSERTION_KEY_FILE`: Private Key JWT, a PKCS#8 PEM read at every token
    /// request, with the `kid` and algorithm its credential was registered with.
    KeyFile {
        path: PathBuf,
        key_id: Option<String>,
        algorithm: KeyAlgorithm,
    },
    /// `AUTH0_CREDENTIALS_VAULT_PATH`: a KV v2 key of the service's mount holding
    /// `client_secret`, or `private_key`, `key_id` and `algorithm`; read at every token request.
    /// The one source the service may rotate itself.
    Vault(String),
}
