//! The governor against a simulated Auth0 bucket, in Tokio's paused clock: exact, and as fast
//! as the machine allows. Each request reaches "Auth0" 10 ms after it leaves and its answer
//! comes back 10 ms later.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use reqwest::header::{HeaderMap, HeaderValue};
use tokio::time::{Duration, Instant, sleep};

use super::{Budget, Governor, Priority};

/// Auth0's bucket: `burst` tokens, refilled at `rate` per second.
struct Bucket {
    burst: f64,
    rate: f64,
    tokens: f64,
    at: Instant,
    refused: usize,
}

impl Bucket {
    fn new(burst: f64, rate: f64) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            burst,
            rate,
            tokens: burst,
            at: Instant::now(),
            refused: 0,
        }))
    }

    /// One request: its status and headers.
    fn take(&mut self) -> (u16, HeaderMap) {
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        let status = if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            200
        } else {
            self.refused += 1;
            429
        };
        let mut h = HeaderMap::new();
        let mut set = |name: &'static str, value: String| {
            h.insert(name, HeaderValue::from_str(&value).unwrap());
        };
        set("x-ratelimit-limit", format!("{}", self.burst));
        set("x-ratelimit-remaining", format!("{}", self.tokens.floor()));
        if status == 429 {
            let wait = ((1.0 - self.tokens) / self.rate).ceil().max(1.0);
            set("retry-after", format!("{wait}"));
        }
        (status, h)
    }
}

/// `workers` tasks of one replica send `count` requests in all through `governor`; answers
/// the number of 200s.
async fn run(
    governor: Arc<Governor>,
    bucket: Arc<Mutex<Bucket>>,
    workers: usize,
    count: usize,
    priority: Priority,
) -> usize {
    let left = Arc::new(AtomicUsize::new(count));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (governor, bucket, left, done) = (
            Arc::clone(&governor),
            Arc::clone(&bucket),
            Arc::clone(&left),
            Arc::clone(&done),
        );
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                loop {
                    let permit = governor.acquire(priority, None).await.unwrap();
                    sleep(Duration::from_millis(10)).await;
                    let (status, headers) = bucket.lock().unwrap().take();
                    sleep(Duration::from_millis(10)).await;
                    permit.answered(status, &headers);
                    if status == 200 {
                        done.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::SeqCst)
}

fn budget(rate: f64) -> Budget {
    Budget {
        rate_per_second: Some(rate),
        interactive_reserve: 0.5,
    }
}

/// The benchmark shape: 200 requests, burst 10, 5 per second. The bound is
/// (200 - 10) / 5 = 38 s.
const BOUND: f64 = 38.0;

#[tokio::test(start_paused = true)]
async fn one_replica_finishes_near_the_limit_without_a_429() {
    let bucket = Bucket::new(10.0, 5.0);
    let governor = Arc::new(Governor::new(budget(5.0)));
    let started = Instant::now();
    let done = run(governor, Arc::clone(&bucket), 16, 200, Priority::Background).await;
    let took = started.elapsed().as_secs_f64();
    eprintln!("one replica: {took:.1} s (bound {BOUND} s)");
    assert_eq!(done, 200);
    assert_eq!(bucket.lock().unwrap().refused, 0, "no 429");
    assert!(
        took <= BOUND * 1.1,
        "{took:.1} s against a bound of {BOUND} s"
    );
}

#[tokio::test(start_paused = true)]
async fn two_replicas_share_the_tenant_without_a_429() {
    let bucket = Bucket::new(10.0, 5.0);
    let (a, b) = (
        Arc::new(Governor::new(budget(5.0))),
        Arc::new(Governor::new(budget(5.0))),
    );
    let started = Instant::now();
    let (one, two) = tokio::join!(
        run(a, Arc::clone(&bucket), 8, 100, Priority::Background),
        run(b, Arc::clone(&bucket), 8, 100, Priority::Background),
    );
    let took = started.elapsed().as_secs_f64();
    eprintln!("two replicas: {took:.1} s (bound {BOUND} s), {one} and {two}");
    assert_eq!(one + two, 200);
    let refused = bucket.lock().unwrap().refused;
    assert_eq!(refused, 0, "429s: {refused}");
    assert!(
        took <= BOUND * 1.1,
        "{took:.1} s against a bound of {BOUND} s"
    );
}

#[tokio::test(start_paused = true)]
async fn interactive_calls_go_first_while_a_batch_runs() {
    let bucket = Bucket::new(10.0, 5.0);
    let governor = Arc::new(Governor::new(budget(5.0)));
    let batch = tokio::spawn(run(
        Arc::clone(&governor),
        Arc::clone(&bucket),
        16,
        100,
        Priority::Background,
    ));
    sleep(Duration::from_secs(5)).await;
    for _ in 0..3 {
        let asked = Instant::now();
        let permit = governor.acquire(Priority::Interactive, None).await.unwrap();
        assert!(
            asked.elapsed() < Duration::from_millis(50),
            "waited {:?} behind the batch",
            asked.elapsed()
        );
        let (status, headers) = bucket.lock().unwrap().take();
        permit.answered(status, &headers);
        assert_eq!(status, 200);
        sleep(Duration::from_secs(2)).await;
    }
    batch.await.unwrap();
    assert_eq!(bucket.lock().unwrap().refused, 0);
}

#[tokio::test(start_paused = true)]
async fn after_a_429_nothing_is_sent_before_retry_after_and_a_deadline_is_kept() {
    let governor = Governor::new(budget(5.0));
    let mut refused = HeaderMap::new();
    refused.insert("retry-after", HeaderValue::from_static("3"));
    let permit = governor.acquire(Priority::Interactive, None).await.unwrap();
    permit.answered(429, &refused);
    // A caller with one second left is told to come back in about three.
    let wait = governor
        .acquire(
            Priority::Interactive,
            Some(Instant::now() + Duration::from_secs(1)),
        )
        .await
        .err()
        .expect("refused within the deadline");
    assert!(
        wait > Duration::from_secs(2) && wait <= Duration::from_secs(3),
        "{wait:?}"
    );
    let asked = Instant::now();
    drop(governor.acquire(Priority::Interactive, None).await.unwrap());
    assert!(
        asked.elapsed() >= Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}
