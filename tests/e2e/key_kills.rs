//! A key rotation whose replica is killed at each step that talks to Auth0 (registering the
//! new key, attaching it, verifying it, and retiring the old one), through the real binary:
//! the emulator does each step and holds its answer while the test kills the process with
//! SIGKILL. A restarted replica heals the rotation (withdrawn before the switch, finished
//! after it; a caller may cancel one cut off before its switch), and a consumer that signs a client assertion every 10 ms with whatever Vault
//! holds never fails, nor are Auth0's limits reached.

use std::{sync::Arc, time::Duration};

use secret_rotator::{
    emulator::{
        Emulator, EmulatorConfig, Faults, HeldStep, Hold, m2m_client, pkjwt_client,
        random_client_id,
    },
    proto::{
        CancelRotationRequest, CompleteRotationRequest, GetRotationStatusRequest,
        GetRotationStatusResponse, ListRotationsRequest,
    },
};
use tokio::net::TcpListener;

use crate::{
    helpers::{M2M_SECRET, ServiceProcess, eventually, rotate, vault_path},
    key_rotation::{Consumer, authenticate, key_scopes},
    support::Bao,
};

async fn status(service: &ServiceProcess, id: &str) -> Option<GetRotationStatusResponse> {
    Some(
        service
            .client()
            .await
            .get_rotation_status(GetRotationStatusRequest {
                client_id: id.to_owned(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner(),
    )
}

/// Waits until `id` has no open intent and no overlap, and one credential: what it is.
async fn settled(
    service: &ServiceProcess,
    emulator: &secret_rotator::emulator::RunningEmulator,
    id: &str,
    what: &str,
) -> Vec<secret_rotator::emulator::CredentialInspection> {
    eventually(what, Duration::from_secs(30), || async {
        let s = status(service, id).await?;
        let pool = emulator.credentials(id);
        (s.open_intent.is_none() && s.key_overlap.is_none() && pool.len() == 1).then_some(pool)
    })
    .await
}

/// Holds the next request of `step` and kills `service` once it arrived; the replica that
/// replaces it is returned.
async fn kill_at(
    emulator: &secret_rotator::emulator::RunningEmulator,
    env: &[(&str, String)],
    mut service: ServiceProcess,
    step: HeldStep,
    call: impl std::future::Future<Output = ()> + Send + 'static,
) -> ServiceProcess {
    let held = emulator.stats().held;
    emulator.inject(Faults {
        holds: vec![Hold {
            step,
            delay_ms: 60_000,
        }],
        ..Faults::default()
    });
    let call = tokio::spawn(call);
    eventually(
        &format!("{step:?} to be held"),
        Duration::from_secs(20),
        || {
            let now = emulator.stats().held;
            async move { (now > held).then_some(()) }
        },
    )
    .await;
    service.signal("-KILL");
    service.wait_exit().await;
    call.await.unwrap();
    ServiceProcess::start(env).await
}

#[tokio::test]
async fn a_replica_killed_at_each_step_of_a_key_rotation_is_healed_and_consumers_never_fail() {
    let bao = Arc::new(Bao::start().await);
    let m2m = random_client_id();
    let scopes = key_scopes();
    let id = random_client_id();
    let emulator = Arc::new(
        Emulator::new(EmulatorConfig::default())
            .with_client(m2m_client(&m2m, M2M_SECRET, &scopes))
            .with_client(pkjwt_client(&id))
            .start(TcpListener::bind("127.0.0.1:0").await.unwrap()),
    );
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend([
        ("ROTATOR_DEADLINE", "3s".to_owned()),
        ("ROTATOR_MAX_DEADLINE", "3s".to_owned()),
        ("AUTH0_TIMEOUT", "1s".to_owned()),
        ("ROTATOR_LEASE_TTL", "5s".to_owned()),
        ("ROTATOR_RECONCILE_INTERVAL", "200ms".to_owned()),
    ]);
    let seeded = emulator.credentials(&id)[0].id.clone();

    let consumer = Consumer::start({
        let (bao, emulator, id, http) = (
            bao.clone(),
            emulator.clone(),
            id.clone(),
            reqwest::Client::new(),
        );
        move || {
            let (bao, emulator, id, http) =
                (bao.clone(), emulator.clone(), id.clone(), http.clone());
            async move { authenticate(&bao, &emulator, &http, &id).await }
        }
    });

    let mut service = ServiceProcess::start(&env).await;
    // Killed before the switch: the new key is withdrawn (detached, deleted, dropped from
    // Vault) and consumers keep the key they have.
    for step in [
        HeldStep::CreateCredential,
        HeldStep::ChangeMethods,
        HeldStep::Verify,
    ] {
        let mut client = service.client().await;
        let call = {
            let id = id.clone();
            async move {
                let killed = client.rotate_secret(rotate(&id)).await;
                assert!(killed.is_err(), "the call dies with the process");
            }
        };
        service = kill_at(&emulator, &env, service, step, call).await;
        if step == HeldStep::Verify {
            // The caller whose call died cancels the rotation it finds at the head of the
            // history: the new key is withdrawn (by the heal its lease waits for).
            let mut client = service.client().await;
            let cut = client
                .list_rotations(ListRotationsRequest {
                    client_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .rotations[0]
                .rotation_id
                .clone();
            eventually("CancelRotation to answer", Duration::from_secs(30), || {
                let mut client = client.clone();
                let request = CancelRotationRequest {
                    client_id: id.clone(),
                    rotation_id: cut.clone(),
                };
                async move { client.cancel_rotation(request).await.ok() }
            })
            .await;
        }
        let healed = settled(
            &service,
            &emulator,
            &id,
            &format!("the rotation killed at {step:?} to be withdrawn"),
        )
        .await;
        assert_eq!(healed[0].id, seeded, "{step:?}: the key in use stays");
        assert!(healed[0].attached_to.is_some());
        let held = bao.kv_data(&vault_path(&id)).await;
        assert!(
            held.as_ref()
                .is_none_or(|k| k.get("next_private_key").is_none()),
            "{step:?}: {held:?}"
        );
    }

    // A rotation that finishes, then a kill while its old key is retired (detached, deleted):
    // the retirement is finished by the restarted replica.
    for step in [HeldStep::ChangeMethods, HeldStep::DeleteCredential] {
        let answer = service
            .client()
            .await
            .rotate_secret(rotate(&id))
            .await
            .expect("a key rotation")
            .into_inner();
        assert_eq!(
            emulator.credentials(&id).len(),
            2,
            "both during the overlap"
        );
        let mut client = service.client().await;
        let call = {
            let (id, rotation_id) = (id.clone(), answer.rotation_id.clone());
            async move {
                let killed = client
                    .complete_rotation(CompleteRotationRequest {
                        client_id: id,
                        rotation_id,
                    })
                    .await;
                assert!(killed.is_err(), "the call dies with the process");
            }
        };
        service = kill_at(&emulator, &env, service, step, call).await;
        let left = settled(
            &service,
            &emulator,
            &id,
            &format!("the retirement killed at {step:?} to finish"),
        )
        .await;
        assert_eq!(
            left[0].id, answer.credential_id,
            "{step:?}: the new key stays"
        );
        let held = bao.kv_data(&vault_path(&id)).await.unwrap();
        assert_eq!(held["credential_id"], answer.credential_id.as_str());
        assert!(held.get("previous_private_key").is_none(), "{held:?}");
    }

    let (tried, failed) = consumer.stop().await;
    assert!(tried >= 100, "{tried} attempts");
    assert_eq!(failed, 0, "{failed} of {tried} authentications failed");
    eprintln!("consumer: {tried} authentications across 5 kills, {failed} failed");
}
