//! The batch benchmark (issue #12): RotateSecrets over 200 clients against the emulator's
//! Management API bucket at burst 10 and 5 per second, by one replica and by two replicas each
//! rotating half. Reports the makespan against the limit's lower bound
//! ((clients - burst) / rate = 38 s), the 429s Auth0 answered, and rotations lost (Auth0 rotated,
//! Vault does not hold it) or doubled (rotated more than once). Not a test: nothing here
//! asserts a timing. `scripts/bench-batch.sh` runs it; `--smoke` runs 20 clients;
//! `--learn-rate` leaves AUTH0_RATE_LIMIT_PER_SECOND unset, so the governor learns the rate
//! from `x-ratelimit-reset`.

#[path = "../rotation/stack.rs"]
#[allow(dead_code)]
mod stack;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use secret_rotator::emulator::{
    Emulator, EmulatorConfig, RunningEmulator, m2m_client, random_client_id, regular_client,
};
use stack::{M2M_SECRET, Service};
use support::Bao;
use tokio::net::TcpListener;

const BURST: u32 = 10;
const RATE: u32 = 5;

struct Outcome {
    replicas: usize,
    clients: usize,
    makespan: Duration,
    answered_429: u64,
    lost: usize,
    doubled: usize,
    failed: i32,
}

#[tokio::main]
async fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let learn = std::env::args().any(|a| a == "--learn-rate");
    let clients = if smoke { 20 } else { 200 };
    let logs = tempfile::tempdir().unwrap();
    let mut outcomes = Vec::new();
    for replicas in [1, 2] {
        outcomes.push(run(replicas, clients, learn, logs.path()).await);
    }
    let bound = (clients as f64 - f64::from(BURST)) / f64::from(RATE);
    println!(
        "\n| replicas | clients | makespan s | bound s | makespan / bound | 429s answered | lost | doubled | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let makespan = o.makespan.as_secs_f64();
        println!(
            "| {} | {} | {makespan:.1} | {bound:.0} | {:.3}x | {} | {} | {} | {} |",
            o.replicas,
            o.clients,
            makespan / bound,
            o.answered_429,
            o.lost,
            o.doubled,
            o.failed
        );
    }
    let rate = match learn {
        true => "unset (learnt from x-ratelimit-reset)".to_owned(),
        false => RATE.to_string(),
    };
    println!(
        "\nEmulator bucket: burst {BURST}, {RATE} per second; each replica: RotateSecrets with max_concurrency 16, AUTH0_RATE_LIMIT_PER_SECOND {rate}."
    );
}

/// `replicas` services on one OpenBao and one emulator, each rotating its share of `clients`
/// in one batch, all at once.
async fn run(replicas: usize, clients: usize, learn: bool, logs: &std::path::Path) -> Outcome {
    let bao = Bao::start_audited().await;
    let (emulator, m2m, ids) = tenant(clients).await;
    let mut services = Vec::new();
    for n in 0..replicas {
        let rate = RATE.to_string();
        let mut extra = vec![("ROTATOR_REPLICA_ID", if n == 0 { "a" } else { "b" })];
        if !learn {
            extra.push(("AUTH0_RATE_LIMIT_PER_SECOND", rate.as_str()));
        }
        let log = logs.join(format!("batch-{replicas}-{n}.log"));
        services.push(Service::start(&bao, &emulator, &m2m, &extra, &log).await);
    }
    // Start-up asks Auth0 for tokens only, which the bucket does not count: it is full.
    let before = emulator.stats().rate_limited;
    let shares: Vec<Vec<String>> = (0..replicas)
        .map(|n| ids.iter().skip(n).step_by(replicas).cloned().collect())
        .collect();
    let started = Instant::now();
    let batches = services
        .iter()
        .zip(shares)
        .map(|(service, share)| stack::batch(service, share, "benchmark", 16));
    let failed: i32 = futures_util::future::join_all(batches)
        .await
        .into_iter()
        .sum();
    let makespan = started.elapsed();
    let (mut lost, mut doubled) = (0, 0);
    for id in &ids {
        let inspection = emulator.client(id).unwrap();
        if inspection.rotations > 1 {
            doubled += 1;
        }
        let held = vault_secret(&bao, id).await;
        if inspection.rotations > 0 && held.as_deref() != inspection.client_secret.as_deref() {
            lost += 1;
        }
    }
    Outcome {
        replicas,
        clients,
        makespan,
        answered_429: emulator.stats().rate_limited - before,
        lost,
        doubled,
        failed,
    }
}

/// The emulator at the benchmark's bucket, with the service's application and `clients`
/// applications to rotate.
async fn tenant(clients: usize) -> (RunningEmulator, String, Vec<String>) {
    let m2m = random_client_id();
    let mut emulator = Emulator::new(EmulatorConfig {
        rate_limit_burst: BURST,
        rate_limit_per_second: RATE,
        ..EmulatorConfig::default()
    })
    .with_client(m2m_client(&m2m, M2M_SECRET, stack::SCOPES));
    let ids: Vec<String> = (0..clients).map(|_| random_client_id()).collect();
    for id in &ids {
        emulator = emulator.with_client(regular_client(id, "Batch bench"));
    }
    let running = emulator.start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    (running, m2m, ids)
}

/// The client secret Vault holds for `id`, if any.
async fn vault_secret(bao: &Bao, id: &str) -> Option<String> {
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/secret/data/auth0/clients/{id}", bao.addr))
        .header("X-Vault-Token", &bao.token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    answer["data"]["data"]["client_secret"]
        .as_str()
        .map(str::to_owned)
}
