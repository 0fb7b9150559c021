//! The rotation benchmark (issue #8): the service against its floors and a Python peer, measured
//! in one run on one machine, reported as ratios. Not a test: nothing here asserts a timing.
//!
//! `scripts/bench.sh` runs it (`--short` for CI: small counts, no report file). It starts a real
//! OpenBao with a file audit device (Vault requests are counted from it), the Auth0 emulator in
//! this process, and the release `secret-rotator` binary; then, at concurrency 1, 16 and 64:
//! - the service: RotateSecret over gRPC (latency from the caller's side);
//! - the floor: one rotate-secret call and one KV write, made directly (reqwest);
//! - the durable floor: the same plus the ledger writes the protocol needs, made directly;
//! - the Python peer: requests + hvac, warm, one rotate-secret call and one KV write;
//!
//! the idle cost of the reconciler: Vault requests and CPU per minute with 1,000 and 10,000 client
//! records, for one replica and for three; and key rotations (`keys.rs`): key pair generation
//! per key size, and a key rotation's and its retirement's Auth0 and Vault requests against a
//! secret rotation's.
//!
//! `--count N` sets the rotations per row; `--only service|floors|peer|idle|keys` runs one part
//! (and writes no report file). `--profile FILE` records where the service spends its CPU during the concurrency-16 run
//! (`perf record -e cpu-clock`, which works without hardware counters); read it with
//! `perf report -i FILE --no-children --sort symbol`. With `BENCH_SERVICE_BIN` pointing at a
//! build with frame pointers (`RUSTFLAGS="-C force-frame-pointers=yes"`), `perf report
//! --children` attributes the time to the service's own functions.

mod drivers;
mod keys;
mod report;
mod stack;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use drivers::{Direct, Run};
use report::{Idle, Row};
use stack::{M2M_SECRET, Service};
use support::{Bao, cpu_time, peak_rss_kib};

