//! The Vault token, kept valid: a fixed token (`VAULT_TOKEN`), a file read again whenever it
//! changes (`VAULT_TOKEN_FILE`, as Vault Agent writes it), or a login (AppRole, Kubernetes)
//! renewed before it expires and made again when renewal fails or Vault refuses the token.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use reqwest::header::HeaderValue;
use secrecy::ExposeSecret;
use serde::de::IgnoredAny;
use tokio::{sync::Mutex, time::Instant};
use tracing::{info, warn};
use vaultrs::api::{
    AuthInfo,
    auth::{
        approle::requests::LoginWithApproleRequest,
        kubernetes::requests::LoginWithKubernetesRequest,
    },
    token::requests::RenewTokenSelfRequest,
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
            warn!(
                status = code,
                "Vault token renewal refused; logging in again"
            );
            return Err(StoreError::PermissionDenied("auth/token/renew-self".into()));
        }
        Err(_) => return Err(StoreError::Unavailable("token renewal failed".into())),
    };
    let lease = Duration::from_secs(auth.lease_duration.max(1));
    Ok((current.clone(), lease, auth.renewable))
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
