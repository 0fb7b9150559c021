//! Who is calling, and may they: caller identity from a client certificate (mutual TLS) or a
//! bearer JWT, an authorization policy with reload, and a per-caller rate limit on rotations.
//! Everything here runs before any call to Auth0 or Vault.
//!
//! `tls` (listener TLS), `jwt` (bearer tokens), `policy` (who may call what) and `reload` (the
//! one mechanism that keeps all three current) feed the [`Gate`]; `setup` builds all of it from
//! [`Settings`].

pub mod identity;
pub mod jwt;
pub mod policy;
pub mod reload;
pub mod setup;
pub mod tls;

use std::{net::IpAddr, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use secrecy::SecretString;
use tonic::{Request, metadata::MetadataMap};

pub use identity::{CertificateIdentityError, certificate_identity};
pub use jwt::{JwksSource, JwtVerifier, TokenError};
pub use policy::{Policy, PolicyError, Rpc};
pub use reload::{Reloadable, Trigger};
pub use setup::{JwtSettings, Limits, Rate, Security, SecurityError, Settings, TlsSettings};
pub use tls::{ListenerTls, TlsFiles};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Typed (see `identity`): a certificate's SPIFFE ID (`spiffe://...`) or `dns:<name>`, or
    /// `jwt:<sub>` for a bearer token.
    pub id: String,
    pub via: CallerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    Certificate,
    BearerToken,
    /// Development mode: no authentication at all.
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no caller identity: present a client certificate or a bearer token")]
    NoIdentity,
    #[error(
        "a bearer token was presented, but this service checks none (it has no JWKS: ROTATOR_JWKS_FILE or ROTATOR_JWKS_URL); present a client certificate"
    )]
    TokensNotAccepted,
    #[error("{0}")]
    Certificate(#[from] CertificateIdentityError),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("{caller} may not call {rpc} for client {client_id}")]
    Denied {
        caller: String,
        rpc: Rpc,
        client_id: String,
    },
    #[error("{caller} has reached its rotation rate limit")]
    RateLimited {
        caller: String,
        retry_after: Duration,
    },
    #[error("{caller} has reached its GetRotationStatus rate limit")]
    StatusRateLimited {
        caller: String,
        retry_after: Duration,
    },
    /// Too many refused attempts from one address: refused without looking further.
    #[error("too many refused attempts from this address")]
    RefusalsThrottled { retry_after: Duration },
}

/// The classes of [`AuthError`] callers and auditors tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthErrorKind {
    Unauthenticated,
    PermissionDenied,
    RateLimited,
    /// Refused attempts from one address beyond their rate.
    Throttled,
}

impl AuthError {
    pub fn kind(&self) -> AuthErrorKind {
        match self {
            Self::NoIdentity | Self::TokensNotAccepted | Self::Certificate(_) | Self::Token(_) => {
                AuthErrorKind::Unauthenticated
            }
            Self::Denied { .. } => AuthErrorKind::PermissionDenied,
            Self::RateLimited { .. } | Self::StatusRateLimited { .. } => AuthErrorKind::RateLimited,
            Self::RefusalsThrottled { .. } => AuthErrorKind::Throttled,
        }
    }

    /// How long the caller should wait, for a rate limit.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::StatusRateLimited { retry_after, .. }
            | Self::RefusalsThrottled { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl AuthErrorKind {
    /// The audit trail's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::RateLimited => "rate_limited",
            Self::Throttled => "throttled",
        }
    }
}

/// How callers are authenticated and authorized.
pub enum Mode {
    /// Plaintext, no authentication, everything allowed: loopback development only.
    Insecure,
    Secure {
        /// Checks bearer tokens, when callers may use them.
        jwt: Option<Arc<JwtVerifier>>,
        policy: Arc<Reloadable<Policy, PolicyError>>,
    },
}

/// Authentication, authorization and the rate limits, in that order; and the brake on
/// refused attempts.
pub struct Gate {
    mode: Mode,
    rotations: DefaultKeyedRateLimiter<String>,
    status: DefaultKeyedRateLimiter<String>,
    refusals: DefaultKeyedRateLimiter<IpAddr>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(rate: Rate) -> DefaultKeyedRateLimiter<K> {
    RateLimiter::keyed(Quota::per_minute(rate.per_minute).allow_burst(rate.burst))
}

impl Gate {
    pub fn new(mode: Mode, limits: Limits) -> Self {
        Self {
            mode,
            rotations: limiter(limits.rotations),
            status: limiter(limits.status),
            refusals: limiter(limits.refusals),
        }
    }

