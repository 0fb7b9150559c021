//! The Management API's rate limit, spent deliberately. Auth0 limits a tenant with one token
//! bucket shared by everything that uses it (`x-ratelimit-limit` is its size,
//! `x-ratelimit-remaining` what is left); a request it has no token for is answered 429. The
//! governor keeps an estimate of that bucket and sends a request only when the estimate has a
//! token for it, otherwise it waits (within the caller's deadline) instead of provoking a 429.
//!
//! - Every answer's headers are the truth: the estimate is set to what Auth0 says is left,
//!   less this replica's requests still in flight (which Auth0 may not have counted yet).
//! - Between answers the bucket refills at the tenant's rate (`AUTH0_RATE_LIMIT_PER_SECOND`,
//!   or estimated from `x-ratelimit-reset`), less what others spend. What others spend is
//!   what an answer shows missing against what would be left had only this replica spent
//!   since the last answer, averaged over a few seconds: two replicas running one batch each
//!   settle on half the rate each.
//! - Background work (schedules, batches, drift scans) leaves `AUTH0_INTERACTIVE_RESERVE` of
//!   the bucket to interactive calls, which also go first while any waits. The reserve costs a
//!   batch nothing in the long run: the bucket refills at the same rate however full it is.
//! - A 429 (another tool spent the bucket) stops every request until `Retry-After` or
//!   `x-ratelimit-reset`.

use std::{sync::Mutex, time::Duration};

use reqwest::header::HeaderMap;
use tokio::{sync::Notify, time::Instant};

pub use crate::work::Priority;

/// How the governor spends the bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The tenant's refill rate, per second; `None`: estimated from `x-ratelimit-reset`.
    pub rate_per_second: Option<f64>,
    /// The share of the bucket background work leaves to interactive calls (0 to 1).
    pub interactive_reserve: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            rate_per_second: None,
            interactive_reserve: 0.5,
        }
    }
}

/// Before any answer: Auth0's lowest published limits (free tenants: 2 burst, 2 per second).
const FIRST_LIMIT: f64 = 2.0;
const FIRST_RATE: f64 = 2.0;
/// However much others seem to spend, this replica keeps a twentieth of the rate: it must go on
/// sending to learn anything.
const LEAST_SHARE: f64 = 0.05;
/// Others' spending is averaged over about this many seconds.
const OTHERS_WINDOW_SECS: f64 = 3.0;

pub struct Governor {
    budget: Budget,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// Size of the bucket.
    limit: f64,
    /// Tokens left now, this replica's requests in flight already taken out.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
    /// The tenant's refill rate.
    rate: f64,
    /// What others spend of it, per second.
    others: f64,
    /// When the last answer was counted, and what it said was left.
    observed: Option<(Instant, f64)>,
    /// This replica's answers since then.
    answers_since: f64,
    /// This replica's requests in flight, by the order they were sent.
    in_flight: std::collections::BTreeSet<u64>,
    sent: u64,
    interactive_waiting: u32,
    /// After a 429: nothing is sent before.
    paused_until: Option<Instant>,
}

impl State {
    fn effective_rate(&self) -> f64 {
        (self.rate - self.others).max(self.rate * LEAST_SHARE)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.effective_rate()).min(self.limit);
        self.at = now;
    }
}

/// A request the governor let through; [`Permit::answered`] counts its answer. Dropped
/// without an answer (no response), its token stays spent: Auth0 may have counted it.
pub struct Permit<'a> {
    governor: &'a Governor,
    /// Its place in the order requests were sent.
    seq: u64,
    answered: bool,
}

