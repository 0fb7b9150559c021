//! The piece of work an upstream request belongs to: who waits for it and until when, carried
//! with the work as a Tokio task-local (like a span), so that the protocol's ports need not pass
//! it. What Auth0's rate-limit governor needs to decide whether to wait for its budget or refuse
//! at once. No HTTP here: the protocol sets it, the adapters read it.

use std::future::Future;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    pub priority: Priority,
    /// The caller's deadline; none for work nobody waits on.
    pub deadline: Option<Instant>,
}

/// Who is waiting for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Priority {
    /// A caller waits for the answer (RotateSecret, CompleteRotation, GetRotationStatus).
    #[default]
    Interactive,
    /// Work nobody waits on (a timer's promotion, healing, scans): it leaves interactive
    /// calls a reserve and yields to them.
    Background,
}

impl Work {
    /// Work nobody waits on, to be done by `deadline` if there is one.
    pub fn background(deadline: Option<Instant>) -> Self {
        Self {
            priority: Priority::Background,
            deadline,
        }
    }
}

tokio::task_local! {
    static WORK: Work;
}

/// Runs `future` as `work`. A task spawned inside it starts without: pass [`current`] on.
pub async fn within<F: Future>(work: Work, future: F) -> F::Output {
    WORK.scope(work, future).await
}

/// The work the current task runs as (interactive, without deadline, outside any).
pub fn current() -> Work {
    WORK.try_with(|w| *w).unwrap_or_default()
}
