//! The governor against a simulated Auth0 bucket, in Tokio's paused clock: exact, and as fast
//! as the machine allows. Each request reaches "Auth0" 10 ms after it leaves and its answer
//! comes back 10 ms later.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use reqwest::header::{HeaderMap, HeaderValue};
use tokio::time::{Duration, Instant, sleep};

use super::{Budget, Governor, Limit, Limits, Priority, RateGroup};

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
    run_group(governor, bucket, RateGroup::Other, workers, count, priority).await
}

/// [`run`] for requests of `group`.
async fn run_group(
    governor: Arc<Governor>,
    bucket: Arc<Mutex<Bucket>>,
    group: RateGroup,
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
                    let permit = governor.acquire(group, priority, None).await.unwrap();
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
        limits: Limits::OneBucket(Some(Limit {
            burst: None,
            per_second: rate,
        })),
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
        let permit = governor
            .acquire(RateGroup::Other, Priority::Interactive, None)
            .await
            .unwrap();
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
    let permit = governor
        .acquire(RateGroup::Other, Priority::Interactive, None)
        .await
        .unwrap();
    permit.answered(429, &refused);
    // A caller with one second left is told to come back in about three.
    let wait = governor
        .acquire(
            RateGroup::Other,
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
    drop(
        governor
            .acquire(RateGroup::Other, Priority::Interactive, None)
            .await
            .unwrap(),
    );
    assert!(
        asked.elapsed() >= Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

/// Essentials' and Professional's buckets, for requests of `group`: reading clients has its
/// own (burst 5, 100 a minute), every other endpoint another (burst 10, 150 a minute).
fn essentials() -> (Arc<Mutex<Bucket>>, Arc<Mutex<Bucket>>) {
    (
        Bucket::new(5.0, 100.0 / 60.0),
        Bucket::new(10.0, 150.0 / 60.0),
    )
}

#[tokio::test(start_paused = true)]
async fn with_the_plans_limits_each_group_is_paced_by_its_own_bucket_without_a_429() {
    let (reads, others) = essentials();
    let governor = Arc::new(Governor::new(Budget {
        limits: Limits::PerGroup {
            clients_read: Some(Limit {
                burst: Some(5),
                per_second: 100.0 / 60.0,
            }),
            other: Some(Limit {
                burst: Some(10),
                per_second: 150.0 / 60.0,
            }),
        },
        interactive_reserve: 0.5,
    }));
    let started = Instant::now();
    // Bounds: (60 - 5) / (100/60) = 33 s for the reads, (100 - 10) / 2.5 = 36 s for the rest.
    let (read, other) = tokio::join!(
        async {
            let done = run_group(
                Arc::clone(&governor),
                Arc::clone(&reads),
                RateGroup::ClientsRead,
                4,
                60,
                Priority::Background,
            )
            .await;
            (done, started.elapsed().as_secs_f64())
        },
        async {
            let done = run_group(
                Arc::clone(&governor),
                Arc::clone(&others),
                RateGroup::Other,
                8,
                100,
                Priority::Background,
            )
            .await;
            (done, started.elapsed().as_secs_f64())
        },
    );
    eprintln!(
        "per group: reads {:.1} s (bound 33 s), others {:.1} s (bound 36 s)",
        read.1, other.1
    );
    assert_eq!((read.0, other.0), (60, 100));
    assert_eq!(reads.lock().unwrap().refused, 0, "429s reading clients");
    assert_eq!(others.lock().unwrap().refused, 0, "429s elsewhere");
    // Paced by one shared estimate, the reads would hold the others back (or the others
    // would spend the reads' bucket): each group finishes near its own bound.
    assert!(read.1 <= 33.0 * 1.1, "reads took {:.1} s", read.1);
    assert!(other.1 <= 36.0 * 1.1, "others took {:.1} s", other.1);
}

/// One request of `group` through `governor` to `bucket`.
async fn one(governor: &Governor, bucket: &Mutex<Bucket>, group: RateGroup) -> u16 {
    let permit = governor
        .acquire(group, Priority::Interactive, None)
        .await
        .unwrap();
    let (status, headers) = bucket.lock().unwrap().take();
    permit.answered(status, &headers);
    status
}

#[tokio::test(start_paused = true)]
async fn the_groups_share_one_estimate_until_their_answers_report_different_sizes() {
    // A one-bucket tenant: both groups' answers describe the same bucket.
    let tenant = Bucket::new(10.0, 5.0);
    let governor = Governor::new(Budget::default());
    for _ in 0..3 {
        one(&governor, &tenant, RateGroup::ClientsRead).await;
        one(&governor, &tenant, RateGroup::Other).await;
    }
    assert!(!governor.apart.load(std::sync::atomic::Ordering::SeqCst));
    // The reads' answers now say 5, the others' 10: two buckets.
    let (reads, others) = essentials();
    let governor = Governor::new(Budget::default());
    assert_eq!(one(&governor, &reads, RateGroup::ClientsRead).await, 200);
    assert_eq!(one(&governor, &others, RateGroup::Other).await, 200);
    assert!(governor.apart.load(std::sync::atomic::Ordering::SeqCst));
    // Spending the reads' bucket dry leaves the others' estimate whole: an interactive
    // request of the other group goes at once.
    for _ in 0..4 {
        one(&governor, &reads, RateGroup::ClientsRead).await;
    }
    let asked = Instant::now();
    assert_eq!(one(&governor, &others, RateGroup::Other).await, 200);
    assert!(
        asked.elapsed() < Duration::from_millis(10),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(reads.lock().unwrap().refused, 0);
}

#[tokio::test(start_paused = true)]
async fn on_a_one_bucket_tenant_both_groups_together_stay_within_it() {
    // 50 reads and 150 other requests against one bucket of burst 10, 5 a second: the
    // bound is (200 - 10) / 5 = 38 s, and no 429.
    let tenant = Bucket::new(10.0, 5.0);
    let governor = Arc::new(Governor::new(budget(5.0)));
    let started = Instant::now();
    let (read, other) = tokio::join!(
        run_group(
            Arc::clone(&governor),
            Arc::clone(&tenant),
            RateGroup::ClientsRead,
            4,
            50,
            Priority::Background,
        ),
        run_group(
            Arc::clone(&governor),
            Arc::clone(&tenant),
            RateGroup::Other,
            12,
            150,
            Priority::Background,
        ),
    );
    let took = started.elapsed().as_secs_f64();
    eprintln!("one bucket, two groups: {took:.1} s (bound {BOUND} s)");
    assert_eq!(read + other, 200);
    assert_eq!(tenant.lock().unwrap().refused, 0);
    assert!(took <= BOUND * 1.1, "{took:.1} s");
}
