//! Auth0's buckets as an Essentials tenant has them: reading clients limited apart from every
//! other endpoint. The governor learns the two buckets from the answers' headers alone (no
//! AUTH0_RATE_LIMITS) and paces each group by its own: a batch spending the other endpoints'
//! bucket and callers listing clients meanwhile both finish, with no 429 from Auth0.

use std::time::{Duration, Instant};

use secret_rotator::{
    emulator::{EmulatorConfig, RateGroups, random_client_id, regular_client},
    proto::{ListClientsRequest, RotateSecretsRequest},
};

use crate::{
    batch::run,
    helpers::{Stack, StackOptions},
};

const CLIENTS: usize = 30;

#[tokio::test]
async fn a_batch_and_client_lists_share_an_essentials_tenant_without_a_429() {
    let stack = Stack::start_with(StackOptions {
        emulator: EmulatorConfig {
            rate_groups: Some(RateGroups::ESSENTIALS),
            ..EmulatorConfig::default()
        },
        ..StackOptions::default()
    })
    .await;
    let ids: Vec<String> = (0..CLIENTS)
        .map(|_| stack.seed(regular_client(&random_client_id(), "Essentials app")))
        .collect();
    // (30 - 10) / 2.5 = 8 s at the other endpoints' rate, while a caller lists clients back
    // to back, faster than their bucket refills (100 a minute): each list waits for its own
    // group's token, never for the batch's, and none is sent to be refused.
    let batch = run(
        &stack,
        RotateSecretsRequest {
            client_ids: ids.clone(),
            reason: "essentials".into(),
            max_concurrency: 8,
            ..Default::default()
        },
    );
    let lists = async {
        let mut answered = Vec::new();
        let mut client = stack.client().await;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            let asked = Instant::now();
            let page = client
                .list_clients(ListClientsRequest {
                    page_size: 10,
                    ..Default::default()
                })
                .await;
            answered.push((page.map(|p| p.into_inner().clients.len()), asked.elapsed()));
        }
        answered
    };
    let ((outcomes, summary), answered) = tokio::join!(batch, lists);
    let stats = stack.emulator.stats();
    eprintln!(
        "essentials: {} rotated, {} lists, {} Management API requests, {} answered 429",
        summary.rotated,
        answered.len(),
        stats.requests,
        stats.rate_limited
    );
    assert_eq!(summary.rotated as usize, CLIENTS, "{outcomes:?}");
    assert!(answered.len() >= 8, "{} lists", answered.len());
    for (page, took) in &answered {
        assert!(
            matches!(page, Ok(n) if *n == 10),
            "a list during the batch: {page:?} after {took:?}"
        );
    }
    assert_eq!(stats.rate_limited, 0, "Auth0 answered 429");
}
