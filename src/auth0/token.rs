//! The Management API token: a static one, or one obtained by client credentials, cached and
//! renewed before it expires. Concurrent callers share one token request (single-flight).

use std::time::Duration;

use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::{sync::Mutex, time::Instant};
use tracing::{info, warn};

use super::{
    Credentials,
    errors::{reached, retry_after, transport_error},
};
use crate::rotation::{IssuerError, Transport};

pub(super) enum TokenSource {
    Static(SecretString),
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
        audience: String,
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
    pub(super) fn new(credentials: &Credentials) -> Self {
        match credentials {
            Credentials::StaticToken(token) => Self::Static(token.clone()),
            Credentials::ClientCredentials {
                client_id,
                client_secret,
                audience,
            } => Self::ClientCredentials {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                audience: audience.clone(),
                cache: Mutex::new(None),
            },
        }
    }

    /// Whether a rejected token can be replaced by a fresh one.
    pub(super) fn renewable(&self) -> bool {
        matches!(self, Self::ClientCredentials { .. })
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
        let Self::ClientCredentials {
            client_id,
            client_secret,
            audience,
            ..
        } = self
        else {
            unreachable!("only client credentials request tokens");
        };
        let request = http.post(url.clone()).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose_secret()),
            ("audience", audience),
        ]);
        let sent = crate::upstream::send("auth0", "token", request).await;
        let response = sent.map_err(transport_error)?;
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
