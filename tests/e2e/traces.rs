//! Traces: the real binary exports its spans over OTLP/gRPC to a collector in this process.
//! One rotation is one trace under the caller's span (RPC, rotation, each Auth0 and Vault
//! request), Auth0 and OpenBao receive `traceparent` naming the request's span, the audit
//! trail carries the trace id, and the sampler follows the caller's decision.

use std::time::Duration;

use secret_rotator::emulator::{
    Emulator, EmulatorConfig, RunningEmulator, m2m_client, random_client_id, regular_client,
};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::Request;

use crate::{
    helpers::{
        ALL_SCOPES, Bao, Collector, ExportedSpan, M2M_SECRET, ServiceProcess, eventually, rotate,
    },
    pki::Ca,
};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

struct Traced {
    bao: Bao,
    emulator: RunningEmulator,
    collector: Collector,
    service: ServiceProcess,
    client_id: String,
}

/// OpenBao (auditing `traceparent`), the emulator, a collector, and the binary exporting to it.
async fn traced_stack() -> Traced {
    traced_stack_with(Collector::start().await, Vec::new()).await
}

async fn traced_stack_with(collector: Collector, extra: Vec<(&'static str, String)>) -> Traced {
    let bao = Bao::start_audited().await;
    let (status, body) = bao
        .api(
            reqwest::Method::POST,
            "sys/config/auditing/request-headers/traceparent",
            Some(json!({ "hmac": false })),
        )
        .await;
    assert!(
        status < 300,
        "audit the traceparent header: {status} {body}"
    );
    let m2m = random_client_id();
    let client_id = random_client_id();
    let emulator = Emulator::new(EmulatorConfig::default())
        .with_client(m2m_client(&m2m, M2M_SECRET, ALL_SCOPES))
        .with_client(regular_client(&client_id, "Traced app"))
        .start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend(extra);
    env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.clone()),
        // Export every 50 ms rather than every 5 s: the test polls for the spans.
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
        ("OTEL_SERVICE_NAME", "rotator-under-test".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=ci,team=platform%20ops".to_owned(),
        ),
    ]);
    let service = ServiceProcess::start(&env).await;
    Traced {
        bao,
        emulator,
        collector,
        service,
        client_id,
    }
}

fn with_traceparent<T>(message: T, traceparent: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

/// The RotateSecret server spans received so far.
fn rpc_spans(collector: &Collector) -> Vec<ExportedSpan> {
    collector
        .spans()
        .into_iter()
        .filter(|s| s.kind == SERVER && s.attr("rpc.method") == "RotateSecret")
        .collect()
}

fn named<'a>(spans: &'a [ExportedSpan], name: &str) -> Vec<&'a ExportedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Whether `span` descends from the span with id `ancestor` within `spans`.
fn descends(spans: &[ExportedSpan], span: &ExportedSpan, ancestor: &str) -> bool {
    let mut parent = span.parent_span_id.clone();
    for _ in 0..spans.len() {
        if parent == ancestor {
            return true;
        }
        match spans.iter().find(|s| s.span_id == parent) {
            Some(p) => parent = p.parent_span_id.clone(),
            None => return false,
        }
    }
    false
}

