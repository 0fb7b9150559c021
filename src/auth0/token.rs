//! The Management API token: a static one, or one obtained by client credentials, cached and
//! renewed before it expires. Concurrent callers share one token request (single-flight).

use std::{
    path::Path,
    sync::{Arc, OnceLock},
    time::Duration,
};

use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::{sync::Mutex, time::Instant};
use tracing::{info, warn};

use super::{
    CredentialSource, Credentials,
    errors::{reached, retry_after, transport_error},
};
use crate::rotation::{IssuerError, KeyPair, OwnCredential, OwnCredentialStore, Transport};

// One per process: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum TokenSource {
    Static(SecretString),
    ClientCredentials {
        client_id: String,
        source: CredentialSource,
        audience: String,
        /// The tenant's domain: a client assertion is addressed to `https://{domain}/`.
        domain: String,
        /// Where a credential in Vault is read from (set once the Vault adapter exists).
        store: OnceLock<Arc<dyn OwnCredentialStore>>,
        /// Held across the token request: concurrent callers wait for the one request in flight
        /// and then share its answer.
        cache: Mutex<Option<CachedToken>>,
    },
}

pub(super) struct CachedToken {
    token: SecretString,
    renew_at: Instant,
}

/// What start-up learned about the service's Management API token.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Scopes granted, when Auth0 said (static tokens are opaque to us).
    pub scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    expires_in: Option<u64>,
    scope: Option<String>,
}

impl TokenSource {
    pub(super) fn new(credentials: &Credentials, domain: &str) -> Self {
        match credentials {
            Credentials::StaticToken(token) => Self::Static(token.clone()),
            Credentials::ClientCredentials {
                client_id,
                source,
                audience,
            } => Self::ClientCredentials {
                client_id: client_id.clone(),
                source: source.clone(),
                audience: audience.clone(),
                domain: domain.to_owned(),
                store: OnceLock::new(),
                cache: Mutex::new(None),
            },
        }
    }

    /// Where a credential kept in Vault is read from.
    pub(super) fn read_from(&self, store: Arc<dyn OwnCredentialStore>) {
        if let Self::ClientCredentials { store: slot, .. } = self {
            let _ = slot.set(store);
        }
    }

