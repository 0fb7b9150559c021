//! The admin listener: Prometheus metrics after a few rotations, scraped and parsed, and the
//! health endpoints.

use std::{collections::HashMap, time::Duration};

use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::CompleteRotationRequest,
};

use crate::helpers::{
    ServiceProcess, bare_stack, eventually, free_port, keyed, rotate, rotate_staged, scrape,
};

/// `name{labels} value` lines of an OpenMetrics text, by `name{labels}`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn a_scrape_after_a_few_rotations_counts_them() {
    let (bao, emulator, m2m) = bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "Measured app"));
    let admin = format!("127.0.0.1:{}", free_port());
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.push(("ROTATOR_ADMIN_ADDR", admin.clone()));
    let service = ServiceProcess::start(&env).await;
    let http = reqwest::Client::new();
    let scrape = || {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let got = http.get(format!("http://{admin}/metrics")).send().await;
            got.unwrap().text().await.unwrap()
        }
    };

    // Before anything happened: every documented series is there, at 0 where it counts.
    let first = scrape().await;
    let at_start = samples(&first);
    for series in [
        "secret_rotator_rotation_steps_total{class=\"failed\"}",
        "secret_rotator_rotation_steps_total{class=\"refused\"}",
        "secret_rotator_rate_limited_total{by=\"auth0\"}",
        "secret_rotator_rate_limited_total{by=\"caller\"}",
        "secret_rotator_clients_overdue",
        "secret_rotator_oldest_secret_age_seconds",
    ] {
        assert_eq!(at_start.get(series), Some(&0.0), "{series} in\n{first}");
    }
    let build = format!(
        "secret_rotator_build_info{{version=\"{}\",commit=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(first.contains(&build), "{first}");
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            at_start.get(process).is_some_and(|v| *v >= 0.0),
            "{process} in\n{first}"
        );
    }
    assert!(at_start["process_resident_memory_bytes"] > 1e6);
    assert!(at_start["process_open_fds"] >= 3.0);

    let mut client = service.client().await;

    for _ in 0..3 {
        client.rotate_secret(rotate(&id)).await.unwrap();
    }
    client.rotate_secret(keyed(&id, "deploy-9")).await.unwrap();
    client.rotate_secret(keyed(&id, "deploy-9")).await.unwrap();
    let staged = client
        .rotate_secret(rotate_staged(&id))
        .await
        .unwrap()
        .into_inner();
    client
        .complete_rotation(CompleteRotationRequest {
            client_id: id.clone(),
            rotation_id: staged.rotation_id,
        })
        .await
        .unwrap();
    client
        .rotate_secret(rotate(&random_client_id()))
        .await
        .unwrap_err();

    let scrape = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        scrape.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let text = scrape.text().await.unwrap();
    eprintln!("metrics scrape:\n{text}");
    let got = samples(&text);
    let value = |series: &str| got.get(series).copied().unwrap_or(0.0);
    let rotations = |outcome: &str, class: &str, strategy: &str| {
        value(&format!(
            "secret_rotator_rotations_total{{outcome=\"{outcome}\",class=\"{class}\",strategy=\"{strategy}\",actor=\"caller\"}}"
        ))
    };
    assert_eq!(rotations("ok", "ok", "immediate"), 4.0, "{text}");
    assert_eq!(rotations("replayed", "ok", "immediate"), 1.0);
    assert_eq!(rotations("staged", "ok", "staged"), 1.0);
    assert_eq!(rotations("promoted", "ok", "staged"), 1.0);
    // A caller's mistake is refused, not failed: the failure alert does not count it.
    assert_eq!(rotations("client_not_found", "refused", "immediate"), 1.0);
    let steps = |class: &str| {
        got.get(&format!(
            "secret_rotator_rotation_steps_total{{class=\"{class}\"}}"
        ))
        .copied()
    };
    assert_eq!(steps("ok"), Some(7.0), "{text}");
    assert_eq!(steps("refused"), Some(1.0));
    assert_eq!(
        steps("failed"),
        Some(0.0),
        "present before the first failure"
    );
    assert_eq!(value("secret_rotator_ready"), 1.0);
    assert_eq!(value("secret_rotator_open_intents"), 0.0);
    assert_eq!(value("secret_rotator_needs_resync"), 0.0);
    assert!(value("secret_rotator_token_refreshes_total") >= 1.0);
    assert_eq!(
        value("secret_rotator_rpc_duration_seconds_count{rpc=\"RotateSecret\"}"),
        7.0
    );
    assert_eq!(
        value(
            "secret_rotator_upstream_duration_seconds_count{upstream=\"auth0\",operation=\"rotate-secret\",status=\"200\"}"
        ),
        4.0
    );
    assert_eq!(
        value(
            "secret_rotator_upstream_duration_seconds_count{upstream=\"auth0\",operation=\"patch-client\",status=\"200\"}"
        ),
        1.0
    );
    assert!(
        value(
            "secret_rotator_upstream_duration_seconds_count{upstream=\"vault\",operation=\"write\",status=\"200\"}"
        ) >= 10.0
    );
    assert!(!text.contains("client_id="), "no client label by default");
    assert!(text.trim_end().ends_with("# EOF"));

    let status = |path: &'static str| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            http.get(format!("http://{admin}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/healthz").await, 200);
    assert_eq!(status("/readyz").await, 200);
}

/// Secret ages without a schedule: the scanning replica's figures from the ledger, each
/// client's age with ROTATOR_METRICS_PER_CLIENT, and the clients older than
/// ROTATOR_MAX_SECRET_AGE counted as overdue until they are rotated again.
#[tokio::test]
async fn secret_ages_and_overdue_clients_are_scraped_without_a_schedule() {
    let (bao, emulator, m2m) = bare_stack().await;
    let (first, second) = (random_client_id(), random_client_id());
    emulator.add_client(regular_client(&first, "Aged app"));
    emulator.add_client(regular_client(&second, "Other aged app"));
    let admin = format!("127.0.0.1:{}", free_port());
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend([
        ("ROTATOR_ADMIN_ADDR", admin.clone()),
        ("ROTATOR_MAX_SECRET_AGE", "3s".into()),
        ("ROTATOR_METRICS_PER_CLIENT", "true".into()),
    ]);
    let service = ServiceProcess::start(&env).await;
    let scrape = || async { samples(&scrape(&admin).await) };
    let mut client = service.client().await;
    client.rotate_secret(rotate(&first)).await.unwrap();
    client.rotate_secret(rotate(&second)).await.unwrap();
    let age_of = |id: &str| format!("secret_rotator_secret_age_seconds{{client_id=\"{id}\"}}");

    // Both pass ROTATOR_MAX_SECRET_AGE: overdue, each with its age.
    let got = eventually("both clients overdue", Duration::from_secs(20), || async {
        let got = scrape().await;
        (got.get("secret_rotator_clients_overdue") == Some(&2.0)).then_some(got)
    })
    .await;
    assert!(got[&age_of(&first)] >= 3.0, "{got:?}");
    assert!(got[&age_of(&second)] >= 3.0, "{got:?}");
    assert!(got["secret_rotator_oldest_secret_age_seconds"] >= got[&age_of(&second)]);

    // Rotated again: no longer overdue, and young.
    client.rotate_secret(rotate(&first)).await.unwrap();
    let got = scrape().await;
    assert_eq!(
        got.get("secret_rotator_clients_overdue"),
        Some(&1.0),
        "{got:?}"
    );
    assert!(got[&age_of(&first)] < 3.0, "{got:?}");
    assert!(got["secret_rotator_oldest_secret_age_seconds"] >= 3.0);
}
