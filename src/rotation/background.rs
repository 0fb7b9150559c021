//! The one way to start work nobody waits for: the scheduler's rotations, the timer's
//! promotions, a batch's rotations and the reconciler's passes. Such work runs at background
//! priority (it leaves callers their reserve of Auth0's budget, `work::Priority`), each attempt
//! within a deadline of its own, audited as the caller it acts for, and is tried again while
//! Auth0's budget or this replica's rotation slots have no room for it.

use std::time::Duration;

use tokio::time::Instant;
use tracing::Span;

use super::error::{IssuerErrorKind, RotationError};
use crate::{
    audit::Origin,
    work::{self, Work},
};

/// The caller the service's own rotations and promotions are audited as.
pub const SCHEDULER_CALLER: &str = "scheduler";

/// Whom the promotions a staged rotation's `promote_after` starts are audited as: its own actor,
/// with the rotation's original caller and reason carried along.
pub const PROMOTION_TIMER_CALLER: &str = "promotion-timer";

/// How often one piece of work is tried while there is no room for it.
const ATTEMPTS: u32 = 5;
/// How long it waits for room when Auth0 does not say.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// Work nobody waits for.
pub(super) struct Background {
    /// Whom it is audited as.
    pub origin: Origin,
    /// How long each attempt may wait for Auth0's budget and the client's lease.
    pub deadline: Duration,
}

impl Background {
    /// The service's own work as `caller`, in a trace of its own that `span` starts (as a
    /// caller's RPC would).
    pub(super) fn own(caller: &'static str, span: &Span, deadline: Duration) -> Self {
        Self {
            origin: Origin {
                caller: Some(caller.into()),
                peer: None,
                trace_id: crate::trace::start(span),
                on_behalf_of: None,
                service_actor: Some(caller),
            },
            deadline,
        }
    }

    /// Runs `attempt` (given the origin and its deadline) at background priority; again, up to
    /// five times in all, while it found no room (after Auth0's `retry-after`, or a second).
    pub(super) async fn run<T, F>(
        &self,
        mut attempt: impl FnMut(Origin, Instant) -> F,
    ) -> Result<T, RotationError>
    where
        F: Future<Output = Result<T, RotationError>>,
    {
        let mut attempts = 1;
        loop {
            let deadline = Instant::now() + self.deadline;
            let result = work::within(
                Work::background(Some(deadline)),
                attempt(self.origin.clone(), deadline),
            )
            .await;
            match &result {
                Err(e) if attempts < ATTEMPTS && no_room(e) => {
                    attempts += 1;
                    let wait = match e {
                        RotationError::Issuer(e) => e.retry_after(),
                        _ => None,
                    };
                    tokio::time::sleep(wait.unwrap_or(ROOM_WAIT)).await;
                }
                _ => return result,
            }
        }
    }
}

/// Runs `passes` (the reconciler's, the scheduler's: work without an end) at background
/// priority.
pub(super) async fn forever<F: Future>(passes: F) -> F::Output {
    work::within(Work::background(None), passes).await
}

/// Auth0's budget or this replica's rotation slots had no room in time: nothing was done.
pub(super) fn no_room(e: &RotationError) -> bool {
    match e {
        RotationError::Overloaded => true,
        RotationError::Issuer(e) => e.kind() == IssuerErrorKind::RateLimited,
        _ => false,
    }
}
