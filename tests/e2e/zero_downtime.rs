//! Consumers through rotations: an application that authenticates every 10 ms with the secrets
//! it reads from Vault, in the documented order (`client_secret`, then `next_client_secret`,
//! then `previous_client_secret`), never fails during a staged rotation, whether it reads the
//! key before every attempt or keeps what it read for half a second. The emulator is set to
//! Auth0's worst case: the old secret is refused the moment the new one is set.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use secret_rotator::emulator::{CONSUMER_API, EmulatorConfig};
use serde_json::Value;

use crate::{
    helpers::{Stack, StackOptions, eventually, vault_path},
    staged::{client_in_sync, staged},
};

/// Which secrets of the key a consumer tries, in order.
const FALLBACK: &[&str] = &[
    "client_secret",
    "next_client_secret",
    "previous_client_secret",
];
const CURRENT_ONLY: &[&str] = &["client_secret"];

#[derive(Default)]
struct Tally {
    tried: AtomicU64,
    failed: AtomicU64,
}

/// How a consumer reads the key and which of its secrets it tries.
#[derive(Clone, Copy)]
struct Consumer {
    order: &'static [&'static str],
    /// How long it keeps what it read before reading the key again.
    refresh: Duration,
}

const CONSUMERS: [Consumer; 4] = [
    Consumer {
        order: FALLBACK,
        refresh: Duration::ZERO,
    },
    Consumer {
        order: CURRENT_ONLY,
        refresh: Duration::ZERO,
    },
    Consumer {
        order: FALLBACK,
        refresh: Duration::from_millis(500),
    },
    Consumer {
        order: CURRENT_ONLY,
        refresh: Duration::from_millis(500),
    },
];

/// A consumer: every 10 ms, asks for a token with the key's secrets in its order until one
/// works, reading the key again once its copy is older than `refresh`. Runs until `stop`.
fn consumer(
    stack: &Stack,
    client_id: &str,
    kind: Consumer,
    stop: Arc<AtomicBool>,
) -> (Arc<Tally>, tokio::task::JoinHandle<()>) {
    let tally = Arc::new(Tally::default());
    let http = reqwest::Client::new();
    let token_url = format!("{}/oauth/token", stack.emulator.base_url());
    let key_url = format!(
        "{}/v1/secret/data/{}",
        stack.bao.addr,
        vault_path(client_id)
    );
    let vault_token = stack.bao.token.clone();
    let client_id = client_id.to_owned();
    let counts = Arc::clone(&tally);
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(10));
        let mut copy: Option<(tokio::time::Instant, Value)> = None;
        while !stop.load(Ordering::SeqCst) {
            every.tick().await;
            if copy
                .as_ref()
                .is_none_or(|(read, _)| read.elapsed() >= kind.refresh)
            {
                let key: Value = http
                    .get(&key_url)
                    .header("X-Vault-Token", &vault_token)
                    .send()
                    .await
                    .expect("OpenBao answers")
                    .json()
                    .await
                    .expect("a KV answer");
                copy = Some((tokio::time::Instant::now(), key["data"]["data"].clone()));
            }
            let data = &copy.as_ref().expect("read above").1;
            let mut ok = false;
            for field in kind.order {
                let Some(secret) = data[*field].as_str() else {
                    continue;
                };
                let answer = http
                    .post(&token_url)
                    .json(&serde_json::json!({
                        "grant_type": "client_credentials",
                        "client_id": client_id,
                        "client_secret": secret,
                        "audience": CONSUMER_API,
                    }))
                    .send()
                    .await
                    .expect("the emulator answers");
                if answer.status().is_success() {
                    ok = true;
                    break;
                }
            }
            counts.tried.fetch_add(1, Ordering::SeqCst);
            if !ok {
                counts.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (tally, task)
}

/// The [`CONSUMERS`] run for a while before and after `rotation`, which returns once Vault
/// holds the new secret; returns (tried, failed) for each.
async fn through<F>(stack: &Stack, client_id: &str, rotation: F) -> Vec<(u64, u64)>
where
    F: Future<Output = ()>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = CONSUMERS
        .iter()
        .map(|kind| consumer(stack, client_id, *kind, Arc::clone(&stop)))
        .collect();
    // Longer than the slowest consumer's refresh, so that every one has caught up at the end.
    let settle = Duration::from_millis(800);
    tokio::time::sleep(settle).await;
    rotation.await;
    tokio::time::sleep(settle).await;
    stop.store(true, Ordering::SeqCst);
    let mut counts = Vec::new();
    for (tally, task) in consumers {
        task.await.expect("consumer task");
        counts.push((
            tally.tried.load(Ordering::SeqCst),
            tally.failed.load(Ordering::SeqCst),
        ));
    }
    counts
}

