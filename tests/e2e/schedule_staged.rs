//! Staged schedule rules, against real OpenBao, the emulator and the real binary: a staged
//! rule stages each due client and the promotion timer promotes it (audited and counted as its
//! own actor, on behalf of the scheduler); a client Vault holds nothing for is refused with why.

use std::time::Duration;

use secret_rotator::emulator::{random_client_id, regular_client};

use crate::{
    helpers::{ServiceProcess, bare_stack, eventually},
    schedule::history,
};

/// A service whose schedule rotates `clients` staged, 2 s after their last rotation, each
/// distributed for 1 s.
async fn staged_schedule(
    bao: &crate::helpers::Bao,
    emulator: &secret_rotator::emulator::RunningEmulator,
    m2m: &str,
    clients: &[&str],
    admin: &str,
) -> (ServiceProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let schedule = dir.path().join("schedule.toml");
    let clients = clients
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>();
    std::fs::write(
        &schedule,
        format!(
            "[[rule]]\nlabel = \"staged\"\nclients = [{}]\nmax_age = \"2s\"\nstrategy = \"staged\"\n",
            clients.join(", ")
        ),
    )
    .unwrap();
    let mut env = ServiceProcess::env_for(bao, emulator, m2m);
    env.retain(|(name, _)| *name != "ROTATOR_ADMIN_ADDR");
    env.push(("ROTATOR_ADMIN_ADDR", admin.to_owned()));
    env.push(("ROTATOR_SCHEDULE_FILE", schedule.display().to_string()));
    env.push(("ROTATOR_SCHEDULE_INTERVAL", "100ms".into()));
    env.push(("ROTATOR_STAGED_DISTRIBUTE_FOR", "1s".into()));
    // The tests poll ListRotations.
    env.push(("ROTATOR_CALLER_STATUS_PER_MINUTE", "100000".into()));
    env.push(("ROTATOR_CALLER_STATUS_BURST", "100000".into()));
    (ServiceProcess::start(&env).await, dir)
}

#[tokio::test]
async fn a_staged_rule_stages_then_promotes() {
    let (bao, emulator, m2m) = bare_stack().await;
    let held = random_client_id();
    emulator.add_client(regular_client(&held, "Staged app"));
    // A caller's rotation stores `held`'s secret in Vault.
    let plain = ServiceProcess::start(&ServiceProcess::env_for(&bao, &emulator, &m2m)).await;
    plain
        .client()
        .await
        .rotate_secret(crate::helpers::rotate(&held))
        .await
        .expect("a caller's rotation");
    drop(plain);
    let admin = format!("127.0.0.1:{}", crate::helpers::free_port());
    let (service, _dir) = staged_schedule(&bao, &emulator, &m2m, &[&held], &admin).await;

    // Due 2 s after the caller's rotation: staged, distributed for 1 s, promoted by the timer.
    let promoted = eventually(
        "a scheduled staged rotation promoted",
        Duration::from_secs(30),
        || {
            let service = &service;
            let held = &held;
            async move {
                history(service, held)
                    .await
                    .into_iter()
                    .find(|r| r.rotated_by == "scheduler" && r.outcome == "promoted")
            }
        },
    )
    .await;
    assert_eq!(
        promoted.strategy,
        secret_rotator::proto::RotationStrategy::Staged as i32
    );
    assert!(promoted.reason.contains("staged"), "{promoted:?}");
    // The audit trail names the promotion timer as the actor, on behalf of the scheduler
    // that staged it, with the rule's reason.
    let audited = service
        .audit_events()
        .into_iter()
        .find(|e| e["outcome"] == "promoted")
        .unwrap_or_else(|| panic!("the promotion's audit event in {}", service.output()));
    assert_eq!(audited["caller"], "promotion-timer", "{audited}");
    assert_eq!(audited["on_behalf_of"], "scheduler", "{audited}");
    assert_eq!(audited["reason"], promoted.reason.as_str(), "{audited}");
    // Counted as its own actor too, apart from the scheduler that staged it.
    let metrics = crate::helpers::scrape(&admin).await;
    for (outcome, actor) in [("staged", "scheduler"), ("promoted", "promotion-timer")] {
        let series = format!(
            "secret_rotator_rotations_total{{outcome=\"{outcome}\",class=\"ok\",strategy=\"staged\",actor=\"{actor}\"}} "
        );
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    eventually(
        "Vault to hold the promoted secret",
        Duration::from_secs(10),
        || {
            let live = emulator.client(&held).unwrap().client_secret;
            let bao = &bao;
            let held = &held;
            async move {
                let stored = bao.kv_data(&crate::helpers::vault_path(held)).await?;
                (stored["client_secret"].as_str() == live.as_deref()).then_some(())
            }
        },
    )
    .await;
}

/// A staged rule cannot rotate a client Vault holds nothing for: it says so, and Auth0 is not
/// touched.
#[tokio::test]
async fn a_staged_rule_says_why_it_cannot_stage_a_client_vault_holds_nothing_for() {
    let (bao, emulator, m2m) = bare_stack().await;
    let unheld = random_client_id();
    emulator.add_client(regular_client(&unheld, "Staged app"));
    let admin = format!("127.0.0.1:{}", crate::helpers::free_port());
    let (service, _dir) = staged_schedule(&bao, &emulator, &m2m, &[&unheld], &admin).await;
    let warned = eventually("the scheduler to say why", Duration::from_secs(30), || {
        let log = service.output();
        async move {
            log.lines()
                .find(|l| l.contains("scheduled rotation failed"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        warned.contains(&unheld) && warned.contains("Vault holds no secret"),
        "{warned}"
    );
    assert_eq!(emulator.client(&unheld).unwrap().rotations, 0);
    assert_eq!(
        emulator.client(&unheld).unwrap().issued_secrets.len(),
        1,
        "unchanged"
    );
}
