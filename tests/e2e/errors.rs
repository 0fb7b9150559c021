use std::time::Duration;

use secret_rotator::emulator::{EmulatorConfig, Faults, random_client_id, regular_client};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{
    ServiceProcess, Stack, StackOptions, assert_status, bare_stack, eventually, rotate,
    rotate_fault, vault_path,
};

/// RotateSecret for `id` with a deadline of `timeout`.
fn rotate_within(
    id: &str,
    timeout: Duration,
) -> tonic::Request<secret_rotator::proto::RotateSecretRequest> {
    let mut request = tonic::Request::new(rotate(id));
    request.set_timeout(timeout);
    request
}

#[tokio::test]
async fn an_auth0_429_is_waited_out_and_the_rotation_goes_through() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    // Another tool emptied the tenant's bucket: Auth0 answers 429, reset 3 s ahead.
    stack.emulator.inject(Faults {
        rate_limited: 1,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    stack.rotate_ok(&id).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "after Retry-After"
    );
    let stats = stack.emulator.stats();
    assert_eq!((stats.rate_limited, stats.rotations), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn a_caller_who_cannot_wait_for_auth0_gets_resource_exhausted_with_retry_info() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    stack.emulator.inject(Faults {
        rate_limited: 1,
        ..Faults::default()
    });
    let status = stack
        .client()
        .await
        .rotate_secret(rotate_within(&id, Duration::from_millis(1500)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    // The emulator's reset is 3 s ahead, in whole epoch seconds.
    assert!(
        retry >= Duration::from_secs(1) && retry <= Duration::from_secs(4),
        "{retry:?}"
    );
    assert!(
        !status.message().contains("Global limit"),
        "upstream text leaked: {}",
        status.message()
    );
    assert_eq!(stack.emulator.stats().rotations, 0);
    assert!(stack.bao.secret_keys().await.is_empty());
}

#[tokio::test]
async fn a_small_bucket_makes_callers_wait_instead_of_failing() {
    // Free-plan bucket: 2 requests, then one a second.
    let stack = Stack::start_with(StackOptions {
        emulator: EmulatorConfig {
            rate_limit_burst: 2,
            rate_limit_per_second: 1,
            ..EmulatorConfig::default()
        },
        extra_args: vec!["--auth0-rate-limit-per-second".into(), "1".into()],
        ..StackOptions::default()
    })
    .await;
    let mut client = stack.client().await;
    let started = std::time::Instant::now();
    for _ in 0..4 {
        let id = stack.seed(regular_client(&random_client_id(), "App"));
        client
            .rotate_secret(rotate(&id))
            .await
            .expect("waited, not refused");
    }
    // Two from the burst, then one a second: the governor waited for the bucket.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        stack.emulator.stats().rate_limited,
        0,
        "no request was sent into a 429"
    );

    // A caller whose deadline ends before the next token is refused without asking Auth0.
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let status = client
        .rotate_secret(rotate_within(&id, Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("Auth0 rate limit reached; nothing was rotated"),
        "{status:?}"
    );
    assert!(status.get_details_retry_info().is_some());
    assert_eq!(stack.emulator.stats().rate_limited, 0);
}

#[tokio::test]
async fn auth0_server_error_is_unavailable() {
    let stack = Stack::start().await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    stack.emulator.inject(rotate_fault(503, false, 0));
    let status = stack.rotate_refused(&id).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        !status.message().contains("Injected"),
        "upstream text leaked"
    );
    assert_eq!(stack.emulator.stats().rotations, 0);

    // The next attempt, with Auth0 healthy again, works.
    stack.rotate_ok(&id).await;
    let data = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
    assert_eq!(
        data["client_secret"],
        stack.emulator.live_secret(&id).unwrap().as_str()
    );
}

#[tokio::test]
async fn auth0_timeout_is_unavailable() {
    let stack = Stack::start_with(StackOptions {
        extra_args: vec!["--auth0-timeout".into(), "300ms".into()],
        ..StackOptions::default()
    })
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    stack.emulator.inject(rotate_fault(504, false, 3_000));
    let status = stack.rotate_refused(&id).await;
    assert_status(&status, Code::Unavailable, "timed out");
}

#[tokio::test]
async fn vault_down_is_unavailable_and_auth0_is_not_touched() {
    let (mut bao, emulator, m2m) = bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "App"));
    let secret = emulator.live_secret(&id);
    let service = ServiceProcess::start(&ServiceProcess::env_for(&bao, &emulator, &m2m)).await;
    let mut client = service.client().await;
    bao.stop();
    let status = client.rotate_secret(rotate(&id)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The caller reads what failed and the trace id, not where Vault is or why it did not
    // answer; no token either.
    let message = status.message();
    let trace_id = message
        .strip_prefix("Vault is unavailable; nothing was rotated (trace ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{message}"));
    assert_eq!(trace_id.len(), 32, "{message}");
    assert!(!message.contains(&bao.addr) && !message.contains(&bao.token));
    assert_eq!(emulator.stats().rotate_requests, 0, "Auth0 was called");
    assert_eq!(emulator.live_secret(&id), secret);
    // The log line with the same trace id keeps where and why, for the operator.
    let logged = eventually("the failure's log line", Duration::from_secs(10), || {
        let output = service.output();
        let trace_id = trace_id.to_owned();
        async move {
            output
                .lines()
                .find(|l| l.contains(&trace_id) && l.contains("answered a failure of the service"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        logged.contains(&bao.addr) && logged.contains("\"level\":\"WARN\""),
        "{logged}"
    );
    assert!(!logged.contains(&bao.token), "{logged}");
}

#[tokio::test]
async fn auth0_unreachable_is_unavailable_without_its_address() {
    // Nothing listens on port 9 of loopback.
    let stack = Stack::start_with(StackOptions {
        extra_args: vec!["--auth0-base-url".into(), "http://127.0.0.1:9".into()],
        wait_serving: false,
        ..StackOptions::default()
    })
    .await;
    let id = random_client_id();
    let status = stack.rotate_refused(&id).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("Auth0 is unavailable: connection failed")
            && status.message().contains("(trace "),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("127.0.0.1"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("os error"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn missing_rotate_scope_is_internal_naming_the_scope_and_not_serving() {
    let stack = Stack::start_with(StackOptions {
        m2m_scopes: vec!["read:clients", "read:client_keys"],
        wait_serving: false,
        ..StackOptions::default()
    })
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let status = stack.rotate_refused(&id).await;
    assert_status(&status, Code::Internal, "update:client_keys");
    assert!(
        !status.message().contains("Insufficient scope"),
        "upstream text leaked"
    );
    // Start-up checks refuse SERVING while the scope is missing.
    let mut health = stack.health().await;
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
}

#[tokio::test]
async fn rejected_service_credentials_are_internal() {
    let stack = Stack::start_with(StackOptions {
        m2m_secret_presented: "wrong-secret".into(),
        wait_serving: false,
        ..StackOptions::default()
    })
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let status = stack.rotate_refused(&id).await;
    assert_status(&status, Code::Internal, "AUTH0_CLIENT_SECRET");
    assert_eq!(stack.emulator.stats().rotate_requests, 0);
}

#[tokio::test]
async fn vault_write_refused_after_auth0_rotated_is_left_to_the_reconciler() {
    // The token may read metadata but not write: the failure lands after Auth0 rotated.
    let stack = Stack::start_with(StackOptions {
        vault_policy: Some(
            r#"
            path "secret/metadata/*" { capabilities = ["read", "list"] }
            path "secret/data/*" { capabilities = ["read"] }
            path "secret/data/secret-rotator/*" { capabilities = ["create", "update", "read"] }
            "#,
        ),
        wait_serving: false,
        ..StackOptions::default()
    })
    .await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let status = stack.rotate_refused(&id).await;
    assert_status(&status, Code::Unavailable, "reconciler");
    assert!(status.message().contains(&id), "{}", status.message());
    assert_eq!(stack.emulator.stats().rotations, 1, "Auth0 did rotate");
    let live = stack.emulator.live_secret(&id).unwrap();
    assert!(!status.message().contains(&live));
    assert!(stack.bao.kv_data(&vault_path(&id)).await.is_none());
}
