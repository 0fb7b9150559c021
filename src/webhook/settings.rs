//! What the webhook needs to know, built and validated by `config`.

use std::time::Duration;

use reqwest::Url;
use secrecy::SecretBox;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where notifications are POSTed.
    pub url: Url,
    /// The signing key: the bytes of a Standard Webhooks `whsec_<base64>` secret.
    pub key: std::sync::Arc<SecretBox<Vec<u8>>>,
    /// The CloudEvents `source` of every notification.
    pub source: String,
    /// One delivery attempt, answer included.
    pub timeout: Duration,
}