struct Plan {
    short: bool,
    warmup: usize,
    count: usize,
    clients: usize,
    /// The idle phases' record counts, each run with one replica and three.
    idle_records: Vec<usize>,
    idle_window: Duration,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let short = args.iter().any(|a| a == "--short");
    let profile = args
        .iter()
        .position(|a| a == "--profile")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from);
    let count = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse::<usize>().expect("--count takes a number"));
    let mut plan = if short {
        Plan {
            short,
            warmup: 16,
            count: 64,
            clients: 64,
            idle_records: vec![100],
            idle_window: Duration::from_secs(3),
        }
    } else {
        Plan {
            short,
            warmup: 200,
            count: 2_000,
            clients: 64,
            idle_records: vec![1_000, 10_000],
            idle_window: Duration::from_secs(60),
        }
    };
    // `--only service` (or floors, peer, idle): one part, e.g. while profiling.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let runs = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if let Some(count) = count {
        plan.count = count;
    }
    let logs = tempfile::tempdir().unwrap();
    let bao = Bao::start_audited().await;
    let (emulator, m2m, clients) = stack::emulator(plan.clients).await;
    let mut rows = Vec::new();

    // The service.
    if runs("service") {
        let service =
            Service::start(&bao, &emulator, &m2m, &[], &logs.path().join("service.log")).await;
        drivers::service(&service.addr, &clients, 16, plan.warmup).await;
        for concurrency in [1, 16, 64] {
            let (vault0, auth00, cpu0) = (
                bao.request_count(),
                emulator.stats().requests,
                cpu_time(service.pid()),
            );
            let perf = profile
                .as_ref()
                .filter(|_| concurrency == 16)
                .map(|file| stack::Perf::attach(service.pid(), file));
            let run = drivers::service(&service.addr, &clients, concurrency, plan.count).await;
            drop(perf);
            rows.push(
                Row::new("service", concurrency, &run)
                    .cpu(cpu_time(service.pid()) - cpu0)
                    .rss_kib(peak_rss_kib(service.pid()))
                    .requests(
                        bao.request_count() - vault0,
                        emulator.stats().requests - auth00,
                    ),
            );
        }
        drop(service);
    }

    // The floors, made directly from this process.
    if runs("floors") {
        let direct = Direct::new(
            &emulator.base_url(),
            &emulator.domain(),
            &m2m,
            M2M_SECRET,
            &bao.addr,
            &bao.token,
        )
        .await;
        for (name, durable) in [("floor", false), ("durable floor", true)] {
            let one = {
                let direct = direct.clone();
                move |id: String| {
                    let direct = direct.clone();
                    async move {
                        if durable {
                            direct.durable_floor(id).await
                        } else {
                            direct.floor(id).await
                        }
                    }
                }
            };
            drivers::drive(&clients, 16, plan.warmup, one.clone()).await;
            for concurrency in [1, 16, 64] {
                let (vault0, auth00) = (bao.request_count(), emulator.stats().requests);
                let run: Run = drivers::drive(&clients, concurrency, plan.count, one.clone()).await;
                rows.push(Row::new(name, concurrency, &run).requests(
                    bao.request_count() - vault0,
                    emulator.stats().requests - auth00,
                ));
            }
        }
    }

    // The Python peer.
    if runs("peer") {
        let peer_env = [
            ("PEER_AUTH0_URL", emulator.base_url()),
            ("PEER_AUTH0_DOMAIN", emulator.domain()),
            ("PEER_M2M_ID", m2m.clone()),
            ("PEER_M2M_SECRET", M2M_SECRET.to_owned()),
            ("PEER_VAULT_ADDR", bao.addr.clone()),
            ("PEER_VAULT_TOKEN", bao.token.clone()),
        ];
        for concurrency in [1, 16, 64] {
            let (vault0, auth00) = (bao.request_count(), emulator.stats().requests);
            let peer =
                drivers::python_peer(&peer_env, &clients, concurrency, plan.count, plan.warmup);
            // The peer's warm-up and token request are in the counts: take them out.
            let warm_vault = plan.warmup as u64;
            let warm_auth0 = plan.warmup as u64 + 1;
            rows.push(
                Row::new("Python peer", concurrency, &peer.run)
                    .cpu(peer.cpu)
                    .requests(
                        (bao.request_count() - vault0).saturating_sub(warm_vault),
                        (emulator.stats().requests - auth00).saturating_sub(warm_auth0),
                    ),
            );
        }
    }

    // Idle: no calls, many records, one replica and then three.
    let idle = if runs("idle") {
        idle(&plan, &bao, &emulator, &m2m, logs.path()).await
    } else {
        Vec::new()
    };

    let keys = if runs("keys") {
        // An OpenBao of its own: the idle part leaves 10,000 records, which a new replica
        // reads in a pass over every record while the key rotations are timed.
        let bao = Bao::start_audited().await;
        keys::run(plan.short, &bao, logs.path()).await
    } else {
        String::new()
    };

    let mut text = report::render(&rows, &idle, &plan_text(&plan));
    text.push_str(&keys);
    if cfg!(debug_assertions) {
        text.insert_str(
            0,
            "A debug build (--smoke): these figures say nothing about performance.\n\n",
        );
    }
    println!("{text}");
    if !plan.short && !cfg!(debug_assertions) && only.is_none() {
        let out = support::repo().join("docs/performance.md");
        let before = std::fs::read_to_string(&out).unwrap_or_default();
        std::fs::write(&out, report::document(&before, &text)).expect("write docs/performance.md");
        eprintln!("bench: wrote {}", out.display());
    }
}

fn plan_text(plan: &Plan) -> String {
    format!(
        "{} rotations per row after {} of warm-up, over {} clients; idle: {:?} client records, {} s window",
        plan.count,
        plan.warmup,
        plan.clients,
        plan.idle_records,
        plan.idle_window.as_secs()
    )
}