    /// The service's own credentials as its source holds them now, in the order to present
    /// them: the one in use, then (Vault, during a self-rotation) the next and the previous.
    pub(super) async fn presented(&self) -> Result<Vec<OwnCredential>, IssuerError> {
        let Self::ClientCredentials { source, store, .. } = self else {
            return Err(IssuerError::OwnCredential("a static token has none".into()));
        };
        let unreadable =
            |what: &Path| IssuerError::OwnCredential(format!("{} cannot be read", what.display()));
        match source {
            CredentialSource::Secret(secret) => Ok(vec![OwnCredential::Secret(secret.clone())]),
            CredentialSource::SecretFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|_| unreadable(path))?;
                match text.trim() {
                    "" => Err(IssuerError::OwnCredential(format!(
                        "{} is empty",
                        path.display()
                    ))),
                    secret => Ok(vec![OwnCredential::Secret(SecretString::from(
                        secret.to_owned(),
                    ))]),
                }
            }
            CredentialSource::KeyFile {
                path,
                key_id,
                algorithm,
            } => {
                let pem = std::fs::read_to_string(path).map_err(|_| unreadable(path))?;
                Ok(vec![OwnCredential::Key {
                    private_key: SecretString::from(pem),
                    key_id: key_id.clone(),
                    algorithm: *algorithm,
                }])
            }
            CredentialSource::Vault(path) => {
                let store = store.get().ok_or_else(|| {
                    IssuerError::OwnCredential("the Vault store is not set up".into())
                })?;
                store
                    .own_credentials(path)
                    .await
                    .map_err(|e| IssuerError::OwnCredential(format!("Vault {path}: {e}")))
            }
        }
    }

    /// Whether a rejected token can be replaced by a fresh one.
    pub(super) fn renewable(&self) -> bool {
        matches!(self, Self::ClientCredentials { .. })
    }

    /// A client-credentials token request presenting `credential` as the service's own.
    fn request_with(
        &self,
        http: &reqwest::Client,
        url: &Url,
        credential: &OwnCredential,
    ) -> Result<reqwest::RequestBuilder, IssuerError> {
        let Self::ClientCredentials {
            client_id,
            audience,
            domain,
            ..
        } = self
        else {
            return Err(IssuerError::OwnCredential("a static token has none".into()));
        };
        Ok(match credential {
            OwnCredential::Secret(secret) => http.post(url.clone()).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret.expose_secret()),
                ("audience", audience),
            ]),
            OwnCredential::Key {
                private_key,
                key_id,
                algorithm,
            } => {
                let assertion = KeyPair::from_private_pem(private_key)
                    .and_then(|key| key.assertion(client_id, domain, *algorithm, key_id.as_deref()))
                    .map_err(|e| IssuerError::OwnCredential(e.to_string()))?;
                http.post(url.clone()).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_assertion_type", super::credentials::ASSERTION_TYPE),
                    ("client_assertion", assertion.expose_secret()),
                    ("audience", audience),
                ])
            }
        })
    }

    /// Whether Auth0 gives a Management API token for `credential` as the service's own: a
    /// self-rotation proves its new credential so before the old one is retired. Nothing is
    /// cached.
    pub(super) async fn proves(
        &self,
        http: &reqwest::Client,
        url: &Url,
        credential: &OwnCredential,
    ) -> Result<bool, IssuerError> {
        let request = self.request_with(http, url, credential)?;
        let response = crate::upstream::send("auth0", "prove-credential", request)
            .await
            .map_err(transport_error)?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(false),
            StatusCode::TOO_MANY_REQUESTS => Err(IssuerError::RateLimited {
                retry_after: retry_after(response.headers()),
            }),
            s if s.is_server_error() => Err(IssuerError::Unavailable {
                how: Transport::ServerError(s.as_u16()),
                at: reached(url, None),
            }),
            s => Err(IssuerError::Protocol(format!(
                "token endpoint answered {s}"
            ))),
        }
    }

    /// Obtains a token now (start-up check) and reports what it grants.
    pub(super) async fn check(
        &self,
        http: &reqwest::Client,
        url: &Url,
    ) -> Result<TokenInfo, IssuerError> {
        match self {
            Self::Static(token) => Ok(TokenInfo {
                scopes: jwt_scopes(token),
            }),
            Self::ClientCredentials { cache, .. } => {
                let mut cache = cache.lock().await;
                let (token, scopes) = self.request(http, url).await?;
                *cache = Some(token);
                Ok(TokenInfo { scopes })
            }
        }
    }

    pub(super) async fn token(
        &self,
        http: &reqwest::Client,
        url: &Url,
    ) -> Result<SecretString, IssuerError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::ClientCredentials { cache, .. } => {
                let mut cache = cache.lock().await;
                if let Some(cached) = cache.as_ref().filter(|c| Instant::now() < c.renew_at) {
                    return Ok(cached.token.clone());
                }
                let (fresh, _) = self.request(http, url).await?;
                let token = fresh.token.clone();
                *cache = Some(fresh);
                Ok(token)
            }
        }
    }

    pub(super) async fn forget(&self) {
        if let Self::ClientCredentials { cache, .. } = self {
            cache.lock().await.take();
        }
    }

    async fn request(
        &self,
        http: &reqwest::Client,
        url: &Url,
    ) -> Result<(CachedToken, Option<Vec<String>>), IssuerError> {
        // The credential in use first; a self-rotation under way may have moved Auth0 to the
        // next one (or still accept the one before) a moment before its source says so.
        let candidates = self.presented().await?;
        let last = candidates.len().saturating_sub(1);
        let mut response = None;
        for (n, credential) in candidates.iter().enumerate() {
            let request = self.request_with(http, url, credential)?;
            let sent = crate::upstream::send("auth0", "token", request)
                .await
                .map_err(transport_error)?;
            if sent.status() != StatusCode::UNAUTHORIZED || n == last {
                response = Some(sent);
                break;
            }
            info!(
                "Auth0 refused the service's credential in use; presenting the next one its source holds"
            );
        }
        let response = response
            .ok_or_else(|| IssuerError::OwnCredential("its source holds no credential".into()))?;
        let status = response.status();
        if status.is_success() {
            crate::metrics::token_refreshed();
        }
        if !status.is_success() {
            let headers = response.headers().clone();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let code = body.get("error").and_then(|v| v.as_str()).unwrap_or("");
            warn!(%status, error_code = code, "Auth0 refused the token request");
            return Err(match status {
                StatusCode::UNAUTHORIZED => IssuerError::CredentialsRejected,
                StatusCode::FORBIDDEN => {
                    IssuerError::AccessDenied("check the client grant and the audience")
                }
                StatusCode::TOO_MANY_REQUESTS => IssuerError::RateLimited {
                    retry_after: retry_after(&headers),
                },
                s if s.is_server_error() => IssuerError::Unavailable {
                    how: Transport::ServerError(s.as_u16()),
                    at: reached(url, None),
                },
                s => IssuerError::Protocol(format!("token endpoint answered {s}")),
            });
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|_| IssuerError::Protocol("token answer is not the expected JSON".into()))?;
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(86_400));
        // Renew well before expiry so a token never dies in the middle of a rotation.
        let margin = (lifetime / 10).min(Duration::from_secs(300));
        let scopes = body
            .scope
            .map(|s| s.split_whitespace().map(str::to_owned).collect());
        info!(
            expires_in = lifetime.as_secs(),
            "obtained a Management API token"
        );
        Ok((
            CachedToken {
                token: body.access_token,
                renew_at: Instant::now() + lifetime.saturating_sub(margin),
            },
            scopes,
        ))
    }
}

/// The `scope` claim of a static Management API token (a JWT), read without verifying it: it
/// is our own token, and this only decides what to warn about at start-up.
fn jwt_scopes(token: &SecretString) -> Option<Vec<String>> {
    use base64::Engine;
    let payload = token.expose_secret().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let scope = claims.get("scope")?.as_str()?;
    Some(scope.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_token_scopes_come_from_its_claims() {
        use base64::Engine;
        let claims = br#"{"scope":"read:clients update:client_keys","sub":"x@clients"}"#;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
        let token = SecretString::from(format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig"));
        assert_eq!(
            jwt_scopes(&token),
            Some(vec![
                "read:clients".to_owned(),
                "update:client_keys".to_owned()
            ])
        );
        assert_eq!(jwt_scopes(&SecretString::from("opaque")), None);
    }
}
