//! What a rotation costs the systems it shares (issue #8): Vault is shared infrastructure, so
//! the requests each rotation makes there are counted, from OpenBao's own audit log.

use std::time::Duration;

use secret_rotator::emulator::{random_client_id, regular_client};

use crate::helpers::{Bao, ServiceProcess, Stack, StackOptions, eventually};

#[tokio::test]
async fn a_rotation_makes_four_vault_requests_and_a_status_one() {
    let stack = Stack::start_on(Bao::start_audited().await, StackOptions::default()).await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    // The reconciler's start-up pass finds no records; the next one is 30 s away.
    eventually(
        "the start-up reconciler pass",
        Duration::from_secs(10),
        || async {
            let listed = stack.bao.requests().iter().any(|(op, _)| op == "list");
            listed.then_some(())
        },
    )
    .await;
    // The first rotation of a client on this replica reads its record; later ones do not.
    stack.rotate_ok(&id).await;
    let before = stack.bao.requests().len();
    stack.rotate_ok(&id).await;
    let ledger = format!("secret/data/secret-rotator/clients/{id}");
    let secret = format!("secret/data/auth0/clients/{id}");
    let made: Vec<(String, String)> = stack.bao.requests()[before..].to_vec();
    assert_eq!(
        made,
        [
            ("update".to_owned(), ledger.clone()),
            ("read".to_owned(), secret.clone()),
            ("update".to_owned(), secret),
            ("update".to_owned(), ledger.clone()),
        ],
        "lease and intent, the key's secret (to keep as the previous one), the secret, close"
    );

    let before = stack.bao.requests().len();
    let status = stack.status(&id).await;
    assert_eq!(
        status.last_rotation.unwrap().vault_secret.unwrap().version,
        2
    );
    assert_eq!(
        stack.bao.requests()[before..],
        [("read".to_owned(), ledger)],
        "GetRotationStatus reads the ledger record only"
    );
}

/// A stack on an audited OpenBao, reconciling every 100 ms and checking readiness every second,
/// with `clients` clients rotated once.
async fn rotated_on_audited_vault(clients: usize) -> (Stack, Vec<String>) {
    let stack = Stack::start_on(
        Bao::start_audited().await,
        StackOptions {
            extra_args: [
                "--reconcile-interval",
                "100ms",
                "--readiness-interval",
                "1s",
            ]
            .map(String::from)
            .to_vec(),
            ..StackOptions::default()
        },
    )
    .await;
    let ids: Vec<String> = (0..clients)
        .map(|n| stack.seed(regular_client(&random_client_id(), &format!("App {n}"))))
        .collect();
    for id in &ids {
        stack.rotate_ok(id).await;
    }
    (stack, ids)
}

/// At rest a replica costs the replicas' shared record, read and written once an interval, and
/// no client record: Vault's load does not grow with the number of records. Nor is Vault asked
/// anything for the readiness checks: the heartbeat's answers stand for them.
#[tokio::test]
async fn at_rest_a_replica_reads_and_writes_only_the_replicas_record() {
    let (stack, _) = rotated_on_audited_vault(10).await;
    let presence = "secret/data/secret-rotator/replicas";
    let turns_since = |from: usize| {
        stack.bao.requests()[from..]
            .iter()
            .filter(|(op, path)| op == "update" && path == presence)
            .count()
    };
    // A few turns after the last rotation, so that any pass it brought is over.
    let settled = stack.bao.requests().len();
    eventually("three turns", Duration::from_secs(10), || {
        let done = turns_since(settled) >= 3;
        async move { done.then_some(()) }
    })
    .await;
    let from = stack.bao.requests().len();
    eventually("twenty turns at rest", Duration::from_secs(20), || {
        let done = turns_since(from) >= 20;
        async move { done.then_some(()) }
    })
    .await;
    let window: Vec<(String, String)> = stack.bao.requests()[from..].to_vec();
    let turns = turns_since(from);
    eprintln!(
        "at rest: {} Vault requests in {turns} reconcile turns, 10 client records",
        window.len()
    );
    assert!(
        window.iter().all(|(_, path)| path == presence),
        "only the replicas' record: {window:?}"
    );
    assert!(
        window.len() <= 2 * turns + 2,
        "a read and a write a turn: {} in {turns}",
        window.len()
    );
}

/// A replica stopped (SIGTERM) with nothing open withdraws its heartbeat: the scanner sees no
/// lapse and reads no client record. One killed (SIGKILL) leaves its heartbeat to lapse, and
/// the scanner reads every record to heal what it may have left.
#[tokio::test]
async fn a_replica_stopped_cleanly_costs_no_pass_and_one_killed_does() {
    let (stack, ids) = rotated_on_audited_vault(5).await;
    let presence_path = "secret/data/secret-rotator/replicas";
    let records_read_since = |from: usize| {
        stack.bao.requests()[from..]
            .iter()
            .filter(|(op, path)| {
                op == "read" && path.starts_with("secret/data/secret-rotator/clients/")
            })
            .count()
    };
    let turns_since = |from: usize| {
        stack.bao.requests()[from..]
            .iter()
            .filter(|(op, path)| op == "update" && path == presence_path)
            .count()
    };
    let beats = || async {
        let record = stack.bao.kv_data("secret-rotator/replicas").await;
        record.unwrap_or_default()["beats"]
            .as_object()
            .map(|b| b.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for (signal, stopped_cleanly) in [("-TERM", true), ("-KILL", false)] {
        let mut env = ServiceProcess::env_for(&stack.bao, &stack.emulator, &stack.m2m_client_id);
        env.push(("ROTATOR_REPLICA_ID", format!("second{signal}")));
        env.push(("ROTATOR_RECONCILE_INTERVAL", "100ms".into()));
        let mut second = ServiceProcess::start(&env).await;
        eventually(
            "the second replica's heartbeat",
            Duration::from_secs(10),
            || async {
                beats()
                    .await
                    .contains(&format!("second{signal}"))
                    .then_some(())
            },
        )
        .await;
        // Seen by the scanner: a new name, nothing to look for. Then rest.
        let seen = stack.bao.requests().len();
        eventually("a few turns", Duration::from_secs(10), || {
            let done = turns_since(seen) >= 6;
            async move { done.then_some(()) }
        })
        .await;
        let from = stack.bao.requests().len();
        second.signal(signal);
        second.wait_exit().await;
        // Its heartbeat lasts three intervals: ten turns are past any lapse.
        eventually("ten turns after the stop", Duration::from_secs(20), || {
            let done = turns_since(from) >= 10 * 2;
            async move { done.then_some(()) }
        })
        .await;
        let read = records_read_since(from);
        eprintln!("{signal}: {read} client records read after the stop");
        match stopped_cleanly {
            true => {
                assert!(
                    !beats().await.contains(&format!("second{signal}")),
                    "withdrawn"
                );
                assert_eq!(read, 0, "no pass for a replica that left");
            }
            false => assert!(read >= ids.len(), "a pass for a replica that died: {read}"),
        }
    }
}
