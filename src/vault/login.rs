//! The Vault token, kept valid: a fixed token (`VAULT_TOKEN`, renewed at two thirds of its TTL
//! when it is renewable, as Vault's own tools do), a file read again whenever it changes
//! (`VAULT_TOKEN_FILE`, as Vault Agent writes it: the agent renews it), or a login (AppRole,
//! Kubernetes) renewed before it expires and made again when renewal fails or Vault refuses
//! the token. When each expires is in `secret_rotator_vault_token_expiry_seconds`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use reqwest::header::HeaderValue;
use secrecy::ExposeSecret;
use serde::{Deserialize, de::IgnoredAny};
use tokio::{sync::Mutex, time::Instant};
use tracing::{info, warn};
use vaultrs::api::{
    AuthInfo,
    auth::{
        approle::requests::LoginWithApproleRequest,
        kubernetes::requests::LoginWithKubernetesRequest,
    },
    token::requests::{LookupTokenSelfRequest, RenewTokenSelfRequest},
};

use super::{
    Token,
    transport::{Failure, Transport},
};
use crate::rotation::StoreError;

pub(super) struct Auth {
    source: Token,
    /// A fixed token's header: sent without taking the lock.
    fixed: Option<HeaderValue>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    header: Option<HeaderValue>,
    /// A token file's modification time when it was read.
    read_at: Option<SystemTime>,
    /// A login's token: when to renew it, and whether it can be.
    renew_at: Option<Instant>,
    renewable: bool,
}

impl Auth {
    pub(super) fn new(source: &Token) -> Result<Self, &'static str> {
        let mut state = State::default();
        let mut fixed = None;
        match source {
            Token::Static(token) => fixed = Some(header(token.expose_secret())?),
            Token::File(path) => {
                let (header, read_at) =
                    read_token(path).ok_or("VAULT_TOKEN_FILE cannot be read or holds no token")?;
                state.header = Some(header);
                state.read_at = read_at;
            }
            // Logged in at the first request.
            Token::AppRole { .. } | Token::Kubernetes { .. } => {}
        }
        Ok(Self {
            source: source.clone(),
            fixed,
            state: Mutex::new(state),
        })
    }

    /// The `X-Vault-Token` header to send now.
    pub(super) async fn header(&self, vault: &Transport) -> Result<HeaderValue, StoreError> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let mut state = self.state.lock().await;
        match &self.source {
            Token::Static(_) => {}
            Token::File(path) => {
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if modified.is_some() && modified != state.read_at {
                    match read_token(path) {
                        Some((header, read_at)) => {
                            info!(file = %path.display(), "the Vault token file changed; using its token");
                            state.header = Some(header);
                            state.read_at = read_at;
                        }
                        None => {
                            warn!(file = %path.display(), "the Vault token file changed but cannot be read; keeping the last token")
                        }
                    }
                }
            }
            Token::AppRole { .. } | Token::Kubernetes { .. } => {
                let due = state.renew_at.is_none_or(|at| Instant::now() >= at);
                if state.header.is_none() || due {
                    let renewed = match (&state.header, state.renewable) {
                        (Some(current), true) => renew(vault, current).await.ok(),
                        _ => None,
                    };
                    let (header, lease, renewable) = match renewed {
                        Some(renewed) => renewed,
                        None => self.login(vault).await?,
                    };
                    state.header = Some(header);
                    state.renewable = renewable;
                    // Renewed at two thirds of its lease, so that it never lapses in use.
                    state.renew_at = Some(Instant::now() + lease * 2 / 3);
                }
            }
        }
        state
            .header
            .clone()
            .ok_or_else(|| StoreError::Unavailable("no Vault token".into()))
    }

    /// Vault refused the token (403): forget a login's token, so that the next request logs in
    /// again. True when a retry may succeed.
    pub(super) async fn refused(&self) -> bool {
        match &self.source {
            Token::AppRole { .. } | Token::Kubernetes { .. } => {
                let mut state = self.state.lock().await;
                warn!("Vault refused the service's token; logging in again");
                *state = State::default();
                true
            }
            Token::Static(_) | Token::File(_) => false,
        }
    }

    /// Logs in with the configured method (vaultrs's login endpoints).
    async fn login(&self, vault: &Transport) -> Result<(HeaderValue, Duration, bool), StoreError> {
        let (sent, mount, method) = match &self.source {
            Token::AppRole {
                mount,
                role_id,
                secret_id_file,
            } => {
                let endpoint = LoginWithApproleRequest {
                    mount: mount.clone(),
                    role_id: role_id.clone(),
                    secret_id: read_trimmed(secret_id_file, "VAULT_SECRET_ID_FILE")?,
                };
                (vault.call("login", &endpoint, None).await, mount, "AppRole")
            }
            Token::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let endpoint = LoginWithKubernetesRequest {
                    mount: mount.clone(),
                    role: role.clone(),
                    jwt: read_trimmed(jwt_file, "VAULT_K8S_TOKEN_PATH")?,
                };
                (
                    vault.call("login", &endpoint, None).await,
                    mount,
                    "Kubernetes",
                )
            }
            Token::Static(_) | Token::File(_) => {
                return Err(StoreError::Unexpected("no login method".into()));
            }
        };
        let auth = sent
            .and_then(|answer| auth_info(answer.response.body()))
            .map_err(|e| match e {
                Failure::Refused {
                    code: 400 | 403, ..
                } => StoreError::PermissionDenied(format!("auth/{mount}/login ({method})")),
                Failure::Refused { code, .. } => {
                    StoreError::Unavailable(format!("{method} login answered HTTP {code}"))
                }
                Failure::Unreachable(cause) => {
                    StoreError::Unavailable(format!("{method} login failed: {cause}"))
                }
                Failure::Malformed => {
                    StoreError::Unexpected(format!("malformed {method} login answer"))
                }
            })?;
        info!(
            method,
            lease_secs = auth.lease_duration,
            "logged in to Vault"
        );
        let header =
            header(&auth.client_token).map_err(|e| StoreError::Unexpected(e.to_owned()))?;
        crate::metrics::vault_token_expires(
            (auth.lease_duration > 0)
                .then(|| SystemTime::now() + Duration::from_secs(auth.lease_duration)),
        );
        // A lease of 0 is a token that does not expire: renew it now and then anyway.
        let lease = Duration::from_secs(match auth.lease_duration {
            0 => 3600,
            secs => secs,
        });
        Ok((header, lease, auth.renewable))
    }
}

