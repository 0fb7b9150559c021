//! Who rotates the rotator: two replicas whose own Auth0 credential is a private key kept in
//! Vault. A schedule rule rotates it every few seconds on one replica (overlapped, the new key
//! proved by a Management API token before replicas use it), while the other replica keeps
//! rotating other clients with tokens it asks for every 2 s, reading its key from Vault each
//! time. The scheduling replica is killed in the middle of a self-rotation and restarted: the
//! rotation is healed, and no rotation of another client ever fails.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use secret_rotator::{
    emulator::{
        CredentialInspection, Emulator, EmulatorConfig, Faults, HeldStep, Hold, RunningEmulator,
        SEED_PRIVATE_KEY_PEM, m2m_client, m2m_key_client, random_client_id, regular_client,
    },
    proto::{CompleteRotationRequest, ListRotationsRequest, RotationStrategy},
};
use tokio::net::TcpListener;
use tonic::Code;

use crate::{
    helpers::{ALL_SCOPES, Bao, M2M_SECRET, ServiceProcess, eventually, rotate},
    key_rotation::key_scopes,
};

/// The service's own application's rotations that ended with `outcome`, as ListRotations says.
async fn self_rotations(service: &ServiceProcess, own: &str, outcome: &str) -> usize {
    let answer = service
        .client()
        .await
        .list_rotations(ListRotationsRequest {
            client_id: own.to_owned(),
        })
        .await
        .expect("ListRotations");

    answer
        .into_inner()
        .rotations
        .iter()
        .filter(|r| r.outcome == outcome)
        .count()
}

