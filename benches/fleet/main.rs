//! The fleet benchmark (issue #22): a tenant of 10,000 clients with an Essentials plan's two
//! buckets (reading clients 5 burst / 100 a minute, every other endpoint 10 / 150 a minute), a
//! schedule over every client, and what the service costs there:
//!
//! 1. a wave: 1,000 clients never rotated fall due at once (the other 9,000 were rotated
//!    before, unthrottled); its makespan against the bound the other endpoints' bucket sets,
//!    the 429s Auth0 answered, and ListClients asked meanwhile with their answer times;
//! 2. at rest with one replica, then three: Management API requests (per catalogue refresh,
//!    and per minute at the default refresh of 15 minutes) and Vault requests per replica per
//!    reconcile interval;
//! 3. the scheduler's memory with the catalogue loaded.
//!
//! Not a test: nothing here asserts a timing. `scripts/bench-fleet.sh` runs it; `--short` is
//! 300 clients, a wave of 30 and short windows, what CI runs so the benchmark cannot rot.

#[path = "../rotation/stack.rs"]
#[allow(dead_code)]
mod stack;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use secret_rotator::{
    emulator::{RateGroups, RunningEmulator},
    proto::{ListClientsRequest, secret_rotation_service_client::SecretRotationServiceClient},
};
use stack::Service;
use support::{Bao, peak_rss_kib};

/// The default the at-rest figures are scaled to.
const DEFAULT_REFRESH_SECS: f64 = 15.0 * 60.0;

struct Shape {
    clients: usize,
    wave: usize,
    /// ROTATOR_CATALOG_REFRESH in the run; each at-rest window spans two whole refreshes.
    refresh: Duration,
    /// ROTATOR_SCHEDULE_INTERVAL: the catalogue is refreshed by the scheduler's passes.
    schedule_interval: &'static str,
    /// ROTATOR_RECONCILE_INTERVAL, in seconds.
    reconcile_interval: u64,
}

