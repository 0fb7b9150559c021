//! The Vault adapter alone against a real OpenBao: the four requests of an immediate rotation
//! (lease write, key read, key write, close write) made through `VaultStore`, one client at a
//! time and 16 at once, with this process's CPU (the adapter, reqwest and Tokio; OpenBao is
//! another process) per rotation. It isolates what the adapter costs from the rest of the
//! service, so that two builds of the adapter can be compared in one session:
//!
//! ```sh
//! cargo bench --features emulator --bench vault            # 2,000 rotations per row
//! cargo bench --features emulator --bench vault -- --count 500
//! ```

use std::time::{Duration, Instant};

use secrecy::SecretString;
use secret_rotator::{
    rotation::{ClientId, ClientState, KeySecrets, Ledger, PreviousSecret, SecretStore},
    vault::{Settings, Token, VaultStore},
};

#[path = "../../tests/support/mod.rs"]
mod support;

const TASKS: usize = 16;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .map_or(2_000, |n| {
            n.parse::<usize>().expect("--count takes a number")
        });
    let bao = support::Bao::start().await;
    let store = VaultStore::new(&Settings {
        addr: bao.addr.parse().expect("OpenBao's address"),
        token: Token::Static(SecretString::from(bao.token.clone())),
        namespace: None,
        ca_cert: None,
        timeout: Duration::from_secs(5),
        mount: "secret".into(),
        state_prefix: "secret-rotator".into(),
    })
    .expect("the adapter");

    println!(
        "| clients at once | rotations | p50 ms | p99 ms | CPU µs per rotation | CPU µs per request |"
    );
    println!("|---|---|---|---|---|---|");
    for tasks in [1, TASKS] {
        // Warm-up: connections, the first write of each key.
        run(&store, tasks, 16).await;
        let cpu = support::cpu_time(std::process::id());
        let mut latencies = run(&store, tasks, count / tasks).await;
        let cpu = support::cpu_time(std::process::id()) - cpu;
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        let per = cpu.as_secs_f64() * 1e6 / latencies.len() as f64;
        println!(
            "| {tasks} | {} | {:.2} | {:.2} | {per:.0} | {:.0} |",
            latencies.len(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            per / 4.0,
        );
    }
}

/// `tasks` clients, each rotated `each` times; the latency of every rotation.
async fn run(store: &VaultStore, tasks: usize, each: usize) -> Vec<Duration> {
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let store = store.clone();
        set.spawn(async move {
            let id = ClientId::parse(&format!("BenchVaultAdapter{task:015}")).expect("an id");
            let path = format!("auth0/clients/{id}");
            let mut state = store.read_state(&id).await.expect("read").version;
            let mut key = store.current_version(&path).await.expect("metadata");
            let mut latencies = Vec::with_capacity(each);
            for n in 0..each {
                let started = Instant::now();
                state = store
                    .write_state(&id, &ClientState::default(), state)
                    .await
                    .expect("lease");
                let held = store.read_secret(&path).await.expect("read");
                let secrets = KeySecrets {
                    current: SecretString::from(format!("secret-{task}-{n}-{:0>48}", n)),
                    next: None,
                    previous: held.map(|h| PreviousSecret {
                        secret: h.value.current,
                        expires_at: std::time::SystemTime::now() + Duration::from_secs(3600),
                    }),
                };
                key = store
                    .write_secret(&path, &id, &secrets, key)
                    .await
                    .expect("write");
                state = store
                    .write_state(&id, &ClientState::default(), state)
                    .await
                    .expect("close");
                latencies.push(started.elapsed());
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(done) = set.join_next().await {
        all.extend(done.expect("a task"));
    }
    all
}
