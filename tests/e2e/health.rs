use std::time::Duration;

use tokio_stream::StreamExt;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::helpers::Stack;

#[tokio::test]
async fn serving_after_start_up_checks_then_not_serving_on_shutdown() {
    let mut stack = Stack::start().await;
    let mut health = stack.health().await;
    for service in ["", "secretrotator.v1.SecretRotationService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "secretrotator.v1.SecretRotationService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    stack.trigger_shutdown();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a status change within 10 s")
        .expect("stream open")
        .expect("status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    stack.shutdown().await;
}

#[tokio::test]
async fn health_follows_vault_going_away_and_coming_back() {
    use secret_rotator::emulator::{random_client_id, regular_client};

    use crate::helpers::{Bao, StackOptions};

    let mut stack = Stack::start_on(
        Bao::start_persistent().await,
        StackOptions {
            // At rest the heartbeat (every reconcile interval) is Vault's readiness check.
            extra_args: [
                "--readiness-interval",
                "200ms",
                "--reconcile-interval",
                "1s",
            ]
            .map(String::from)
            .to_vec(),
            ..StackOptions::default()
        },
    )
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    stack.rotate_ok(&id).await;

    stack.bao.stop();
    stack.wait_for_health(ServingStatus::NotServing).await;
    stack.bao.restart().await;
    stack.wait_for_health(ServingStatus::Serving).await;
    stack.rotate_ok(&id).await;
    stack.shutdown().await;
}
