//! Auth0 settings: the tenant, the service's credentials, timeouts.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use reqwest::Url;
use secrecy::SecretString;

use super::{ConfigError, check_url, duration, is_host_name, secret};
use crate::{
    auth0::{CredentialSource, Credentials, Limit, Limits, Settings},
    rotation::{KeyAlgorithm, KeyPair},
};

#[derive(Debug, Args)]
pub struct Auth0Args {
    /// Auth0 tenant domain, e.g. acme.eu.auth0.com.
    #[arg(long, env = "AUTH0_DOMAIN")]
    pub auth0_domain: String,

    /// Client id of the service's own machine-to-machine application.
    #[arg(long, env = "AUTH0_CLIENT_ID")]
    pub auth0_client_id: Option<String>,

    /// Client secret of the service's own machine-to-machine application (or one of the
    /// other sources below: exactly one).
    #[arg(long, env = "AUTH0_CLIENT_SECRET", hide_env_values = true, value_parser = secret)]
    pub auth0_client_secret: Option<SecretString>,

    /// A file holding the client secret, read at every token request (a new secret written
    /// there is used from the next one on).
    #[arg(long, env = "AUTH0_CLIENT_SECRET_FILE")]
    pub auth0_client_secret_file: Option<PathBuf>,

    /// Private Key JWT for the service itself: its private key (PKCS#8 PEM), read at every
    /// token request; the token request carries a client assertion signed with it.
    #[arg(long, env = "AUTH0_CLIENT_ASSERTION_KEY_FILE")]
    pub auth0_client_assertion_key_file: Option<PathBuf>,

    /// The `kid` of AUTH0_CLIENT_ASSERTION_KEY_FILE's credential at Auth0 [default: none].
    #[arg(long, env = "AUTH0_CLIENT_ASSERTION_KEY_ID")]
    pub auth0_client_assertion_key_id: Option<String>,

    /// The algorithm AUTH0_CLIENT_ASSERTION_KEY_FILE's credential was registered with: RS256,
    /// RS384 or PS256.
    #[arg(long, env = "AUTH0_CLIENT_ASSERTION_ALG", default_value = "RS256")]
    pub auth0_client_assertion_alg: String,

    /// The service's credential in Vault: a KV v2 key of VAULT_MOUNT holding `client_secret`,
    /// or `private_key`, `key_id` and `algorithm` (the layout the service writes for any
    /// client), read at every token request. The one source the service can rotate itself.
    #[arg(long, env = "AUTH0_CREDENTIALS_VAULT_PATH")]
    pub auth0_credentials_vault_path: Option<String>,

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

    /// The tenant's sustained Management API rate (requests per second, from its plan), one
    /// bucket for every endpoint; the same as AUTH0_RATE_LIMITS=all=N/s
    /// [default: learnt from x-ratelimit-reset].
    #[arg(long, env = "AUTH0_RATE_LIMIT_PER_SECOND")]
    pub auth0_rate_limit_per_second: Option<f64>,

    /// The plan's Management API buckets, e.g. `clients-read=100/min burst 5, other=150/min
    /// burst 10` (Essentials, Professional) or `all=16/s burst 50` (Enterprise)
    /// [default: learnt from the x-ratelimit-* headers].
    #[arg(long, env = "AUTH0_RATE_LIMITS")]
    pub auth0_rate_limits: Option<String>,

    /// The share of the tenant's rate-limit bucket that background work (timed promotions,
    /// healing) leaves to interactive calls, 0 to 1.
    #[arg(long, env = "AUTH0_INTERACTIVE_RESERVE", default_value_t = 0.5)]
    pub auth0_interactive_reserve: f64,
}

