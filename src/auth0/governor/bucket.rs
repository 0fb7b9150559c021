//! One of Auth0's token buckets as this replica estimates it (see the module above).

use std::{sync::Mutex, time::Duration};

use reqwest::header::HeaderMap;
use tokio::{sync::Notify, time::Instant};

use super::{Limit, Priority};

/// Before any answer: Auth0's lowest published limits (free tenants: 2 burst, 2 per second).
const FIRST_LIMIT: f64 = 2.0;
const FIRST_RATE: f64 = 2.0;
/// However much others seem to spend, this replica keeps a twentieth of the rate: it must go on
/// sending to learn anything.
const LEAST_SHARE: f64 = 0.05;
/// Others' spending is averaged over about this many seconds.
const OTHERS_WINDOW_SECS: f64 = 3.0;

pub struct Bucket {
    /// The refill rate the plan sets, if known; otherwise estimated from `x-ratelimit-reset`.
    known_rate: Option<f64>,
    /// The share of the bucket background work leaves to interactive calls.
    reserve: f64,
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
    /// What answers' `x-ratelimit-reset` said was missing, and how long until it is back,
    /// each a decaying sum: the rate is their ratio.
    reset_samples: (f64, f64),
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
    bucket: &'a Bucket,
    /// Its place in the order requests were sent.
    seq: u64,
    answered: bool,
}

impl Bucket {
    /// A bucket of the plan's `limit` where known, else of Auth0's lowest published one until
    /// the first answer tells.
    pub fn new(limit: Option<Limit>, reserve: f64) -> Self {
        let rate = limit.map_or(FIRST_RATE, |l| l.per_second);
        let size = limit.and_then(|l| l.burst).map_or(FIRST_LIMIT, f64::from);
        Self {
            known_rate: limit.map(|l| l.per_second),
            reserve,
            state: Mutex::new(State {
                limit: size,
                tokens: size,
                at: Instant::now(),
                rate,
                others: 0.0,
                observed: None,
                answers_since: 0.0,
                in_flight: std::collections::BTreeSet::new(),
                sent: 0,
                interactive_waiting: 0,
                paused_until: None,
                reset_samples: (0.0, 0.0),
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
                    Priority::Background => (s.limit * self.reserve).floor(),
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
                        bucket: self,
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

    /// Counts an answer: that of the request sent `seq`th, or (`None`) of a request this
    /// bucket did not let through (sent before the buckets were told apart).
    pub(super) fn answered(&self, seq: Option<u64>, status: u16, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let mut s = self.lock();
        let now = Instant::now();
        s.refill(now);
        if let Some(seq) = seq {
            s.in_flight.remove(&seq);
        }
        if status == 429 {
            let wait = crate::auth0::errors::retry_after(headers).unwrap_or(Duration::from_secs(1));
            s.paused_until = Some(now + wait);
            s.tokens = s.tokens.min(0.0);
        }
        if let (Some(limit), Some(remaining)) =
            (number("x-ratelimit-limit"), number("x-ratelimit-remaining"))
        {
            s.limit = limit.max(1.0);
            // Requests sent after this one may not have been counted yet: assume they were not.
            let uncounted = s.in_flight.range(seq.unwrap_or(0)..).count() as f64;
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
            // A 429's reset is when the next token comes, not when the bucket is full again.
            if self.known_rate.is_none()
                && status != 429
                && let Some(reset) = number("x-ratelimit-reset")
                && let Some((missing, until)) = reset_sample(s.limit, remaining, reset)
            {
                // A ratio of sums, not a mean of ratios: a short wait's ratio would weigh
                // far more than a long one's and the rate come out too high.
                let (m, u) = s.reset_samples;
                s.reset_samples = (0.8 * m + missing, 0.8 * u + until);
                s.rate = s.reset_samples.0 / s.reset_samples.1;
            }
        }
        drop(s);
        self.changed.notify_waiters();
    }
}

impl<'a> Permit<'a> {
    /// Counts the answer's status and `x-ratelimit-*` headers.
    pub fn answered(mut self, status: u16, headers: &HeaderMap) {
        self.answered = true;
        self.bucket.answered(Some(self.seq), status, headers);
    }

    pub fn bucket(&self) -> &'a Bucket {
        self.bucket
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.bucket.lock().in_flight.remove(&self.seq);
        }
    }
}

/// What `x-ratelimit-reset` says of the refill rate, read as the whole second (UNIX) by which
/// the bucket is full again: what is missing, and the time to then. Both are rounded: the
/// bucket holds half a token more than `remaining` on average, and is full half a second
/// before `reset`. `None` when the bucket is full or the reset has passed (nothing to learn).
fn reset_sample(limit: f64, remaining: f64, reset: f64) -> Option<(f64, f64)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let missing = limit - remaining - 0.5;
    let until = reset - now - 0.5;
    (missing >= 0.5 && until > -0.5).then_some((missing, until.max(0.25)))
}