#[tokio::test]
async fn a_rotation_is_one_trace_under_the_callers_span() {
    let stack = traced_stack().await;
    let mut client = stack.service.client().await;
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let answer = client
        .rotate_secret(with_traceparent(rotate(&stack.client_id), &traceparent))
        .await
        .expect("rotation")
        .into_inner();

    // The RPC's span ends last, after the answer is sent: once it is here, all of them are.
    let spans = eventually("the RPC span", Duration::from_secs(20), || {
        let spans = stack.collector.trace(TRACE);
        async move { spans.iter().any(|s| s.kind == SERVER).then_some(spans) }
    })
    .await;
    let tree: Vec<String> = spans
        .iter()
        .map(|s| format!("{} {} <- {}", s.name, s.span_id, s.parent_span_id))
        .collect();
    eprintln!("spans of trace {TRACE}:\n  {}", tree.join("\n  "));

    let rpc = named(
        &spans,
        "secretrotator.v1.SecretRotationService/RotateSecret",
    );
    assert_eq!(rpc.len(), 1, "{tree:#?}");
    let rpc = rpc[0];
    assert_eq!(
        rpc.parent_span_id, CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(rpc.attr("rpc.system"), "grpc");
    assert_eq!(
        rpc.attr("rpc.service"),
        "secretrotator.v1.SecretRotationService"
    );
    assert_eq!(rpc.attr("rpc.grpc.status_code"), "0");
    assert_eq!(rpc.status, 0, "status unset: nothing failed");
    assert_eq!(rpc.resource["service.name"], "rotator-under-test");
    assert_eq!(rpc.resource["deployment.environment.name"], "ci");
    assert_eq!(rpc.resource["team"], "platform ops");

    let rotation = named(&spans, "rotation");
    assert_eq!(rotation.len(), 1, "{tree:#?}");
    let rotation = rotation[0];
    assert_eq!(rotation.parent_span_id, rpc.span_id);
    assert_eq!(rotation.attr("client_id"), stack.client_id);
    assert_eq!(rotation.attr("rotation_id"), answer.rotation_id);
    assert_eq!(rotation.attr("outcome"), "ok");
    assert_eq!(rotation.attr("strategy"), "immediate");

    let auth0 = named(&spans, "auth0 rotate-secret");
    assert_eq!(auth0.len(), 1, "one Auth0 rotation: {tree:#?}");
    let auth0 = auth0[0];
    assert_eq!(auth0.kind, CLIENT);
    assert_eq!(auth0.attr("http.request.method"), "POST");
    assert_eq!(auth0.attr("http.response.status_code"), "200");
    assert_eq!(auth0.attr("server.address"), "127.0.0.1");
    let writes = named(&spans, "vault write");
    assert!(writes.len() >= 2, "the key and the ledger: {tree:#?}");
    for span in spans.iter().filter(|s| s.kind == CLIENT) {
        assert!(
            descends(&spans, span, &rotation.span_id),
            "{} is not under the rotation: {tree:#?}",
            span.name
        );
        assert!(["auth0", "vault"].contains(&span.attr("upstream")));
        assert!(!span.attr("http.response.status_code").is_empty());
    }
    for span in &spans {
        assert!(descends(&spans, span, CALLER_SPAN), "{}", span.name);
        assert!(
            !span
                .raw
                .contains(&stack.emulator.live_secret(&stack.client_id).unwrap()),
            "the new secret is in span {}",
            span.name
        );
    }

    // Auth0 and OpenBao were told which span each request belongs to.
    let sent_to_auth0 = format!("00-{TRACE}-{}-01", auth0.span_id);
    assert!(
        stack.emulator.traceparents().contains(&sent_to_auth0),
        "Auth0 saw {:?}",
        stack.emulator.traceparents()
    );
    let seen_by_vault = stack.bao.request_headers("traceparent");
    for write in &writes {
        let sent = format!("00-{TRACE}-{}-01", write.span_id);
        assert!(
            seen_by_vault.iter().any(|(_, tp)| *tp == sent),
            "OpenBao saw {seen_by_vault:?}"
        );
    }

    // The audit trail names the caller's trace.
    let done = stack
        .service
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "succeeded" && e["rotation_id"] == answer.rotation_id.as_str())
        .expect("audited");
    assert_eq!(done["trace_id"], TRACE);
    // Exporting costs the log nothing: no WARN or ERROR on a traced normal run either (but the
    // one this test's plaintext mode always logs).
    let output = stack.service.output();
    let loud: Vec<&str> = output
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
        .filter(|l| !l.contains("WITHOUT TLS or authentication"))
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
}

#[tokio::test]
async fn the_callers_sampling_decision_is_kept_and_untraced_calls_start_a_trace() {
    let stack = traced_stack().await;
    let mut client = stack.service.client().await;
    // A caller that does not sample: its rotation exports nothing, but is audited under its
    // trace id.
    let unsampled = "1bf92f3577b34da6a3ce929d0e0e4736";
    let skipped = client
        .rotate_secret(with_traceparent(
            rotate(&stack.client_id),
            &format!("00-{unsampled}-00f067aa0ba902b7-00"),
        ))
        .await
        .expect("rotation")
        .into_inner();
    // A caller without trace context: a trace of the service's own.
    let fresh = client
        .rotate_secret(rotate(&stack.client_id))
        .await
        .expect("rotation")
        .into_inner();
    let rpc = eventually("the second RPC span", Duration::from_secs(20), || {
        let spans = rpc_spans(&stack.collector);
        async move { spans.into_iter().next() }
    })
    .await;
    // Spans are exported as they end, and the first call's ended before the second began.
    assert_eq!(
        rpc_spans(&stack.collector).len(),
        1,
        "only the sampled call"
    );
    assert!(stack.collector.trace(unsampled).is_empty());
    assert!(rpc.parent_span_id.is_empty(), "a root span");
    let rotation = stack
        .collector
        .trace(&rpc.trace_id)
        .into_iter()
        .find(|s| s.name == "rotation")
        .expect("the rotation span");
    assert_eq!(rotation.attr("rotation_id"), fresh.rotation_id);

    let audited = |rotation_id: &str| {
        stack
            .service
            .audit_events()
            .into_iter()
            .find(|e| e["event"] == "succeeded" && e["rotation_id"] == rotation_id)
            .expect("audited")["trace_id"]
            .clone()
    };
    assert_eq!(audited(&skipped.rotation_id), unsampled);
    assert_eq!(audited(&fresh.rotation_id), rpc.trace_id.as_str());
}

#[tokio::test]
async fn spans_reach_a_collector_over_tls_that_trusts_only_its_own_ca() {
    let ca = Ca::new("collector CA");
    let (cert, key) = ca.server();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca.pem()).unwrap();
    let collector = Collector::start_tls(&cert, &key).await;
    assert!(collector.endpoint.starts_with("https://"));
    let extra = vec![(
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ca_file.path().display().to_string(),
    )];
    let stack = traced_stack_with(collector, extra).await;
    let answer = stack
        .service
        .client()
        .await
        .rotate_secret(rotate(&stack.client_id))
        .await
        .expect("rotation")
        .into_inner();
    let rotation = eventually(
        "the rotation span over TLS",
        Duration::from_secs(20),
        || {
            let spans = stack.collector.spans();
            async move { spans.into_iter().find(|s| s.name == "rotation") }
        },
    )
    .await;
    assert_eq!(rotation.attr("rotation_id"), answer.rotation_id);
}
