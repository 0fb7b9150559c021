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
        Emulator, EmulatorConfig, Faults, HeldStep, Hold, SEED_PRIVATE_KEY_PEM, m2m_key_client,
        random_client_id, regular_client,
    },
    proto::ListRotationsRequest,
};
use tokio::net::TcpListener;

use crate::{
    helpers::{Bao, ServiceProcess, eventually, rotate},
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
    // The service's key, as the operator puts it in Vault: the layout the service writes.
    let seeded = emulator.credentials(&own)[0].clone();
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

    let mut env = ServiceProcess::env_for(&bao, &emulator, &own);
    env.retain(|(k, _)| *k != "AUTH0_CLIENT_SECRET");
    env.extend([
        (
            "AUTH0_CREDENTIALS_VAULT_PATH",
            format!("auth0/clients/{own}"),
        ),
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
