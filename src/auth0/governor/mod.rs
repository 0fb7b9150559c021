//! The Management API's rate limits, spent deliberately. Auth0 limits a tenant with token
//! buckets (`x-ratelimit-limit` is a bucket's size, `x-ratelimit-remaining` what is left); a
//! request its bucket has no token for is answered 429. Which bucket depends on the plan:
//! Enterprise and Free tenants have one for the whole Management API; Essentials and
//! Professional tenants have one for reading clients (`GET /api/v2/clients`, `GET
//! /api/v2/clients/{id}`: burst 5, 100 a minute) and one for every other endpoint combined
//! (burst 10, 150 a minute). The governor keeps an estimate of each bucket ([`Bucket`]) and sends
//! a request only when its own group's bucket has a token for it, otherwise it waits (within
//! the caller's deadline) instead of provoking a 429.
//!
//! - Every answer's headers are the truth about its group's bucket: the estimate is set to what
//!   Auth0 says is left, less this replica's requests still in flight (which Auth0 may not
//!   have counted yet).
//! - On a one-bucket tenant both groups' headers describe the same bucket; nothing in a header
//!   names it. The groups share one estimate until their answers report different sizes, or
//!   `AUTH0_RATE_LIMITS` names the groups' limits, and from then on each has its own.
//! - Between answers a bucket refills at its rate (`AUTH0_RATE_LIMITS`, or estimated from
//!   `x-ratelimit-reset`), less what others spend. What others spend is what an answer shows
//!   missing against what would be left had only this replica spent since the last answer,
//!   averaged over a few seconds: two replicas running one batch each settle on half the rate
//!   each.
//! - Background work (schedules, batches, drift scans) leaves `AUTH0_INTERACTIVE_RESERVE` of
//!   every bucket to interactive calls, which also go first while any waits. The reserve costs
//!   a batch nothing in the long run: a bucket refills at the same rate however full it is.
//! - A 429 (another tool spent the bucket) stops every request of its group until
//!   `Retry-After` or `x-ratelimit-reset`.

mod bucket;

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reqwest::{Method, header::HeaderMap};
use tokio::time::Instant;
use tracing::info;

pub use crate::work::Priority;
use bucket::Bucket;

/// The endpoint groups Auth0's plans give buckets of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateGroup {
    /// Reading clients: the list and one client (Essentials' and Professional's "Read Clients").
    ClientsRead,
    /// Every other Management API endpoint (rotate-secret, PATCH, credentials).
    Other,
}

impl RateGroup {
    /// The group of a request, by its method and the operation it names in logs and traces.
    pub fn of(method: &Method, operation: &str) -> Self {
        match (method, operation) {
            (&Method::GET, "list-clients" | "get-client") => Self::ClientsRead,
            _ => Self::Other,
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Other => 0,
            Self::ClientsRead => 1,
        }
    }
}

/// A bucket's size and refill rate, as a plan publishes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// The bucket's size; `None`: learnt from `x-ratelimit-limit`.
    pub burst: Option<u32>,
    pub per_second: f64,
}

/// The plan's limits, where the operator knows them (`AUTH0_RATE_LIMITS`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Limits {
    /// Not said: one bucket, its size and rate learnt from Auth0's answers, until answers show
    /// the groups apart.
    #[default]
    Learnt,
    /// One bucket for the whole Management API; the rate where known (Free, Enterprise).
    OneBucket(Option<Limit>),
    /// A bucket per group; each limit where known (Essentials, Professional).
    PerGroup {
        clients_read: Option<Limit>,
        other: Option<Limit>,
    },
}

/// How the governor spends the buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub limits: Limits,
    /// The share of each bucket background work leaves to interactive calls (0 to 1).
    pub interactive_reserve: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            limits: Limits::Learnt,
            interactive_reserve: 0.5,
        }
    }
}

pub struct Governor {
    /// By [`RateGroup::index`]: `Other`'s is also the one bucket of a one-bucket tenant.
    buckets: [Bucket; 2],
    /// Whether the groups have buckets of their own.
    apart: AtomicBool,
    /// The size each group's answers last reported.
    sizes: Mutex<[Option<u64>; 2]>,
}

/// A request the governor let through; [`Permit::answered`] counts its answer.
pub struct Permit<'a> {
    governor: &'a Governor,
    group: RateGroup,
    inner: bucket::Permit<'a>,
}

impl Governor {
    pub fn new(budget: Budget) -> Self {
        let (clients_read, other, apart) = match budget.limits {
            Limits::Learnt => (None, None, false),
            Limits::OneBucket(limit) => (None, limit, false),
            Limits::PerGroup {
                clients_read,
                other,
            } => (clients_read, other, true),
        };
        let reserve = budget.interactive_reserve;
        Self {
            buckets: [
                Bucket::new(other, reserve),
                Bucket::new(clients_read, reserve),
            ],
            apart: AtomicBool::new(apart),
            sizes: Mutex::new([None; 2]),
        }
    }

    fn bucket(&self, group: RateGroup) -> &Bucket {
        match self.apart.load(Ordering::Acquire) {
            true => &self.buckets[group.index()],
            false => &self.buckets[RateGroup::Other.index()],
        }
    }

    /// Waits until a request of `group` may be sent. `Err` is how long it would still have to
    /// wait when that is past `deadline`: the caller is told to come back then, and nothing is
    /// sent.
    pub async fn acquire(
        &self,
        group: RateGroup,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Result<Permit<'_>, Duration> {
        let inner = self.bucket(group).acquire(priority, deadline).await?;
        Ok(Permit {
            governor: self,
            group,
            inner,
        })
    }

    /// Notes the size `group`'s answer reported; answers whether the groups have just been
    /// found to have buckets of their own.
    fn told_apart(&self, group: RateGroup, headers: &HeaderMap) -> bool {
        let Some(size) = headers
            .get("x-ratelimit-limit")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return false;
        };
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        sizes[group.index()] = Some(size);
        let [other, clients_read] = *sizes;
        let differ = matches!((other, clients_read), (Some(a), Some(b)) if a != b);
        if differ && !self.apart.swap(true, Ordering::AcqRel) {
            info!(
                clients_read = clients_read.unwrap_or_default(),
                other = other.unwrap_or_default(),
                "Auth0's answers show a rate-limit bucket per endpoint group: pacing each group by its own"
            );
            return true;
        }
        false
    }
}

impl Permit<'_> {
    /// Counts the answer's status and `x-ratelimit-*` headers in its group's bucket.
    pub fn answered(self, status: u16, headers: &HeaderMap) {
        let governor = self.governor;
        governor.told_apart(self.group, headers);
        let bucket = governor.bucket(self.group);
        if std::ptr::eq(bucket, self.inner.bucket()) {
            self.inner.answered(status, headers);
        } else {
            // Sent through the shared estimate before the groups were told apart: it leaves
            // that one (dropped unanswered) and its headers start its group's own.
            drop(self.inner);
            bucket.answered(None, status, headers);
        }
    }
}

#[cfg(test)]
mod tests;
