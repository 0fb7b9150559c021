//! What the Auth0 adapter needs to know, built and validated by `config`.

use std::{path::PathBuf, time::Duration};

use reqwest::Url;
use secrecy::SecretString;

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
        client_secret: SecretString,
        audience: String,
    },
    StaticToken(SecretString),
}