/// Renews a login's token (vaultrs's `renew-self` endpoint): its new lease and whether it can
/// be renewed again.
async fn renew(
    vault: &Transport,
    current: &HeaderValue,
) -> Result<(HeaderValue, Duration, bool), StoreError> {
    let endpoint = RenewTokenSelfRequest { increment: None };
    let auth = match vault.call("renew", &endpoint, Some(current)).await {
        Ok(answer) => auth_info(answer.response.body())
            .map_err(|_| StoreError::Unexpected("malformed renewal answer".into()))?,
        Err(Failure::Refused { code, .. }) => {
            warn!(status = code, "Vault refused to renew the service's token");
            return Err(StoreError::PermissionDenied("auth/token/renew-self".into()));
        }
        Err(_) => return Err(StoreError::Unavailable("token renewal failed".into())),
    };
    let lease = Duration::from_secs(auth.lease_duration.max(1));
    crate::metrics::vault_token_expires(Some(SystemTime::now() + lease));
    Ok((current.clone(), lease, auth.renewable))
}

/// What `auth/token/lookup-self` says of a token; never the token itself (vaultrs's answer type
/// holds it in a `String`, so the adapter reads only these).
#[derive(Deserialize)]
struct Lookup {
    /// Seconds left; 0 for a token that does not expire.
    ttl: u64,
    /// The TTL it was made with: a renewal that grants less has reached the token's max TTL.
    #[serde(default)]
    creation_ttl: u64,
    #[serde(default)]
    renewable: Option<bool>,
}

async fn lookup(vault: &Transport, token: &HeaderValue) -> Result<Lookup, StoreError> {
    let answer = vault
        .call("lookup", &LookupTokenSelfRequest {}, Some(token))
        .await
        .map_err(|e| match e {
            Failure::Refused { code, .. } => {
                StoreError::PermissionDenied(format!("auth/token/lookup-self (HTTP {code})"))
            }
            _ => StoreError::Unavailable("token lookup failed".into()),
        })?;
    serde_json::from_slice::<vaultrs::api::EndpointResult<Lookup>>(answer.response.body())
        .ok()
        .and_then(|envelope| envelope.data)
        .ok_or_else(|| StoreError::Unexpected("malformed token lookup answer".into()))
}

