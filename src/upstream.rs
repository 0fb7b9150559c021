//! Every request to Auth0 and Vault goes out through [`send`]: timed into
//! `secret_rotator_upstream_duration_seconds` and, inside a traced piece of work (an RPC, a
//! rotation, a promotion), in a client span of its own that the request's `traceparent` names.
//! Calls outside any span (readiness checks every few seconds) are timed but not traced, so
//! that they do not flood the trace backend with one-span traces.

use reqwest::{Client, Request, RequestBuilder, Response};
use tracing::{Instrument, Span, debug_span, field::Empty};

/// Sends `request` to `upstream` ("auth0" or "vault"); `operation` names it in spans and
/// metrics. The span's attributes are HTTP semantic conventions and never the URL's path or
/// query (a key's path names a client; nothing there is needed to read a trace).
pub async fn send(
    upstream: &'static str,
    operation: &'static str,
    request: RequestBuilder,
) -> reqwest::Result<Response> {
    let (client, request) = request.build_split();
    execute(upstream, operation, &client, request?).await
}

/// [`send`] for a request built elsewhere (the Vault adapter's are built by vaultrs's
/// endpoints).
pub async fn execute(
    upstream: &'static str,
    operation: &'static str,
    client: &Client,
    mut request: Request,
) -> reqwest::Result<Response> {
    let span = if Span::current().is_disabled() {
        Span::none()
    } else {
        let url = request.url();
        debug_span!(
            "upstream",
            otel.name = %format_args!("{upstream} {operation}"),
            otel.kind = "client",
            otel.status_code = Empty,
            upstream,
            operation,
            http.request.method = %request.method(),
            server.address = url.host_str().unwrap_or_default(),
            server.port = url.port_or_known_default().unwrap_or_default(),
            http.response.status_code = Empty,
            "error.type" = Empty,
        )
    };
    crate::trace::inject(&span, request.headers_mut());
    let started = std::time::Instant::now();
    let sent = client.execute(request).instrument(span.clone()).await;
    let status = sent.as_ref().ok().map(|r| r.status().as_u16());
    crate::metrics::upstream(upstream, operation, status, started.elapsed());
    match &sent {
        Ok(response) => {
            let code = response.status().as_u16();
            span.record("http.response.status_code", code);
            // A 404 or a check-and-set conflict is an answer the protocol expects; a client
            // span is an error when the upstream failed or turned the request away for load.
            if code >= 500 || code == 429 {
                span.record("otel.status_code", "error");
                span.record("error.type", code);
            }
        }
        Err(e) => {
            span.record("otel.status_code", "error");
            span.record(
                "error.type",
                if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                },
            );
        }
    }
    sent
}

/// The innermost cause of a transport error, such as "Connection refused (os error 111)":
/// what an operator needs, without reqwest's wrapping (or the request's URL).
pub fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
