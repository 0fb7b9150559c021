//! The emulator's client list and rate limiter, as a fleet's tests and benchmarks use them:
//! both pagination styles cover every client exactly once, filters and field selection work,
//! secrets appear only with `read:client_keys`, and the `x-ratelimit-*` headers follow the
//! configured bucket exactly.

use std::collections::HashSet;

use secret_rotator::emulator::{
    Emulator, EmulatorConfig, RateGroups, RunningEmulator, fleet_clients, m2m_client,
    random_client_id,
};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::helpers::{ALL_SCOPES, M2M_SECRET};

const FLEET: usize = 250;

async fn emulator(burst: u32, per_second: u32, scopes: &[&str]) -> (RunningEmulator, String) {
    let config = EmulatorConfig {
        rate_limit_burst: burst,
        rate_limit_per_second: per_second,
        ..EmulatorConfig::default()
    };
    emulator_with(config, scopes).await
}

async fn emulator_with(config: EmulatorConfig, scopes: &[&str]) -> (RunningEmulator, String) {
    let m2m = random_client_id();
    let mut emulator = Emulator::new(config).with_client(m2m_client(&m2m, M2M_SECRET, scopes));
    for client in fleet_clients(FLEET) {
        emulator = emulator.with_client(client);
    }
    let emulator = emulator.start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let token: Value = reqwest::Client::new()
        .post(format!("{}/oauth/token", emulator.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", m2m.as_str()),
            ("client_secret", M2M_SECRET),
            (
                "audience",
                &format!("https://{}/api/v2/", emulator.domain()),
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    (emulator, token)
}

async fn list(
    emulator: &RunningEmulator,
    token: &str,
    query: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}/api/v2/clients?{query}", emulator.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn ids(clients: &Value) -> Vec<String> {
    clients
        .as_array()
        .expect("a list of clients")
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn both_pagination_styles_list_every_client_once() {
    let (emulator, token) = emulator(1000, 1000, ALL_SCOPES).await;
    let everyone = FLEET + 1; // and the service's own application

    let mut offset = Vec::new();
    for page in 0.. {
        let (status, _, body) = list(
            &emulator,
            &token,
            &format!("page={page}&per_page=100&include_totals=true"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], everyone);
        assert_eq!(body["start"], page * 100);
        let got = ids(&body["clients"]);
        if got.is_empty() {
            break;
        }
        offset.extend(got);
    }
    let mut checkpoint = Vec::new();
    let mut from = String::new();
    loop {
        let query = match from.as_str() {
            "" => "take=60".to_owned(),
            from => format!("take=60&from={from}"),
        };
        let (status, _, body) = list(&emulator, &token, &query).await;
        assert_eq!(status, 200, "{body}");
        checkpoint.extend(ids(&body["clients"]));
        match body["next"].as_str() {
            Some(next) => from = next.to_owned(),
            None => break,
        }
    }
    for listed in [&offset, &checkpoint] {
        assert_eq!(listed.len(), everyone);
        assert_eq!(
            listed.iter().collect::<HashSet<_>>().len(),
            everyone,
            "no client twice"
        );
    }
    assert_eq!(offset, checkpoint, "one order");

    // Without include_totals: a bare array of the default 50.
    let (_, _, body) = list(&emulator, &token, "").await;
    assert_eq!(ids(&body).len(), 50);
    // Auth0's limits and mixed styles are refused as Auth0 refuses them.
    for bad in ["per_page=101", "page=1&from=x"] {
        let (status, _, body) = list(&emulator, &token, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["errorCode"], "invalid_query_string");
    }
}

#[tokio::test]
async fn filters_fields_and_secrets() {
    let (emulator, token) = emulator(1000, 1000, ALL_SCOPES).await;
    let (_, _, body) = list(&emulator, &token, "app_type=regular_web&per_page=100").await;
    let web = body.as_array().unwrap();
    assert!(!web.is_empty());
    assert!(web.iter().all(|c| c["app_type"] == "regular_web"));
    assert!(
        web.iter()
            .all(|c| c["client_metadata"]["rotation"] == "manual")
    );

    // With read:client_keys the list carries secrets, unless the fields leave them out.
    let fields = "fields=client_id,app_type,client_metadata&include_fields=true&per_page=100";
    let (_, _, lean) = list(&emulator, &token, fields).await;
    for client in lean.as_array().unwrap() {
        let keys: HashSet<&str> = client
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            keys.is_subset(&HashSet::from([
                "client_id",
                "app_type",
                "client_metadata",
                "tenant"
            ])),
            "{keys:?}"
        );
    }
    let before = emulator.stats().listed_secrets;
    let (_, _, full) = list(&emulator, &token, "per_page=10").await;
    assert!(
        full.as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_secret"].is_string())
    );
    assert!(emulator.stats().listed_secrets > before, "counted");

    let (reader, token) = emulator_with_scopes(&["read:clients"]).await;
    let (status, _, body) = list(&reader, &token, "per_page=100").await;
    assert_eq!(status, 200);
    assert!(
        body.as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("client_secret").is_none())
    );
    let (status, _, body) = list(&reader, &token, "fields=client_secret").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errorCode"], "insufficient_scope");
}

async fn emulator_with_scopes(scopes: &[&str]) -> (RunningEmulator, String) {
    emulator(1000, 1000, scopes).await
}

#[tokio::test]
async fn the_rate_limit_headers_follow_the_configured_bucket() {
    let (emulator, token) = emulator(10, 1, ALL_SCOPES).await;
    // Each request takes one token; the bucket refills one a second, so a slow machine may
    // see a count stay put once, never drop below what was taken.
    let mut previous = 10;
    for taken in 1..=10 {
        let (status, headers, _) = list(&emulator, &token, "per_page=1").await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-ratelimit-limit"], "10");
        let remaining: u32 = headers["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            remaining <= previous && remaining >= 10 - taken,
            "{remaining} after {taken}"
        );
        previous = remaining;
    }
    let mut refused = None;
    for _ in 0..20 {
        let (status, headers, body) = list(&emulator, &token, "per_page=1").await;
        if status == 429 {
            refused = Some((headers, body));
            break;
        }
    }
    let (headers, body) = refused.expect("the bucket runs dry");
    assert_eq!(body["errorCode"], "too_many_requests", "{body}");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    let reset: u64 = headers["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        reset > now && reset <= now + 2,
        "one token in about a second: {reset} vs {now}"
    );
}

#[tokio::test]
async fn an_essentials_tenant_limits_reading_clients_apart_from_everything_else() {
    let config = EmulatorConfig {
        rate_groups: Some(RateGroups::ESSENTIALS),
        ..EmulatorConfig::default()
    };
    let (emulator, token) = emulator_with(config, ALL_SCOPES).await;
    let http = reqwest::Client::new();
    let limit =
        |h: &reqwest::header::HeaderMap| h["x-ratelimit-limit"].to_str().unwrap().to_owned();
    // Reading clients: the list and one client share a bucket of 5.
    let (status, headers, clients) = list(&emulator, &token, "per_page=2").await;
    assert_eq!((status, limit(&headers)), (200, "5".to_owned()));
    let one = ids(&clients).remove(0);
    let mut refused = None;
    for _ in 0..10 {
        let response = http
            .get(format!("{}/api/v2/clients/{one}", emulator.base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(limit(response.headers()), "5");
        if response.status() == 429 {
            refused = Some(response.headers()["x-ratelimit-remaining"].clone());
            break;
        }
    }
    assert_eq!(refused.expect("the reading bucket runs dry"), "0");
    // Every other endpoint has its own bucket of 10, untouched by the reads.
    let rotated = http
        .post(format!(
            "{}/api/v2/clients/{one}/rotate-secret",
            emulator.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    assert_eq!(limit(rotated.headers()), "10");
    assert_eq!(rotated.headers()["x-ratelimit-remaining"], "9");
}