/// A stack whose Auth0 is at its worst: the old secret is refused the moment the new one is set.
async fn worst_case() -> Stack {
    Stack::start_with(StackOptions {
        emulator: EmulatorConfig {
            propagation_window: Duration::ZERO,
            ..EmulatorConfig::default()
        },
        ..StackOptions::default()
    })
    .await
}

#[tokio::test]
async fn consumers_reading_the_fallback_order_never_fail_during_a_staged_rotation() {
    let stack = worst_case().await;
    let (id, _) = client_in_sync(&stack).await;

    // Distributed for longer than the slowest consumer's refresh.
    let staged_counts = through(&stack, &id, async {
        let mut client = stack.client().await;
        client.rotate_secret(staged(&id, 2)).await.unwrap();
        let next = stack.bao.kv_data(&vault_path(&id)).await.unwrap()["next_client_secret"]
            .as_str()
            .unwrap()
            .to_owned();
        eventually("the promotion", Duration::from_secs(20), || async {
            (stack.bao.kv_data(&vault_path(&id)).await.unwrap()["client_secret"] == next.as_str())
                .then_some(())
        })
        .await;
    })
    .await;

    let immediate_counts = through(&stack, &id, async {
        stack.rotate_ok(&id).await;
    })
    .await;

    for (strategy, counts) in [("staged", &staged_counts), ("immediate", &immediate_counts)] {
        for (kind, (tried, failed)) in CONSUMERS.iter().zip(counts.iter()) {
            eprintln!(
                "zero-downtime: {strategy:9} reads {:?} refreshing every {:?}: {tried} authentications, {failed} failed",
                kind.order, kind.refresh
            );
        }
    }
    for (kind, (tried, failed)) in CONSUMERS.iter().zip(staged_counts.iter()) {
        if kind.order == FALLBACK {
            assert!(
                *tried >= 100,
                "the consumer ran through the rotation ({tried})"
            );
            assert_eq!(
                *failed, 0,
                "a staged rotation broke a consumer reading the fallback order"
            );
        }
    }
}

#[tokio::test]
async fn consumers_reading_the_fallback_order_never_fail_when_a_staged_rotation_is_rolled_back() {
    let stack = worst_case().await;
    let (id, old) = client_in_sync(&stack).await;
    let mut client = stack.client().await;
    let answer = client
        .rotate_secret(staged(&id, 300))
        .await
        .unwrap()
        .into_inner();
    client
        .complete_rotation(crate::staged::complete(&id, &answer.rotation_id))
        .await
        .unwrap();
    assert_ne!(
        stack.emulator.live_secret(&id).as_deref(),
        Some(old.as_str())
    );

    let counts = through(&stack, &id, async {
        client
            .rollback_rotation(crate::rollback::rollback(&id, &answer.rotation_id))
            .await
            .expect("rolled back");
    })
    .await;
    assert_eq!(
        stack.emulator.live_secret(&id).as_deref(),
        Some(old.as_str())
    );
    for (kind, (tried, failed)) in CONSUMERS.iter().zip(counts.iter()) {
        eprintln!(
            "zero-downtime: rollback  reads {:?} refreshing every {:?}: {tried} authentications, {failed} failed",
            kind.order, kind.refresh
        );
        if kind.order == FALLBACK {
            assert!(
                *tried >= 100,
                "the consumer ran through the rollback ({tried})"
            );
            assert_eq!(
                *failed, 0,
                "a rollback broke a consumer reading the fallback order"
            );
        }
    }
}