async fn idle(
    plan: &Plan,
    bao: &Bao,
    emulator: &secret_rotator::emulator::RunningEmulator,
    m2m: &str,
    logs: &std::path::Path,
) -> Vec<Idle> {
    use futures_util::StreamExt as _;
    let http = reqwest::Client::new();
    // The defaults, but for a short run: a shorter interval, so that rest is seen soon. The
    // start-up passes over every record (not what is measured) go faster than the default 50
    // records a second, so that 10,000 records come to rest in seconds.
    let interval = match plan.short {
        true => Duration::from_secs(1),
        false => Duration::from_secs(30),
    };
    let setting = format!("{}s", interval.as_secs());
    let env = [
        ("ROTATOR_RECONCILE_INTERVAL", setting.as_str()),
        ("ROTATOR_RECONCILE_RATE", "2000"),
    ];
    let mut out = Vec::new();
    let mut seeded = 0;
    // Every phase with the most records, one replica, a tenth of them last rotated 30 days ago
    // and ROTATOR_MAX_SECRET_AGE 7d: the scanner reads some overdue records again each interval.
    let most = plan.idle_records.iter().copied().max().unwrap_or(0);
    let phases = plan
        .idle_records
        .iter()
        .flat_map(|&records| [(records, 1, 0), (records, 3, 0)])
        .chain([(most, 1, most / 10)]);
    for (records, replicas, overdue) in phases {
        // Closed ledger records, as rotations leave them: without a rotation, or (the overdue
        // ones) with one a month old.
        let closed = secret_rotator::rotation::ClientState::default();
        let mut old = closed.clone();
        let mut metadata = secret_rotator::rotation::RotationMetadata::new(
            uuid::Uuid::new_v4(),
            secret_rotator::rotation::Strategy::Immediate,
            None,
            None,
        );
        metadata.rotated_at = std::time::SystemTime::now() - Duration::from_secs(30 * 86_400);
        old.last = Some(secret_rotator::rotation::LastRotation {
            metadata,
            kv_version: secret_rotator::rotation::KvVersion(1),
            credential: None,
        });
        let writes = (seeded..records)
            .map(|n| (n, &closed))
            .chain((0..overdue).map(|n| (n, &old)));
        futures_util::stream::iter(writes)
            .for_each_concurrent(16, |(n, state)| {
                let http = &http;
                async move {
                    let id = format!("IdleClient{n:06}");
                    http.post(format!(
                        "{}/v1/secret/data/secret-rotator/clients/{id}",
                        bao.addr
                    ))
                    .header("X-Vault-Token", &bao.token)
                    .json(&serde_json::json!({ "data": state }))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .expect("a ledger record");
                }
            })
            .await;
        seeded = seeded.max(records);
        // The previous phase's heartbeats and scanner lease would keep this phase's replicas
        // waiting, then scanning for the dead.
        http.delete(format!(
            "{}/v1/secret/metadata/secret-rotator/replicas",
            bao.addr
        ))
        .header("X-Vault-Token", &bao.token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("the scanner lease cleared");
        let mut running = Vec::new();
        let mut env = env.to_vec();
        if overdue > 0 {
            env.push(("ROTATOR_MAX_SECRET_AGE", "7d"));
        }
        for r in 0..replicas {
            let log = logs.join(format!("idle-{replicas}-{r}-{overdue}.log"));
            running.push(Service::start(bao, emulator, m2m, &env, &log).await);
        }
        // At rest once the start-up passes are over: the scanner's first (it took the lease
        // over), and one more when it sees the replicas that started after it. A pass reads
        // `ROTATOR_RECONCILE_RATE` (2,000 here) records a second; rest is a few requests a
        // second.
        // Rest is a whole reconcile interval with no more than every replica's turn in it.
        let resting = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let before = bao.request_count();
            tokio::time::sleep(interval + Duration::from_secs(1)).await;
            // Up to two turns of each replica fit in the slice, and a readiness check or two;
            // each of the scanner's turns reads up to 20 overdue records again.
            let turns = 4 * replicas as u64 + 4 + 2 * overdue.min(20) as u64;
            if bao.request_count() - before <= turns || tokio::time::Instant::now() > resting {
                break;
            }
        }
        let vault0 = bao.requests().len();
        let cpu0: Duration = running.iter().map(|s| cpu_time(s.pid())).sum();
        tokio::time::sleep(plan.idle_window).await;
        let cpu: Duration = running.iter().map(|s| cpu_time(s.pid())).sum::<Duration>() - cpu0;
        let made = bao.requests()[vault0..].to_vec();
        out.push(Idle {
            replicas,
            records,
            window: plan.idle_window,
            interval,
            vault_requests: made.len() as u64,
            kv_requests: made
                .iter()
                .filter(|(_, path)| path.starts_with("secret/"))
                .count() as u64,
            cpu,
            overdue,
        });
    }
    let _ = bao.pid();
    out
}
