//! The scheduler's client catalogue against real OpenBao, the emulator and the real binary: the
//! tenant is listed once per refresh, not at every pass, a client added at Auth0 is scheduled
//! within one refresh, and a scheduler that takes over starts from the catalogue Vault keeps.

use std::time::Duration;

use secret_rotator::emulator::{fleet_clients, random_client_id, regular_client};

use crate::helpers::{ServiceProcess, bare_stack, eventually};

/// The scheduler selects from its client catalogue: the tenant is listed once per
/// `ROTATOR_CATALOG_REFRESH`, not at every pass, and a client added at Auth0 is scheduled
/// within one refresh.
#[tokio::test]
async fn the_scheduler_lists_the_tenant_once_per_refresh_and_finds_a_new_client_within_one() {
    let (bao, emulator, m2m) = bare_stack().await;
    let first = random_client_id();
    emulator.add_client(regular_client(&first, "Catalogued app"));
    let dir = tempfile::tempdir().unwrap();
    let schedule = dir.path().join("schedule.toml");
    std::fs::write(
        &schedule,
        "[[rule]]\nlabel = \"everything\"\nmax_age = \"1h\"\n",
    )
    .unwrap();
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend([
        ("ROTATOR_SCHEDULE_FILE", schedule.display().to_string()),
        ("ROTATOR_SCHEDULE_INTERVAL", "100ms".into()),
        ("ROTATOR_CATALOG_REFRESH", "3s".into()),
        // The scheduler's heartbeat says when a refresh found the catalogue current.
        ("ROTATOR_RECONCILE_INTERVAL", "200ms".into()),
    ]);
    let service = ServiceProcess::start(&env).await;
    let rotated = |id: &str| emulator.client(id).unwrap().rotations;
    eventually(
        "the first client's rotation",
        Duration::from_secs(30),
        || {
            let done = rotated(&first) == 1;
            async move { done.then_some(()) }
        },
    )
    .await;
    let listed = emulator.stats().list_requests;

    // Added at Auth0 now: found at the catalogue's next refresh, within 3 s and a few passes.
    let added = random_client_id();
    emulator.add_client(regular_client(&added, "Added app"));
    let since = tokio::time::Instant::now();
    eventually(
        "the added client's rotation",
        Duration::from_secs(15),
        || {
            let done = rotated(&added) == 1;
            async move { done.then_some(()) }
        },
    )
    .await;
    let took = since.elapsed();
    let lists = emulator.stats().list_requests - listed;
    eprintln!(
        "catalogue: the added client was rotated after {took:?}; {lists} list requests meanwhile"
    );
    // A pass every 100 ms listed the tenant every time before the catalogue: at least 10 times
    // a second. Now once per refresh.
    assert!(
        lists <= took.as_secs() / 3 + 1,
        "{lists} list requests in {took:?}"
    );
    assert_eq!(rotated(&first), 1, "not due again");
    assert!(
        bao.kv_data("secret-rotator/catalogue").await.is_some(),
        "the catalogue is kept in Vault"
    );
    // At rest (no client added or removed) a refresh lists the tenant and writes nothing to the
    // catalogue: the scheduler's heartbeat says when it found it current.
    let version = |path: &'static str| {
        let bao = &bao;
        async move {
            bao.kv_metadata(path).await.expect("kept")["current_version"]
                .as_u64()
                .unwrap()
        }
    };
    let current_at = || async {
        bao.kv_data("secret-rotator/replicas").await.unwrap()["catalogue_current_at_ms"].as_u64()
    };
    let (head, part) = (
        version("secret-rotator/catalogue").await,
        version("secret-rotator/catalogue-parts/0").await,
    );
    let (listed, confirmed) = (emulator.stats().list_requests, current_at().await);
    eventually("two refreshes", Duration::from_secs(20), || async {
        let refreshed = emulator.stats().list_requests >= listed + 2;
        (refreshed && current_at().await > confirmed).then_some(())
    })
    .await;
    assert_eq!(
        (
            version("secret-rotator/catalogue").await,
            version("secret-rotator/catalogue-parts/0").await
        ),
        (head, part),
        "an unchanged tenant's catalogue is not written again"
    );
    drop(service);
}

/// A tenant of 1,200 clients (three parts of the catalogue, each more JSON strings than OpenBao
/// takes in one request were they objects): the catalogue is kept in Vault, and the scheduler
/// that takes over from a killed one selects from it without listing the tenant again, though
/// it was written longer than a refresh ago: the killed one's heartbeat said when its last
/// refresh found it current.
#[tokio::test]
async fn a_scheduler_that_takes_over_starts_from_the_catalogue_in_vault() {
    let (bao, emulator, m2m) = bare_stack().await;
    for client in fleet_clients(1_200) {
        emulator.add_client(client);
    }
    let dir = tempfile::tempdir().unwrap();
    let schedule = dir.path().join("schedule.toml");
    std::fs::write(
        &schedule,
        "[[rule]]\nlabel = \"report only\"\nmax_age = \"90d\"\ndry_run = true\n",
    )
    .unwrap();
    let env_for = |name: &str| {
        let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
        env.extend([
            ("ROTATOR_REPLICA_ID", name.to_owned()),
            ("ROTATOR_SCHEDULE_FILE", schedule.display().to_string()),
            ("ROTATOR_SCHEDULE_INTERVAL", "200ms".into()),
            ("ROTATOR_RECONCILE_INTERVAL", "200ms".into()),
            ("ROTATOR_CATALOG_REFRESH", "12s".into()),
        ]);
        env
    };
    let first = ServiceProcess::start(&env_for("first")).await;
    let kept = eventually(
        "the catalogue in Vault",
        Duration::from_secs(30),
        || async { bao.kv_data("secret-rotator/catalogue").await },
    )
    .await;
    assert_eq!(kept["parts"], 3, "{kept}");
    assert!(
        !first.output().contains("cannot keep the client catalogue"),
        "{}",
        first.output()
    );
    // Refreshes that find the same clients until the catalogue was written longer than a
    // refresh ago; killed right after the heartbeat that says the last one found it current.
    let written_ms = {
        let listed = &kept["listed_at"];
        listed["secs_since_epoch"].as_u64().unwrap() * 1000
            + listed["nanos_since_epoch"].as_u64().unwrap() / 1_000_000
    };
    eventually(
        "a refresh a whole refresh after the catalogue was written",
        Duration::from_secs(60),
        || async {
            let replicas = bao.kv_data("secret-rotator/replicas").await?;
            let current_at = replicas["catalogue_current_at_ms"].as_u64()?;
            (current_at >= written_ms + 12_000).then_some(())
        },
    )
    .await;
    let listed = emulator.stats().list_requests;
    first.signal("-KILL");
    let second = ServiceProcess::start(&env_for("second")).await;
    eventually(
        "the second replica's scheduler pass",
        Duration::from_secs(30),
        || {
            let done = second.output().contains("schedule dry run: would rotate");
            async move { done.then_some(()) }
        },
    )
    .await;
    assert_eq!(
        emulator.stats().list_requests,
        listed,
        "the tenant was listed again"
    );
}