    /// The caller of `request`: its client certificate if it presented one, else its bearer
    /// token.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller, AuthError> {
        let Mode::Secure { jwt, .. } = &self.mode else {
            return Ok(Caller {
                id: "anonymous".into(),
                via: CallerKind::Insecure,
            });
        };
        if let Some(certs) = request.peer_certs()
            && let Some(leaf) = certs.first()
        {
            return Ok(Caller {
                id: certificate_identity(leaf)?,
                via: CallerKind::Certificate,
            });
        }
        let Some(token) = bearer(request.metadata()) else {
            return Err(AuthError::NoIdentity);
        };
        let Some(jwt) = jwt else {
            return Err(AuthError::TokensNotAccepted);
        };
        Ok(Caller {
            id: identity::token_identity(&jwt.verify(&token)?),
            via: CallerKind::BearerToken,
        })
    }

    pub fn authorize(&self, caller: &Caller, rpc: Rpc, client_id: &str) -> Result<(), AuthError> {
        match &self.mode {
            Mode::Insecure => Ok(()),
            Mode::Secure { policy, .. } if policy.get().allows(&caller.id, rpc, client_id) => {
                Ok(())
            }
            Mode::Secure { .. } => Err(AuthError::Denied {
                caller: caller.id.clone(),
                rpc,
                client_id: client_id.to_owned(),
            }),
        }
    }

    /// Counts one rotation against the caller's rate.
    pub fn admit_rotation(&self, caller: &Caller) -> Result<(), AuthError> {
        check(&self.rotations, &caller.id).map_err(|retry_after| AuthError::RateLimited {
            caller: caller.id.clone(),
            retry_after,
        })
    }

    /// Counts one GetRotationStatus call against the caller's rate.
    pub fn admit_status(&self, caller: &Caller) -> Result<(), AuthError> {
        check(&self.status, &caller.id).map_err(|retry_after| AuthError::StatusRateLimited {
            caller: caller.id.clone(),
            retry_after,
        })
    }

    /// Forgets callers and addresses whose budgets are full again, so that the limiters' memory
    /// does not grow with every address that ever called.
    pub fn forget_idle(&self) {
        self.rotations.retain_recent();
        self.status.retain_recent();
        self.refusals.retain_recent();
    }

    /// Counts one refused attempt against the address it came from: beyond its rate, the
    /// refusal becomes a throttle (and costs no audit line of its own).
    pub fn count_refusal(&self, peer: Option<IpAddr>) -> Result<(), AuthError> {
        let Some(peer) = peer else { return Ok(()) };
        check(&self.refusals, &peer)
            .map_err(|retry_after| AuthError::RefusalsThrottled { retry_after })
    }
}

/// One request against `key`'s budget; how long to wait when there is none.
fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), Duration> {
    limiter.check_key(key).map_err(|not_until| {
        let now = governor::clock::DefaultClock::default().now();
        not_until.wait_time_from(now)
    })
}

/// `authorization: Bearer <token>`, held as a secret from the moment it is read.
fn bearer(metadata: &MetadataMap) -> Option<SecretString> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then(|| SecretString::from(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn rate(per_minute: u32, burst: u32) -> Rate {
        Rate {
            per_minute: NonZeroU32::new(per_minute).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn gate(refusals: Rate) -> Gate {
        Gate::new(
            Mode::Insecure,
            Limits {
                rotations: rate(60, 1),
                status: rate(60, 1),
                refusals,
            },
        )
    }

    #[test]
    fn refusals_are_throttled_per_address() {
        let gate = gate(rate(1, 2));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(gate.count_refusal(Some(a)).is_ok());
        assert!(gate.count_refusal(Some(a)).is_ok());
        let throttled = gate.count_refusal(Some(a)).unwrap_err();
        assert_eq!(throttled.kind(), AuthErrorKind::Throttled);
        assert!(throttled.retry_after().is_some());
        assert!(
            gate.count_refusal(Some(b)).is_ok(),
            "another address has its own budget"
        );
        assert!(
            gate.count_refusal(None).is_ok(),
            "no address, nothing to count against"
        );
        assert_eq!(gate.refusals.len(), 2);
    }

    #[test]
    fn addresses_are_forgotten_once_their_budget_is_full_again() {
        // 10,000 per second: full again a moment after one refusal.
        let gate = gate(rate(600_000, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        gate.count_refusal(Some(a)).unwrap();
        assert_eq!(gate.refusals.len(), 1);
        std::thread::sleep(Duration::from_millis(20));
        gate.forget_idle();
        assert_eq!(gate.refusals.len(), 0);
    }
}