#[tokio::main]
async fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let shape = match short {
        true => Shape {
            clients: 300,
            wave: 30,
            refresh: Duration::from_secs(20),
            schedule_interval: "10s",
            reconcile_interval: 5,
        },
        false => Shape {
            clients: 10_000,
            wave: 1_000,
            refresh: Duration::from_secs(120),
            schedule_interval: "1m",
            reconcile_interval: 30,
        },
    };
    let logs = tempfile::tempdir().unwrap();
    let bao = Bao::start_audited().await;
    // Unthrottled while the clients rotated before are primed; Essentials from the wave on.
    let (emulator, m2m, ids) = stack::emulator(shape.clients).await;
    let (wave, rotated_before) = ids.split_at(shape.wave);

    // The clients rotated before: records in Vault, so that only the wave is due.
    let primed = Instant::now();
    {
        // As replica `a`, which then starts in its place: no heartbeat of a replica gone lapses
        // during the measurements (that would set off a pass over every record).
        let service = Service::start(
            &bao,
            &emulator,
            &m2m,
            &[("ROTATOR_REPLICA_ID", "a")],
            &logs.path().join("prime.log"),
        )
        .await;
        prime(&service, rotated_before).await;
    }
    println!(
        "primed {} clients in {:.1} s",
        rotated_before.len(),
        primed.elapsed().as_secs_f64()
    );

    emulator.set_rate_groups(Some(RateGroups::ESSENTIALS));
    let schedule = logs.path().join("schedule.toml");
    std::fs::write(
        &schedule,
        "[[rule]]\nlabel = \"every client\"\nmax_age = \"90d\"\n",
    )
    .unwrap();
    let schedule = schedule.display().to_string();
    let refresh = format!("{}s", shape.refresh.as_secs());
    let reconcile = format!("{}s", shape.reconcile_interval);
    let env = [
        ("ROTATOR_SCHEDULE_FILE", schedule.as_str()),
        ("ROTATOR_CATALOG_REFRESH", refresh.as_str()),
        ("ROTATOR_SCHEDULE_INTERVAL", shape.schedule_interval),
        ("ROTATOR_RECONCILE_INTERVAL", reconcile.as_str()),
        // The replicas' start-up passes over every record end sooner than at 50 a second.
        ("ROTATOR_RECONCILE_RATE", "2000"),
    ];
    let replica = |name: &'static str| {
        let mut extra = env.to_vec();
        extra.push(("ROTATOR_REPLICA_ID", name));
        let log = logs.path().join(format!("{name}.log"));
        let (bao, emulator, m2m) = (&bao, &emulator, m2m.clone());
        async move { Service::start(bao, emulator, &m2m, &extra, &log).await }
    };

    let before = emulator.stats();
    let a = replica("a").await;
    let wave_report = run_wave(
        &emulator,
        &a,
        wave.len(),
        before.rotations,
        before.rate_limited,
    )
    .await;
    let rss = peak_rss_kib(a.pid());

    let interval = Duration::from_secs(shape.reconcile_interval);
    settle(&bao, 1, interval).await;
    let one = at_rest(&bao, &emulator, shape.refresh, 2).await;
    let (b, c) = (replica("b").await, replica("c").await);
    settle(&bao, 3, interval).await;
    let three = at_rest(&bao, &emulator, shape.refresh, 2).await;
    drop((b, c));

    let other = RateGroups::ESSENTIALS.other;
    let bound = (wave.len() as f64 - f64::from(other.burst)) / (f64::from(other.per_minute) / 60.0);
    println!(
        "\n| clients | wave | makespan | bound | makespan / bound | 429s answered | ListClients during the wave | slowest ListClients |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.1} s | {bound:.0} s | {:.3}x | {} | {} of {} answered | {:.2} s |",
        shape.clients,
        wave.len(),
        wave_report.makespan.as_secs_f64(),
        wave_report.makespan.as_secs_f64() / bound,
        wave_report.answered_429,
        wave_report.lists_ok,
        wave_report.lists,
        wave_report.slowest_list.as_secs_f64()
    );
    println!(
        "\nAt rest, nothing due, schedule over every client (ROTATOR_CATALOG_REFRESH {refresh} and ROTATOR_SCHEDULE_INTERVAL {} in the run; each window from the end of one listing to the end of the second after it):\n",
        shape.schedule_interval
    );
    println!(
        "| replicas | Management API requests per refresh | per minute at the default 15m refresh | per minute per 1,000 clients | Vault requests per minute | per replica per reconcile interval | heartbeats per replica per interval | Vault requests per heartbeat | 429s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (replicas, rest) in [(1, &one), (3, &three)] {
        let per_refresh = rest.management as f64 / f64::from(rest.refreshes);
        let per_minute = per_refresh * 60.0 / DEFAULT_REFRESH_SECS;
        let per_interval = |n: u64| {
            n as f64 * shape.reconcile_interval as f64
                / rest.window.as_secs_f64()
                / f64::from(replicas)
        };
        // Per interval, the window's edges may cut a heartbeat off or take one more in; per
        // heartbeat they do not (each replica beats at most once an interval).
        println!(
            "| {replicas} | {per_refresh:.1} | {per_minute:.2} | {:.3} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
            per_minute * 1000.0 / shape.clients as f64,
            rest.vault as f64 * 60.0 / rest.window.as_secs_f64(),
            per_interval(rest.vault),
            per_interval(rest.beats),
            rest.vault as f64 / rest.beats.max(1) as f64,
            rest.answered_429
        );
    }
    for (replicas, rest) in [(1, &one), (3, &three)] {
        let minutes = rest.window.as_secs_f64() / 60.0;
        let kinds: Vec<String> = rest
            .vault_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind} {:.1}", *n as f64 / minutes))
            .collect();
        println!(
            "\nVault requests per minute, {replicas} replica(s): {}",
            kinds.join("; ")
        );
    }
    println!(
        "\nThree replicas against one: {:.2}x the Management API requests.",
        (three.management as f64 / f64::from(three.refreshes))
            / (one.management as f64 / f64::from(one.refreshes)).max(1.0)
    );
    println!(
        "\nThe scheduler's peak resident memory with the catalogue of {} clients loaded: {:.1} MiB.",
        shape.clients,
        rss as f64 / 1024.0
    );
    drop(a);
}

/// Rotates `ids` in batches, so that each has a record in Vault.
async fn prime(service: &Service, ids: &[String]) {
    for chunk in ids.chunks(1_000) {
        let failed = stack::batch(
            service,
            chunk.to_vec(),
            "fleet benchmark: rotated before",
            32,
        )
        .await;
        assert_eq!(failed, 0, "priming failed");
    }
}

struct Wave {
    makespan: Duration,
    answered_429: u64,
    lists: usize,
    lists_ok: usize,
    slowest_list: Duration,
}

