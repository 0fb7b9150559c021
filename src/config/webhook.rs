//! Settings of the webhook: where notifications go and the key that signs them.

use std::{path::PathBuf, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use clap::Args;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::{ConfigError, check_url, duration, nonzero_duration, secret};
use crate::webhook::Settings;

/// Standard Webhooks signing secrets: `whsec_` and the base64 of 24 to 64 random bytes.
const PREFIX: &str = "whsec_";
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// POST a signed CloudEvent here for every staged, completed, failed, recovered and
    /// cancelled rotation and every drift found [default: no notifications].
    #[arg(long, env = "ROTATOR_WEBHOOK_URL")]
    pub webhook_url: Option<Url>,

    /// Signing secret, in the Standard Webhooks form whsec_<base64 of 24 to 64 bytes>.
    #[arg(long, env = "ROTATOR_WEBHOOK_SECRET", hide_env_values = true, value_parser = secret)]
    pub webhook_secret: Option<SecretString>,

    /// File holding the signing secret (instead of ROTATOR_WEBHOOK_SECRET).
    #[arg(long, env = "ROTATOR_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// One delivery attempt, answer included.
    #[arg(long, env = "ROTATOR_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub webhook_timeout: Duration,
}

impl WebhookArgs {
    /// `None` without a URL. `source` names this service in the events.
    pub fn into_settings(self, source: String) -> Result<Option<Settings>, ConfigError> {
        let Some(url) = self.webhook_url else {
            if self.webhook_secret.is_some() || self.webhook_secret_file.is_some() {
                return Err(ConfigError::Webhook(
                    "ROTATOR_WEBHOOK_SECRET needs ROTATOR_WEBHOOK_URL",
                ));
            }
            return Ok(None);
        };
        check_url(&url, "ROTATOR_WEBHOOK_URL")?;
        nonzero_duration(self.webhook_timeout, "ROTATOR_WEBHOOK_TIMEOUT")?;
        let secret = match (self.webhook_secret, self.webhook_secret_file) {
            (Some(secret), None) => secret,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map(|s| SecretString::from(s.trim().to_owned()))
                .map_err(|_| ConfigError::File("ROTATOR_WEBHOOK_SECRET_FILE", path))?,
            _ => {
                return Err(ConfigError::Webhook(
                    "ROTATOR_WEBHOOK_URL needs exactly one of ROTATOR_WEBHOOK_SECRET and ROTATOR_WEBHOOK_SECRET_FILE",
                ));
            }
        };
        Ok(Some(Settings {
            url,
            key: Arc::new(signing_key(&secret)?),
            source,
            timeout: self.webhook_timeout,
        }))
    }
}

/// The key bytes of a `whsec_<base64>` secret. The message never shows the secret.
fn signing_key(secret: &SecretString) -> Result<SecretBox<Vec<u8>>, ConfigError> {
    let bad = || {
        ConfigError::Webhook(
            "the webhook secret must be whsec_ followed by the base64 of 24 to 64 random bytes (the Standard Webhooks form)",
        )
    };
    let encoded = secret
        .expose_secret()
        .strip_prefix(PREFIX)
        .ok_or_else(bad)?;
    let key = STANDARD.decode(encoded).map_err(|_| bad())?;
    if !KEY_BYTES.contains(&key.len()) {
        return Err(bad());
    }
    Ok(SecretBox::new(Box::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_secrets_are_whsec_base64_of_24_to_64_bytes() {
        let ok = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        assert_eq!(
            signing_key(&SecretString::from(ok))
                .unwrap()
                .expose_secret(),
            &vec![7u8; 32]
        );
        for bad in [
            STANDARD.encode([7u8; 32]),
            format!("whsec_{}", STANDARD.encode([7u8; 8])),
            format!("whsec_{}", STANDARD.encode([7u8; 65])),
            "whsec_not base64!".to_owned(),
        ] {
            let err = signing_key(&SecretString::from(bad.clone())).unwrap_err();
            assert!(!err.to_string().contains(&bad), "{err}");
        }
    }
}