impl Auth {
    /// Keeps a fixed token alive for the process's life, as Vault's own tools do: looked up at
    /// start, renewed at two thirds of its TTL while it is renewable; one that cannot be (not
    /// renewable, at its max TTL) is logged once at WARN with when it expires. A token file is
    /// its writer's to renew (Vault Agent): looked up when it changes, for the expiry metric.
    /// Logins renew themselves as they are used.
    pub(super) async fn keep_alive(&self, vault: &Transport) {
        match &self.source {
            Token::Static(_) => {
                if let Some(token) = &self.fixed {
                    keep_fixed_alive(vault, token).await;
                }
            }
            Token::File(path) => {
                let mut looked_at = None;
                loop {
                    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                    if modified != looked_at {
                        let token = read_token(path).map(|(h, _)| h);
                        if let Some(Ok(found)) = match &token {
                            Some(t) => Some(lookup(vault, t).await),
                            None => None,
                        } {
                            crate::metrics::vault_token_expires(expires(found.ttl));
                            looked_at = modified;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
            Token::AppRole { .. } | Token::Kubernetes { .. } => {}
        }
        std::future::pending::<()>().await;
    }
}

/// When a token with `ttl` seconds left expires; `None` when it does not (ttl 0).
fn expires(ttl: u64) -> Option<SystemTime> {
    (ttl > 0).then(|| SystemTime::now() + Duration::from_secs(ttl))
}

async fn keep_fixed_alive(vault: &Transport, token: &HeaderValue) {
    let retry = Duration::from_secs(5);
    let found = loop {
        match lookup(vault, token).await {
            Ok(found) => break found,
            Err(e) => {
                warn!(error = %e, "could not look the Vault token up; trying again");
                tokio::time::sleep(retry).await;
            }
        }
    };
    let Some(mut expires_at) = expires(found.ttl) else {
        crate::metrics::vault_token_expires(None);
        return;
    };
    crate::metrics::vault_token_expires(Some(expires_at));
    let at = humantime::format_rfc3339_seconds(expires_at);
    if found.renewable != Some(true) {
        warn!(expires_at = %at, "VAULT_TOKEN is not renewable: Vault refuses it after it expires; give the service a renewable token, a token file kept by Vault Agent, or a login method");
        return;
    }
    info!(expires_at = %at, "VAULT_TOKEN is renewable: the service renews it at two thirds of its TTL");
    let full = Duration::from_secs(found.creation_ttl.max(found.ttl));
    let mut left = Duration::from_secs(found.ttl);
    let mut capped = false;
    loop {
        tokio::time::sleep(left * 2 / 3).await;
        match renew(vault, token).await {
            Ok((_, lease, renewable)) => {
                expires_at = SystemTime::now() + lease;
                left = lease;
                // Vault grants less than the token's TTL once its max TTL is near.
                if (lease < full || !renewable) && !capped {
                    capped = true;
                    warn!(expires_at = %humantime::format_rfc3339_seconds(expires_at), "VAULT_TOKEN reached its max TTL: renewing cannot keep it past then; give the service a new token before it expires");
                }
            }
            Err(e) => {
                let now = SystemTime::now();
                left = expires_at
                    .duration_since(now)
                    .unwrap_or_default()
                    .min(retry * 3);
                warn!(error = %e, expires_at = %humantime::format_rfc3339_seconds(expires_at), "could not renew VAULT_TOKEN; trying again");
                if left.is_zero() {
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }
}

/// The `auth` member of a login's or a renewal's answer. It holds the token in clear and
/// derives `Debug`: never logged.
fn auth_info(body: &[u8]) -> Result<AuthInfo, Failure> {
    serde_json::from_slice::<vaultrs::api::EndpointResult<IgnoredAny>>(body)
        .ok()
        .and_then(|envelope| envelope.auth)
        .ok_or(Failure::Malformed)
}

fn read_trimmed(path: &Path, name: &str) -> Result<String, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|_| {
        StoreError::PermissionDenied(format!("{name} {} cannot be read", path.display()))
    })?;
    Ok(text.trim().to_owned())
}

fn header(token: &str) -> Result<HeaderValue, &'static str> {
    let mut header = HeaderValue::from_str(token.trim())
        .map_err(|_| "the Vault token is not a valid HTTP header value")?;
    header.set_sensitive(true);
    Ok(header)
}

fn read_token(path: &PathBuf) -> Option<(HeaderValue, Option<SystemTime>)> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some((header(text).ok()?, modified))
}
