//! Partial failures, retries and races (issue #3). Each test ends on the invariant "Vault holds
//! the secret Auth0 accepts now" and counts rotations at the emulator.

use std::{collections::HashMap, time::Duration};

use prost::Message;
use secret_rotator::{
    emulator::{Emulator, EmulatorConfig, m2m_client, random_client_id, regular_client},
    proto::GetRotationStatusRequest,
};
use tokio::net::TcpListener;
use tonic::Code;

use crate::helpers::{
    ALL_SCOPES, Bao, M2M_SECRET, ServiceProcess, Stack, StackOptions, assert_status, eventually,
    keyed, rotate, rotate_fault, slow_answer, vault_path,
};

/// Fast reconciler and short leases, so healing happens within a test's patience.
fn quick_recovery() -> Vec<String> {
    [
        "--deadline",
        "2s",
        "--max-deadline",
        "2s",
        "--auth0-timeout",
        "1s",
        "--lease-ttl",
        "4s",
        "--reconcile-interval",
        "200ms",
    ]
    .map(String::from)
    .to_vec()
}

/// Polls until Vault holds the secret the emulator accepts for `id`.
async fn vault_converges(
    bao: &Bao,
    emulator: &secret_rotator::emulator::RunningEmulator,
    id: &str,
) {
    eventually(
        "Vault to hold the live secret",
        Duration::from_secs(30),
        || async {
            let live = emulator.live_secret(id)?;
            let data = bao.kv_data(&vault_path(id)).await?;
            (data["client_secret"] == live.as_str()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn auth0_commits_then_answers_502_and_the_live_secret_is_recovered() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    stack.emulator.inject(rotate_fault(502, true, 0));
    let status = stack.rotate_refused(&id).await;
    assert_status(&status, Code::Unavailable, "nothing is lost");

    assert_eq!(stack.emulator.stats().rotations, 1, "never rotated twice");
    let data = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
    assert_eq!(
        data["client_secret"],
        stack.emulator.live_secret(&id).unwrap().as_str()
    );
    let status = stack.status(&id).await;
    assert!(status.last_rotation.unwrap().recovered);
    assert!(status.open_intent.is_none());
}

#[tokio::test]
async fn auth0_commits_then_times_out_and_the_live_secret_is_recovered_with_an_ok() {
    let stack = Stack::start_with(StackOptions {
        extra_args: vec!["--auth0-timeout".into(), "300ms".into()],
        ..StackOptions::default()
    })
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    stack.rotate_ok(&id).await;
    stack.emulator.inject(rotate_fault(504, true, 2_000));
    // Auth0's secret is not the one Vault held: a rotation for sure, so OK, marked recovered.
    let answer = stack.rotate_ok(&id).await;
    assert!(answer.recovered, "{answer:?}");
    assert_eq!(answer.vault_secret.unwrap().version, 2);
    assert_eq!(stack.emulator.stats().rotations, 2);
    let data = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
    assert_eq!(
        data["client_secret"],
        stack.emulator.live_secret(&id).unwrap().as_str()
    );
    let meta = stack.bao.kv_metadata(&vault_path(&id)).await.unwrap();
    assert_eq!(meta["current_version"], 2);
    assert!(stack.status(&id).await.last_rotation.unwrap().recovered);
}

#[tokio::test]
async fn vault_killed_after_the_auth0_call_is_healed_once_it_is_back() {
    let bao = Bao::start_persistent().await;
    let mut stack = Stack::start_on(
        bao,
        StackOptions {
            extra_args: quick_recovery(),
            ..StackOptions::default()
        },
    )
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    // Auth0 rotates at once and answers half a second later (within AUTH0_TIMEOUT): time to
    // stop Vault while the rotation is between Auth0 and Vault.
    stack.emulator.inject(slow_answer(500));

    let mut client = stack.client().await;
    let call = tokio::spawn({
        let id = id.clone();
        async move { client.rotate_secret(rotate(&id)).await }
    });
    eventually("Auth0 to rotate", Duration::from_secs(10), || async {
        (stack.emulator.stats().rotations == 1).then_some(())
    })
    .await;
    stack.bao.stop();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    stack.bao.restart().await;
    vault_converges(&stack.bao, &stack.emulator, &id).await;
    assert_eq!(
        stack.emulator.stats().rotations,
        1,
        "healed without rotating again"
    );
    let last = eventually(
        "the heal to close the intent",
        Duration::from_secs(10),
        || async {
            let status = stack.status(&id).await;
            status.open_intent.is_none().then_some(status.last_rotation)
        },
    )
    .await;
    assert!(last.expect("a last rotation").recovered);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_service_killed_between_auth0_and_vault_is_healed_after_restart() {
    let bao = Bao::start().await;
    let m2m = random_client_id();
    let id = random_client_id();
    let emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_client(&m2m, M2M_SECRET, ALL_SCOPES))
        .with_client(regular_client(&id, "App"))
        .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend([
        ("ROTATOR_DEADLINE", "2s".to_owned()),
        ("ROTATOR_MAX_DEADLINE", "2s".to_owned()),
        ("AUTH0_TIMEOUT", "1s".to_owned()),
        ("ROTATOR_LEASE_TTL", "4s".to_owned()),
        ("ROTATOR_RECONCILE_INTERVAL", "200ms".to_owned()),
    ]);

    // Auth0 rotates at once and answers only after the process is gone.
    emulator.inject(slow_answer(60_000));
    let mut first = ServiceProcess::start(&env).await;
    let mut client = first.client().await;
    let call = tokio::spawn({
        let id = id.clone();
        async move { client.rotate_secret(rotate(&id)).await }
    });
    eventually("Auth0 to rotate", Duration::from_secs(10), || async {
        (emulator.stats().rotations == 1).then_some(())
    })
    .await;
    first.signal("-KILL");
    first.wait_exit().await;
    assert!(
        call.await.unwrap().is_err(),
        "the call dies with the process"
    );
    assert!(
        bao.kv_data(&vault_path(&id)).await.is_none(),
        "the window was hit: nothing stored"
    );

    let second = ServiceProcess::start(&env).await;
    vault_converges(&bao, &emulator, &id).await;
    assert_eq!(
        emulator.stats().rotations,
        1,
        "healed without rotating again"
    );
    // The heal closes the intent after storing the secret and its metadata.
    let status = eventually("the intent to close", Duration::from_secs(10), || {
        let second = &second;
        let id = id.clone();
        async move {
            let s = second
                .client()
                .await
                .get_rotation_status(GetRotationStatusRequest {
                    client_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            s.open_intent.is_none().then_some(s)
        }
    })
    .await;
    let last = status
        .last_rotation
        .expect("the last rotation, once its intent is closed");
    assert!(last.recovered);
    assert!(
        second.output().contains("healed an open rotation"),
        "the heal is logged"
    );
}

#[tokio::test]
async fn three_processes_200_calls_10_clients_keep_vault_equal_to_auth0() {
    let bao = Bao::start().await;
    let m2m = random_client_id();
    let ids: Vec<String> = (0..10).map(|_| random_client_id()).collect();
    let mut emulator = Emulator::new(EmulatorConfig {
        rate_limit_burst: 100_000,
        rate_limit_per_second: 100_000,
        ..EmulatorConfig::default()
    })
    .with_client(m2m_client(&m2m, M2M_SECRET, ALL_SCOPES));
    for id in &ids {
        emulator = emulator.with_client(regular_client(id, "App"));
    }
    let emulator = emulator.start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    // Keep every version, so that each OK answer's version can be checked.
    let config = Some(serde_json::json!({"max_versions": 1000}));
    let (status, _) = bao
        .api(reqwest::Method::POST, "secret/config", config)
        .await;
    assert_eq!(status, 204);
    let env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    let replicas = [
        ServiceProcess::start(&env).await,
        ServiceProcess::start(&env).await,
        ServiceProcess::start(&env).await,
    ];
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.client().await);
    }

    let calls: Vec<_> = (0..200)
        .map(|i| {
            let mut client = clients[i % 3].clone();
            let id = ids[i % 10].clone();
            tokio::spawn(async move { (id.clone(), client.rotate_secret(rotate(&id)).await) })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = HashMap::<Code, usize>::new();
    for call in calls {
        let (id, result) = call.await.unwrap();
        match result {
            Ok(answer) => ok.push((id, answer.into_inner())),
            Err(status) => *refused.entry(status.code()).or_default() += 1,
        }
    }
    assert!(
        refused.keys().all(|c| *c == Code::Aborted),
        "only ABORTED (busy) refusals are acceptable: {refused:?}"
    );
    assert_eq!(
        emulator.stats().rotations as usize,
        ok.len(),
        "rotations equal OK answers ({refused:?})"
    );
    for id in &ids {
        let data = bao.kv_data(&vault_path(id)).await.expect("stored");
        assert_eq!(
            data["client_secret"],
            emulator.live_secret(id).unwrap().as_str(),
            "{id}"
        );
    }
    let mut versions = HashMap::<String, Vec<i64>>::new();
    for (id, answer) in &ok {
        let version = answer.vault_secret.as_ref().unwrap().version;
        versions.entry(id.clone()).or_default().push(version);
        let data = bao
            .kv_version(&vault_path(id), version)
            .await
            .expect("version exists");
        let issued = emulator.client(id).unwrap().issued_secrets;
        assert!(
            issued.iter().any(|s| data["client_secret"] == s.as_str()),
            "version {version} of {id} holds a secret Auth0 never issued"
        );
    }
    for (id, mut v) in versions {
        let n = v.len();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), n, "two OK answers share a KV version for {id}");
    }
    eprintln!("three replicas: {} OK, refused {refused:?}", ok.len());
}

#[tokio::test]
async fn a_retried_request_with_the_same_idempotency_key_rotates_once() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let other = stack.seed(regular_client(&random_client_id(), "Other"));
    let mut client = stack.client().await;

    let first = client
        .rotate_secret(keyed(&id, "deploy-2026-11-27:1"))
        .await
        .unwrap()
        .into_inner();
    let mut again = client
        .rotate_secret(keyed(&id, "deploy-2026-11-27:1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed && again.replayed, "the replay says so");
    again.replayed = false;
    assert_eq!(
        first.encode_to_vec(),
        again.encode_to_vec(),
        "otherwise identical answers"
    );
    assert_eq!(stack.emulator.stats().rotations, 1);

    // Concurrent retries of one key: one rotation, one answer.
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let mut client = client.clone();
            let id = id.clone();
            tokio::spawn(async move { client.rotate_secret(keyed(&id, "burst")).await })
        })
        .collect();
    let mut answers = Vec::new();
    let mut fresh = 0;
    for call in calls {
        let mut answer = call.await.unwrap().expect("same answer").into_inner();
        fresh += usize::from(!answer.replayed);
        answer.replayed = false;
        answers.push(answer.encode_to_vec());
    }
    answers.dedup();
    assert_eq!(answers.len(), 1);
    assert_eq!(
        fresh, 1,
        "one answer is the rotation, the others its replays"
    );
    assert_eq!(stack.emulator.stats().rotations, 2);

    let status = client
        .rotate_secret(keyed(&other, "deploy-2026-11-27:1"))
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, "another client");
    let status = client
        .rotate_secret(keyed(&id, "not/a/key"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(stack.emulator.stats().rotations, 2);
    let data = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
    assert_eq!(
        data["client_secret"],
        stack.emulator.live_secret(&id).unwrap().as_str()
    );
}

#[tokio::test]
async fn a_stale_intent_does_not_replace_a_newer_rotation() {
    // No replica's heartbeat announces this intent: the scanner's safety sweep finds it.
    let mut extra_args = quick_recovery();
    extra_args.extend(["--full-scan-interval".to_owned(), "1s".to_owned()]);
    let stack = Stack::start_with(StackOptions {
        extra_args,
        ..StackOptions::default()
    })
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let newer = stack.rotate_ok(&id).await;

    // An intent from an old rotation whose replica died resurfaces in the record.
    let state = format!("secret/data/secret-rotator/clients/{id}");
    let (_, current) = stack.bao.api(reqwest::Method::GET, &state, None).await;
    let version = current["data"]["metadata"]["version"].as_u64().unwrap();
    let mut record = current["data"]["data"].clone();
    record["intent"] = serde_json::json!({
        "rotation_id": uuid::Uuid::new_v4(), "caller": null, "reason": null,
        "started_at": {"secs_since_epoch": 1_700_000_000u64, "nanos_since_epoch": 0},
        "idempotency_key": null
    });
    let stale = serde_json::json!({"options": {"cas": version}, "data": record});
    let (status, body) = stack
        .bao
        .api(reqwest::Method::POST, &state, Some(stale))
        .await;
    assert_eq!(status, 200, "{body}");

    eventually(
        "the reconciler to close the stale intent",
        Duration::from_secs(30),
        || async {
            let (_, record) = stack.bao.api(reqwest::Method::GET, &state, None).await;
            record["data"]["data"]["intent"].is_null().then_some(())
        },
    )
    .await;
    let meta = stack.bao.kv_metadata(&vault_path(&id)).await.unwrap();
    assert_eq!(meta["current_version"], 1, "nothing rewritten");
    let last = stack.status(&id).await.last_rotation.unwrap();
    assert_eq!(
        last.rotation_id, newer.rotation_id,
        "still the newer rotation"
    );
    let data = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
    assert_eq!(
        data["client_secret"],
        stack.emulator.live_secret(&id).unwrap().as_str()
    );
    assert_eq!(stack.emulator.stats().rotations, 1);
}

#[tokio::test]
async fn a_client_mid_rotation_elsewhere_is_waited_for_then_aborted() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    stack.hold_lease_elsewhere(&id).await;
    let mut request = tonic::Request::new(rotate(&id));
    request.set_timeout(Duration::from_millis(800));
    let status = stack
        .client()
        .await
        .rotate_secret(request)
        .await
        .unwrap_err();
    assert_status(&status, Code::Aborted, "in progress");
    assert_eq!(stack.emulator.stats().rotate_requests, 0);
}

#[tokio::test]
async fn without_read_client_keys_rotations_are_refused_unless_the_risk_is_accepted() {
    let stack = Stack::start_with(StackOptions {
        m2m_scopes: vec!["read:clients", "update:client_keys"],
        ..StackOptions::default()
    })
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let status = stack.rotate_refused(&id).await;
    assert_status(&status, Code::FailedPrecondition, "read:client_keys");
    assert_eq!(stack.emulator.stats().rotate_requests, 0);

    let accepted = Stack::start_with(StackOptions {
        m2m_scopes: vec!["read:clients", "update:client_keys"],
        extra_args: vec!["--allow-unrecoverable-rotations".into(), "true".into()],
        ..StackOptions::default()
    })
    .await;
    let id = accepted.seed(regular_client(&random_client_id(), "App"));
    accepted.rotate_ok(&id).await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_rotation_finish() {
    let mut stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    // Auth0 answers a second after it rotated: shutdown arrives mid-rotation.
    stack.emulator.inject(slow_answer(1_000));
    let mut client = stack.client().await;
    let call = tokio::spawn({
        let id = id.clone();
        async move { client.rotate_secret(rotate(&id)).await }
    });
    eventually("Auth0 to rotate", Duration::from_secs(10), || async {
        (stack.emulator.stats().rotations == 1).then_some(())
    })
    .await;
    stack.trigger_shutdown();
    let answer = call
        .await
        .unwrap()
        .expect("the in-flight rotation completes")
        .into_inner();
    assert_eq!(answer.vault_secret.unwrap().version, 1);
    let data = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
    assert_eq!(
        data["client_secret"],
        stack.emulator.live_secret(&id).unwrap().as_str()
    );
    stack.shutdown().await;
}