#[tokio::test]
async fn two_replicas_rotate_their_own_key_on_a_schedule_and_never_lose_access() {
    let bao = Bao::start().await;
    let own = random_client_id();
    let others: Vec<String> = (0..4).map(|_| random_client_id()).collect();
    let mut emulator = Emulator::new(EmulatorConfig {
        token_lifetime: Duration::from_secs(2),
        ..EmulatorConfig::default()
    })
    .with_client(m2m_key_client(&own, &key_scopes()));
    for id in &others {
        emulator = emulator.with_client(regular_client(id, "App"));
    }
    let emulator = Arc::new(emulator.start(TcpListener::bind("127.0.0.1:0").await.unwrap()));
    let seeded = seed_own_key(&bao, &emulator, &own).await;
    let mut env = own_in_vault(&bao, &emulator, &own);
    env.extend([
        ("ROTATOR_STAGED_DISTRIBUTE_FOR", "1s".to_owned()),
        ("ROTATOR_RECONCILE_INTERVAL", "200ms".to_owned()),
        ("ROTATOR_DEADLINE", "3s".to_owned()),
        ("ROTATOR_MAX_DEADLINE", "3s".to_owned()),
        ("AUTH0_TIMEOUT", "1s".to_owned()),
        ("ROTATOR_LEASE_TTL", "5s".to_owned()),
        // The test asks ListRotations as often as it likes.
        ("ROTATOR_CALLER_STATUS_PER_MINUTE", "100000".to_owned()),
        ("ROTATOR_CALLER_STATUS_BURST", "100000".to_owned()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let schedule = dir.path().join("schedule.toml");
    std::fs::write(
        &schedule,
        format!("[[rule]]\nlabel = \"rotator\"\nclients = [\"{own}\"]\nmax_age = \"2s\"\n"),
    )
    .unwrap();
    let mut scheduling = env.clone();
    scheduling.extend([
        ("ROTATOR_SCHEDULE_FILE", schedule.display().to_string()),
        ("ROTATOR_SCHEDULE_INTERVAL", "200ms".to_owned()),
    ]);
    let mut a = ServiceProcess::start(&scheduling).await;
    let b = ServiceProcess::start(&env).await;

    // The other replica rotates the other clients throughout.
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
        let mut client = b.client().await;
        let others = others.clone();
        tokio::spawn(async move {
            for id in others.iter().cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match client.rotate_secret(rotate(id)).await {
                    Ok(_) => done.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("rotation of {id} failed: {e}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
                // Within Auth0's budget, so that the scheduled rotations find room.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Two self-rotations, each retired after its overlap.
    eventually("two self-rotations", Duration::from_secs(60), || async {
        (self_rotations(&a, &own, "retired").await >= 2).then_some(())
    })
    .await;

    // The next one is held at its attachment and the scheduling replica killed meanwhile.
    let held = emulator.stats().held;
    emulator.inject(Faults {
        holds: vec![Hold {
            step: HeldStep::ChangeMethods,
            delay_ms: 30_000,
        }],
        ..Faults::default()
    });
    eventually("a self-rotation held", Duration::from_secs(30), || {
        let now = emulator.stats().held;
        async move { (now > held).then_some(()) }
    })
    .await;
    a.signal("-KILL");
    a.wait_exit().await;
    let before_restart = self_rotations(&b, &own, "retired").await;
    let a = ServiceProcess::start(&scheduling).await;
    eventually(
        "two more self-rotations after the restart",
        Duration::from_secs(60),
        || async {
            (self_rotations(&a, &own, "retired").await >= before_restart + 2).then_some(())
        },
    )
    .await;

    // The rotation cut off at its attachment was withdrawn by the restarted replica.
    assert_eq!(self_rotations(&a, &own, "withdrawn").await, 1);

    stop.store(true, Ordering::SeqCst);
    driver.await.unwrap();
    let (done, failed) = (done.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    let rotations = self_rotations(&a, &own, "retired").await;
    eprintln!(
        "self-rotation: {rotations} of the service's own key, {done} rotations of other clients meanwhile, {failed} failed"
    );
    assert_eq!(
        failed, 0,
        "{failed} of {done} rotations of other clients failed"
    );
    assert!(done >= 20, "{done}");
    // Never more than two of the service's keys attached, and the one Vault holds works.
    let attached: Vec<_> = emulator
        .credentials(&own)
        .into_iter()
        .filter(|c| c.attached_to.is_some())
        .collect();
    assert!(!attached.is_empty() && attached.len() <= 2, "{attached:?}");
    let held = bao.kv_data(&format!("auth0/clients/{own}")).await.unwrap();
    assert!(
        attached
            .iter()
            .any(|c| c.id == held["credential_id"].as_str().unwrap())
    );
    assert_ne!(held["credential_id"], seeded.id.as_str(), "rotated");
    assert_eq!(emulator.stats().key_authentications_refused, 0);
}

/// Writes the service's key as the operator would (the layout the service writes) and returns
/// the credential it names.
async fn seed_own_key(bao: &Bao, emulator: &RunningEmulator, own: &str) -> CredentialInspection {
    let seeded = emulator.credentials(own)[0].clone();
    let (status, _) = bao
        .api(
            reqwest::Method::POST,
            &format!("secret/data/auth0/clients/{own}"),
            Some(serde_json::json!({"data": {
                "client_id": own, "private_key": SEED_PRIVATE_KEY_PEM, "algorithm": "RS256",
                "key_id": seeded.kid, "credential_id": seeded.id,
            }})),
        )
        .await;
    assert!(status < 300);
    seeded
}

fn own_in_vault(bao: &Bao, emulator: &RunningEmulator, own: &str) -> Vec<(&'static str, String)> {
    let mut env = ServiceProcess::env_for(bao, emulator, own);
    env.retain(|(k, _)| *k != "AUTH0_CLIENT_SECRET");
    env.push((
        "AUTH0_CREDENTIALS_VAULT_PATH",
        format!("auth0/clients/{own}"),
    ));
    env
}

/// Auth0 refuses the next Management API token: the proof of the service's new credential.
fn refuse_the_proof(emulator: &RunningEmulator) {
    emulator.inject(Faults {
        refused_tokens: 1,
        ..Faults::default()
    });
}

#[tokio::test]
async fn a_self_rotation_of_a_secret_whose_proof_fails_keeps_the_old_secret_working() {
    let bao = Bao::start().await;
    let own = random_client_id();
    let other = random_client_id();
    let emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_client(&own, M2M_SECRET, ALL_SCOPES))
        .with_client(regular_client(&other, "App"))
        .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let (status, _) = bao
        .api(
            reqwest::Method::POST,
            &format!("secret/data/auth0/clients/{own}"),
            Some(serde_json::json!({"data": {"client_id": own, "client_secret": M2M_SECRET}})),
        )
        .await;
    assert!(status < 300);
    let env = own_in_vault(&bao, &emulator, &own);
    let service = ServiceProcess::start(&env).await;
    let mut client = service.client().await;

    // The service's own secret is always staged: consumers (its replicas) read the next one.
    let staged = client
        .rotate_secret(rotate(&own))
        .await
        .expect("staged")
        .into_inner();
    assert_eq!(staged.strategy, RotationStrategy::Staged as i32);
    let held = bao.kv_data(&format!("auth0/clients/{own}")).await.unwrap();
    assert!(held.get("next_client_secret").is_some(), "{held:?}");

    refuse_the_proof(&emulator);
    let refused = client
        .complete_rotation(CompleteRotationRequest {
            client_id: own.clone(),
            rotation_id: staged.rotation_id.clone(),
        })
        .await
        .expect_err("the new secret did not get a token");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("the old credential is kept"),
        "{}",
        refused.message()
    );

    // Auth0 and Vault hold the old secret, the staged one is gone, and it works: for this
    // replica's next rotation, and for a replica that starts now and asks for a token first.
    assert_eq!(emulator.live_secret(&own).as_deref(), Some(M2M_SECRET));
    let held = bao.kv_data(&format!("auth0/clients/{own}")).await.unwrap();
    assert_eq!(held["client_secret"], M2M_SECRET);
    assert!(held.get("next_client_secret").is_none(), "{held:?}");
    client.rotate_secret(rotate(&other)).await.expect("rotates");
    drop(service);
    let restarted = ServiceProcess::start(&env).await;
    restarted
        .client()
        .await
        .rotate_secret(rotate(&other))
        .await
        .expect("a new replica authenticates with the secret Vault holds");
}

#[tokio::test]
async fn a_self_rotation_of_a_key_whose_proof_fails_withdraws_the_new_key() {
    let bao = Bao::start().await;
    let own = random_client_id();
    let other = random_client_id();
    let emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_key_client(&own, &key_scopes()))
        .with_client(regular_client(&other, "App"))
        .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let seeded = seed_own_key(&bao, &emulator, &own).await;
    let env = own_in_vault(&bao, &emulator, &own);
    let service = ServiceProcess::start(&env).await;
    let mut client = service.client().await;

    refuse_the_proof(&emulator);
    let refused = client
        .rotate_secret(rotate(&own))
        .await
        .expect_err("the new key did not get a token");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // Only the old key is left at Auth0 (the new one detached and deleted), Vault holds it,
    // and it works for a replica that starts now.
    let left = emulator.credentials(&own);
    assert_eq!(
        left.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [seeded.id.as_str()]
    );
    assert!(left[0].attached_to.is_some());
    let held = bao.kv_data(&format!("auth0/clients/{own}")).await.unwrap();
    assert_eq!(held["credential_id"], seeded.id.as_str());
    assert!(held.get("next_private_key").is_none(), "{held:?}");
    drop(service);
    let restarted = ServiceProcess::start(&env).await;
    restarted
        .client()
        .await
        .rotate_secret(rotate(&other))
        .await
        .expect("a new replica authenticates with the key Vault holds");
    assert_eq!(emulator.stats().key_authentications_refused, 0);
}
