//! Auth0's failures as the protocol's [`IssuerError`]: Management API error answers (read for
//! their errorCode, logged, never passed on), `Retry-After`, transport failures named by the
//! tenant's address and their cause, and which failures of a rotation hide its outcome.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Response, StatusCode, Url, header::HeaderMap};
use serde::Deserialize;
use tracing::{debug, warn};

use crate::rotation::{IssuerError, Reached, Transport};

/// The members of a Management API error body we act on. `message` is logged, never returned.
#[derive(Deserialize, Default)]
struct ApiErrorBody {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    message: Option<String>,
}

/// For rotate-secret, a failure after the request left may hide a committed rotation.
pub(super) fn ambiguous(err: IssuerError) -> IssuerError {
    match err {
        IssuerError::Unavailable { how, .. } if how.was_sent() => IssuerError::OutcomeUnknown(how),
        other => other,
    }
}

/// Maps a Management API error answer to a curated error; the body is read for its errorCode
/// only and logged without being passed on.
pub(super) async fn api_error(
    response: Response,
    scope: &'static str,
    rotating: bool,
) -> IssuerError {
    let status = response.status();
    let headers = response.headers().clone();
    let at = reached(response.url(), None);
    let body: ApiErrorBody = response.json().await.unwrap_or_default();
    let code = body.error_code.as_deref().unwrap_or("");
    debug!(%status, error_code = code, message = body.message.as_deref().unwrap_or(""), "Management API error");
    match status {
        StatusCode::NOT_FOUND => IssuerError::ClientNotFound,
        StatusCode::UNAUTHORIZED => {
            warn!(%status, "Auth0 rejected the service's Management API token");
            IssuerError::TokenRejected
        }
        StatusCode::FORBIDDEN if code == "operation_not_supported" && rotating => {
            IssuerError::ClientNotRotatable
        }
        StatusCode::FORBIDDEN => {
            warn!(%status, error_code = code, scope, "the service's Management API token lacks a scope");
            IssuerError::MissingScope(scope)
        }
        // The request has no body and a validated id: a 400 here is Auth0 refusing this client
        // (secret-less authentication).
        StatusCode::BAD_REQUEST if rotating => IssuerError::ClientNotRotatable,
        StatusCode::TOO_MANY_REQUESTS => IssuerError::RateLimited {
            retry_after: retry_after(&headers),
        },
        s if s.is_server_error() => IssuerError::Unavailable {
            how: Transport::ServerError(s.as_u16()),
            at,
        },
        s => IssuerError::Protocol(format!("Auth0 answered {s}")),
    }
}

/// How long to wait after a 429: `Retry-After` (seconds) when present, else `x-ratelimit-reset`
/// (epoch seconds) minus now; at least one second.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let wait = if let Some(secs) = number("retry-after") {
        Duration::from_secs(secs)
    } else {
        let reset = number("x-ratelimit-reset")?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        Duration::from_secs(reset.saturating_sub(now))
    };
    Some(wait.max(Duration::from_secs(1)))
}

/// A request that brought back no answer. Only a failed connect proves it was never sent.
pub(super) fn transport_error(err: reqwest::Error) -> IssuerError {
    let how = if err.is_timeout() {
        Transport::TimedOut
    } else if err.is_connect() {
        Transport::NotSent
    } else {
        Transport::Interrupted
    };
    let cause = (!err.is_timeout()).then(|| crate::upstream::root_cause(&err));
    IssuerError::Unavailable {
        how,
        at: err.url().map(|url| reached(url, cause)).unwrap_or_default(),
    }
}

/// Where a request went, for [`IssuerError::Unavailable`]: the origin only (the path names a
/// client).
pub(super) fn reached(url: &Url, cause: Option<String>) -> Box<Reached> {
    Box::new(Reached {
        origin: url.origin().ascii_serialization(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsent_rotations_are_definite_failures() {
        let unavailable = |how| IssuerError::Unavailable {
            how,
            at: Box::default(),
        };
        assert!(!ambiguous(unavailable(Transport::NotSent)).outcome_unknown());
        assert!(ambiguous(unavailable(Transport::TimedOut)).outcome_unknown());
        assert!(ambiguous(unavailable(Transport::ServerError(502))).outcome_unknown());
        assert!(!ambiguous(IssuerError::ClientNotFound).outcome_unknown());
    }

    #[test]
    fn retry_after_prefers_retry_after_then_reset() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        h.insert("x-ratelimit-reset", (now + 7).to_string().parse().unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(
            wait >= Duration::from_secs(6) && wait <= Duration::from_secs(7),
            "{wait:?}"
        );
        h.insert("x-ratelimit-reset", (now - 5).to_string().parse().unwrap());
        assert_eq!(
            retry_after(&h),
            Some(Duration::from_secs(1)),
            "never less than a second"
        );
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }
}
