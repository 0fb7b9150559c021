//! W3C trace context: the caller's `traceparent` read with OpenTelemetry's propagator, the
//! trace id audit events carry, and `traceparent` on the requests the service sends. Exporting
//! spans is `telemetry`'s job; with no OTLP endpoint nothing here exports or injects anything.

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TraceId},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The caller's trace context (`traceparent`, `tracestate`); an empty context when it sent
/// none or a malformed one.
pub fn caller_context(headers: &HeaderMap) -> Context {
    // Read even when tracing is off: audit events carry the caller's trace id either way.
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Makes `caller` the parent of `span`, and answers the trace id `span` runs under: the
/// caller's, one the tracer chose (traced without a caller's context), or a fresh one (not
/// traced).
pub fn adopt(span: &Span, caller: Context) -> String {
    let callers = caller.span().span_context().trace_id();
    // Fails only when tracing is off or the span is disabled: then there is no span to parent.
    let _ = span.set_parent(caller);
    let traced = span.context().span().span_context().trace_id();
    [traced, callers]
        .into_iter()
        .find(|id| *id != TraceId::INVALID)
        .map_or_else(
            || uuid::Uuid::new_v4().simple().to_string(),
            |id| id.to_string(),
        )
}

/// Starts a trace of its own at `span`, for work no caller asked for (a scheduled promotion);
/// answers its trace id as [`adopt`] does.
pub fn start(span: &Span) -> String {
    adopt(span, Context::new())
}

/// Adds `span`'s `traceparent` (and `tracestate`) to an outgoing request. A no-op while tracing
/// is off: the global propagator is then OpenTelemetry's no-op one.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut Headers(&mut *headers));
    });
}

struct Headers<H>(H);

impl Extractor for Headers<&HeaderMap> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

impl Injector for Headers<&mut HeaderMap> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
        h
    }

    #[test]
    fn the_callers_trace_id_is_kept_or_a_new_one_made() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        // No subscriber here: the span is disabled, as with tracing off.
        let id = adopt(&Span::none(), caller_context(&headers(tp)));
        assert_eq!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            // W3C: upper case is not a valid traceparent.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let id = adopt(&Span::none(), caller_context(&headers(bad)));
            assert_eq!(id.len(), 32, "{bad}");
            assert_ne!(id, "00000000000000000000000000000000");
            assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
        let none = adopt(&Span::none(), caller_context(&HeaderMap::new()));
        assert_ne!(
            none,
            adopt(&Span::none(), Context::new()),
            "fresh ids differ"
        );
    }
}