impl Governor {
    pub fn new(budget: Budget) -> Self {
        let rate = budget.rate_per_second.unwrap_or(FIRST_RATE);
        Self {
            budget,
            state: Mutex::new(State {
                limit: FIRST_LIMIT,
                tokens: FIRST_LIMIT,
                at: Instant::now(),
                rate,
                others: 0.0,
                observed: None,
                answers_since: 0.0,
                in_flight: std::collections::BTreeSet::new(),
                sent: 0,
                interactive_waiting: 0,
                paused_until: None,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a request may be sent. `Err` is how long it would still have to wait when
    /// that is past `deadline`: the caller is told to come back then, and nothing is sent.
    pub async fn acquire(
        &self,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Result<Permit<'_>, Duration> {
        let mut counted = false;
        let result = loop {
            let changed = self.changed.notified();
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                s.refill(now);
                let floor = match priority {
                    Priority::Interactive => 0.0,
                    Priority::Background => (s.limit * self.budget.interactive_reserve).floor(),
                };
                let yield_to_callers =
                    priority == Priority::Background && s.interactive_waiting > 0;
                let paused = s.paused_until.filter(|until| *until > now);
                if paused.is_none() && !yield_to_callers && s.tokens >= floor + 1.0 {
                    s.tokens -= 1.0;
                    s.sent += 1;
                    let seq = s.sent;
                    s.in_flight.insert(seq);
                    break Ok(Permit {
                        governor: self,
                        seq,
                        answered: false,
                    });
                }
                if priority == Priority::Interactive && !counted {
                    s.interactive_waiting += 1;
                    counted = true;
                }
                let refill = Duration::from_secs_f64(
                    ((floor + 1.0 - s.tokens).max(0.0) / s.effective_rate()).min(60.0),
                );
                match paused {
                    Some(until) => refill.max(until - now),
                    None => refill,
                }
            };
            let wake = Instant::now() + wait.max(Duration::from_millis(1));
            if deadline.is_some_and(|d| wake > d) && !wait.is_zero() {
                break Err(wait);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = changed => {}
            }
        };
        if counted {
            self.lock().interactive_waiting -= 1;
            self.changed.notify_waiters();
        }
        result
    }

    fn answered(&self, seq: u64, status: u16, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let mut s = self.lock();
        let now = Instant::now();
        s.refill(now);
        s.in_flight.remove(&seq);
        if status == 429 {
            let wait = super::errors::retry_after(headers).unwrap_or(Duration::from_secs(1));
            s.paused_until = Some(now + wait);
            s.tokens = s.tokens.min(0.0);
        }
        if let (Some(limit), Some(remaining)) =
            (number("x-ratelimit-limit"), number("x-ratelimit-remaining"))
        {
            s.limit = limit.max(1.0);
            // Requests sent after this one may not have been counted yet: assume they were not.
            let uncounted = s.in_flight.range(seq..).count() as f64;
            let truth = remaining - uncounted;
            s.answers_since += 1.0;
            if let Some((last, last_truth)) = s.observed {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                if dt > 0.0 {
                    // What would be left had nobody else spent anything since the last
                    // answer; what is missing, others spent.
                    let expected = (last_truth + dt * s.rate).min(s.limit) - s.answers_since;
                    let spent = ((expected - truth) / dt).clamp(0.0, s.rate);
                    let weight = 1.0 - (-dt / OTHERS_WINDOW_SECS).exp();
                    s.others += weight * (spent - s.others);
                }
            }
            s.answers_since = 0.0;
            s.tokens = truth.min(s.limit);
            s.observed = Some((now, truth));
            if self.budget.rate_per_second.is_none()
                && let Some(reset) = number("x-ratelimit-reset")
                && let Some(rate) = rate_from_reset(s.limit, remaining, reset)
            {
                s.rate = 0.8 * s.rate + 0.2 * rate;
            }
        }
        drop(s);
        self.changed.notify_waiters();
    }
}

impl Permit<'_> {
    /// Counts the answer's status and `x-ratelimit-*` headers.
    pub fn answered(mut self, status: u16, headers: &HeaderMap) {
        self.answered = true;
        self.governor.answered(self.seq, status, headers);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.governor.lock().in_flight.remove(&self.seq);
        }
    }
}

/// The refill rate `x-ratelimit-reset` implies, read as the time (UNIX seconds) the bucket is
/// full again: what is missing, over the time to then. `None` when the bucket is full or the
/// reset has passed (nothing to learn).
fn rate_from_reset(limit: f64, remaining: f64, reset: f64) -> Option<f64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let missing = limit - remaining;
    let until = reset - now;
    (missing >= 1.0 && until > 0.0).then(|| missing / until.max(0.5))
}

#[cfg(test)]
mod tests;