/// Waits for the scheduler to rotate the `wave` clients due, asking ListClients (100 a page,
/// a 10 s deadline) every 5 s meanwhile. The makespan runs from the wave's first rotation to
/// its last.
async fn run_wave(
    emulator: &RunningEmulator,
    service: &Service,
    wave: usize,
    rotations_before: u64,
    limited_before: u64,
) -> Wave {
    let mut client = SecretRotationServiceClient::connect(service.addr.clone())
        .await
        .unwrap();
    let (mut first, mut lists, mut lists_ok, mut slowest) = (None, 0, 0, Duration::ZERO);
    let mut next_list = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        let done = emulator.stats().rotations - rotations_before;
        if done > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if done >= wave as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wave did not finish: {done} of {wave}"
        );
        if first.is_some() && Instant::now() >= next_list {
            next_list += Duration::from_secs(5);
            let mut request = tonic::Request::new(ListClientsRequest {
                page_size: 100,
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(10));
            let asked = Instant::now();
            let answer = client.list_clients(request).await;
            lists += 1;
            slowest = slowest.max(asked.elapsed());
            if answer.is_ok() {
                lists_ok += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Wave {
        makespan: first.map_or(Duration::ZERO, |f| f.elapsed()),
        answered_429: emulator.stats().rate_limited - limited_before,
        lists,
        lists_ok,
        slowest_list: slowest,
    }
}

/// Waits until Vault's request rate has come down to what `replicas` at rest send (the
/// passes over every record a starting replica sets off are over): fewer than 15 requests
/// per replica in a reconcile interval and a bit, long enough for a pass to begin.
async fn settle(bao: &Bao, replicas: u64, interval: Duration) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let before = bao.request_count();
        tokio::time::sleep(interval + Duration::from_secs(5)).await;
        if bao.request_count() - before < 15 * replicas {
            return;
        }
        assert!(Instant::now() < deadline, "Vault never came to rest");
    }
}

struct Rest {
    window: Duration,
    /// Whole catalogue refreshes in the window.
    refreshes: u32,
    management: u64,
    vault: u64,
    /// Vault's requests in the window by what they were for.
    vault_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Writes of the replicas' record in the window: each replica's heartbeats.
    beats: u64,
    answered_429: u64,
}

const READINESS: &str = "readiness and token checks (sys/, auth/)";
const CATALOGUE: &str = "the client catalogue";
const REPLICAS: &str = "the replicas' record (heartbeats, scanner and scheduler leases)";

/// What a Vault request (its path) was for.
fn kind(path: &str) -> &'static str {
    if path.contains("secret-rotator/replicas") {
        REPLICAS
    } else if path.contains("secret-rotator/catalogue") {
        CATALOGUE
    } else if path.starts_with("sys/") || path.starts_with("auth/") {
        READINESS
    } else if path.contains("secret-rotator/") {
        "other service state"
    } else {
        "client records"
    }
}

/// When the scheduler last found the catalogue in Vault current, as its heartbeat in the
/// replicas' record says: it changes after every listing (one that finds the same clients
/// writes nothing else).
async fn listed_at(bao: &Bao) -> Option<serde_json::Value> {
    bao.kv_data("secret-rotator/replicas")
        .await
        .map(|replicas| replicas["catalogue_current_at_ms"].clone())
}

/// Waits for the scheduler's heartbeat to say a listing ended; how many times it read the
/// replicas' record to learn so (the service's requests are counted without them).
async fn next_listing(bao: &Bao, refresh: Duration) -> u64 {
    let before = listed_at(bao).await;
    let mut polls = 1;
    let deadline = Instant::now() + refresh * 3 + Duration::from_secs(300);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        polls += 1;
        if listed_at(bao).await != before {
            return polls;
        }
        assert!(Instant::now() < deadline, "the catalogue was not refreshed");
    }
}

/// What the replicas spend over `refreshes` whole catalogue refreshes with nothing due: from
/// the end of one listing to the end of the `refreshes`th after it, so that each listing is
/// counted whole.
async fn at_rest(bao: &Bao, emulator: &RunningEmulator, refresh: Duration, refreshes: u32) -> Rest {
    next_listing(bao, refresh).await;
    let (stats, vault, started) = (emulator.stats(), bao.requests().len(), Instant::now());
    let mut polls = 0;
    for _ in 0..refreshes {
        polls += next_listing(bao, refresh).await;
    }
    let window = started.elapsed();
    let after = emulator.stats();
    let requests = bao.requests();
    let mut vault_by_kind: std::collections::BTreeMap<&str, u64> =
        std::collections::BTreeMap::new();
    let mut beats = 0;
    for (operation, path) in &requests[vault..] {
        let kind = kind(path);
        *vault_by_kind.entry(kind).or_default() += 1;
        beats += u64::from(kind == REPLICAS && operation == "update");
    }
    // The benchmark's own reads of the replicas' record are not the service's.
    let replicas = vault_by_kind.entry(REPLICAS).or_default();
    *replicas = replicas.saturating_sub(polls);
    Rest {
        window,
        refreshes,
        management: (after.requests - after.token_requests)
            - (stats.requests - stats.token_requests),
        vault: (requests.len() - vault) as u64 - polls,
        vault_by_kind,
        beats,
        answered_429: after.rate_limited - stats.rate_limited,
    }
}
