use std::time::Duration;

/// What went wrong talking to Auth0. Messages are ours: an upstream body never ends up here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Auth0Error {
    #[error("Auth0 has no client with this id")]
    ClientNotFound,
    #[error(
        "Auth0 refused to rotate this client: it authenticates with private_key_jwt or mTLS, which have no secret"
    )]
    ClientNotRotatable,
    #[error(
        "Auth0 rejected the service's own client credentials (AUTH0_CLIENT_ID / AUTH0_CLIENT_SECRET)"
    )]
    CredentialsRejected,
    #[error("Auth0 did not grant the service's application access to the Management API ({0})")]
    AccessDenied(&'static str),
    #[error("Auth0 rejected the service's Management API token")]
    TokenRejected,
    #[error("the service's Management API token lacks the {0} scope")]
    MissingScope(&'static str),
    #[error("Auth0 rate limit reached")]
    RateLimited { retry_after: Option<Duration> },
    #[error("Auth0 is unavailable: {0}")]
    Unavailable(String),
    /// The request may have been carried out: its answer was lost (timeout, reset, 5xx).
    #[error("Auth0's answer was lost ({0}); the rotation may have happened")]
    OutcomeUnknown(String),
    #[error("Auth0 answered in an unexpected way: {0}")]
    Protocol(String),
}

impl Auth0Error {
    /// Whether Auth0 may have carried the request out although it did not say so.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown(_))
    }
}