impl Auth0Args {
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let domain = self.auth0_domain.trim().to_ascii_lowercase();
        if !is_host_name(&domain) {
            return Err(ConfigError::Auth0Domain);
        }
        let base_url = match self.auth0_base_url {
            Some(url) => url,
            None => {
                Url::parse(&format!("https://{domain}")).map_err(|_| ConfigError::Auth0Domain)?
            }
        };
        check_url(&base_url, "AUTH0_BASE_URL")?;
        let audience = self
            .auth0_audience
            .unwrap_or_else(|| format!("https://{domain}/api/v2/"));
        let client_id = self
            .auth0_client_id
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty());
        let mut sources = Vec::new();
        if let Some(secret) = self.auth0_client_secret {
            sources.push(CredentialSource::Secret(secret));
        }
        if let Some(path) = self.auth0_client_secret_file {
            super::readable("AUTH0_CLIENT_SECRET_FILE", Some(&path))?;
            sources.push(CredentialSource::SecretFile(path));
        }
        if let Some(path) = self.auth0_client_assertion_key_file {
            let algorithm = KeyAlgorithm::parse(&self.auth0_client_assertion_alg).ok_or(
                ConfigError::OwnCredential(
                    "AUTH0_CLIENT_ASSERTION_ALG must be RS256, RS384 or PS256".into(),
                ),
            )?;
            let pem = std::fs::read_to_string(&path).map_err(|_| {
                ConfigError::OwnCredential(format!(
                    "AUTH0_CLIENT_ASSERTION_KEY_FILE {} cannot be read",
                    path.display()
                ))
            })?;
            KeyPair::from_private_pem(&SecretString::from(pem)).map_err(|_| {
                ConfigError::OwnCredential(format!(
                    "AUTH0_CLIENT_ASSERTION_KEY_FILE {} is not an RSA private key in PKCS#8 PEM",
                    path.display()
                ))
            })?;
            sources.push(CredentialSource::KeyFile {
                path,
                key_id: self.auth0_client_assertion_key_id,
                algorithm,
            });
        }
        if let Some(path) = self.auth0_credentials_vault_path {
            let path = path.trim().trim_matches('/').to_owned();
            if path.is_empty()
                || path
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Err(ConfigError::OwnCredential(
                    "AUTH0_CREDENTIALS_VAULT_PATH must be a KV path such as auth0/clients/<id>"
                        .into(),
                ));
            }
            sources.push(CredentialSource::Vault(path));
        }
        let credentials = match (client_id, sources.len(), self.auth0_management_token) {
            (Some(client_id), 1, None) => Credentials::ClientCredentials {
                client_id,
                source: sources.pop().expect("one source"),
                audience,
            },
            (None, 0, Some(token)) => Credentials::StaticToken(token),
            _ => return Err(ConfigError::Auth0Credentials),
        };
        super::readable("AUTH0_CACERT", self.auth0_cacert.as_ref())?;
        super::nonzero_duration(self.auth0_connect_timeout, "AUTH0_CONNECT_TIMEOUT")?;
        super::nonzero_duration(self.auth0_timeout, "AUTH0_TIMEOUT")?;
        if self
            .auth0_rate_limit_per_second
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(ConfigError::Budget(
                "AUTH0_RATE_LIMIT_PER_SECOND must be more than zero",
            ));
        }
        if !(0.0..=1.0).contains(&self.auth0_interactive_reserve) {
            return Err(ConfigError::Budget(
                "AUTH0_INTERACTIVE_RESERVE must be from 0 to 1",
            ));
        }
        let limits = match (self.auth0_rate_limits, self.auth0_rate_limit_per_second) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::RateLimits(
                    "set it or AUTH0_RATE_LIMIT_PER_SECOND, not both".into(),
                ));
            }
            (Some(spec), None) => rate_limits(&spec).map_err(ConfigError::RateLimits)?,
            (None, Some(per_second)) => Limits::OneBucket(Some(Limit {
                burst: None,
                per_second,
            })),
            (None, None) => Limits::Learnt,
        };
        let budget = crate::auth0::Budget {
            limits,
            interactive_reserve: self.auth0_interactive_reserve,
        };
        Ok(Settings {
            budget,
            domain,
            base_url,
            ca_cert: self.auth0_cacert,
            credentials,
            connect_timeout: self.auth0_connect_timeout,
            timeout: self.auth0_timeout,
        })
    }
}

/// Parses `AUTH0_RATE_LIMITS`: comma-separated `GROUP=N/UNIT [burst B]`, GROUP one of
/// `clients-read`, `other` (a bucket each) or `all` (one bucket), UNIT `s` or `min`.
fn rate_limits(spec: &str) -> Result<Limits, String> {
    let (mut all, mut clients_read, mut other) = (None, None, None);
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (group, limit) = entry
            .split_once('=')
            .ok_or_else(|| format!("`{entry}` is not GROUP=N/UNIT [burst B]"))?;
        let slot = match group.trim() {
            "all" => &mut all,
            "clients-read" => &mut clients_read,
            "other" => &mut other,
            g => {
                return Err(format!(
                    "unknown group `{g}`: use clients-read, other or all"
                ));
            }
        };
        if slot.replace(limit_of(limit.trim())?).is_some() {
            return Err(format!("group `{}` is given twice", group.trim()));
        }
    }
    match (all, clients_read, other) {
        (None, None, None) => Err("no group is given".into()),
        (Some(all), None, None) => Ok(Limits::OneBucket(Some(all))),
        (Some(_), _, _) => Err(
            "`all` is one bucket for every endpoint: it cannot be given with clients-read or other"
                .into(),
        ),
        (None, clients_read, other) => Ok(Limits::PerGroup {
            clients_read,
            other,
        }),
    }
}

/// `N/s`, `N/min` (and their long spellings), optionally followed by `burst B`.
fn limit_of(text: &str) -> Result<Limit, String> {
    let bad = || format!("`{text}` is not N/s or N/min, optionally followed by `burst B`");
    let mut words = text.split_whitespace();
    let (count, unit) = words
        .next()
        .and_then(|r| r.split_once('/'))
        .ok_or_else(bad)?;
    let count: f64 = count.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" | "sec" | "second" => 1.0,
        "min" | "minute" => 60.0,
        _ => return Err(bad()),
    };
    let burst = match (words.next(), words.next(), words.next()) {
        (None, None, None) => None,
        (Some("burst"), Some(size), None) => Some(size.parse::<u32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    if !(count.is_finite() && count > 0.0) || burst == Some(0) {
        return Err(format!(
            "`{text}`: a rate and a burst must be more than zero"
        ));
    }
    Ok(Limit {
        burst,
        per_second: count / seconds,
    })
}
