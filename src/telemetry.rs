//! The one place that installs the tracing subscriber: the log, the audit trail and, when an
//! OTLP endpoint is set, span export (OpenTelemetry over gRPC).

use std::{io::IsTerminal, path::PathBuf};

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    resource::TelemetryResourceDetector,
    trace::{Sampler as SdkSampler, SdkTracerProvider},
};
use tracing::Level;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{Targets, filter_fn},
    fmt::{self, writer::BoxMakeWriter},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::audit;

/// Where logs and audit events go, and how they look.
#[derive(Debug, Clone)]
pub struct Settings {
    /// tracing EnvFilter syntax.
    pub filter: String,
    pub format: LogFormat,
    /// Audit events to this file (JSON lines) instead of the log.
    pub audit_file: Option<PathBuf>,
    /// Span export; none without an OTLP endpoint.
    pub traces: Option<Traces>,
}

/// Where spans go and which are kept: OpenTelemetry's standard settings, validated.
#[derive(Debug, Clone)]
pub struct Traces {
    /// The collector's OTLP/gRPC origin, `http://host:port` or `https://host:port`.
    pub endpoint: String,
    pub service_name: String,
    pub sampler: Sampler,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded.
    pub resource: Vec<(String, String)>,
    /// CA bundle for an https endpoint (otherwise the system's roots).
    pub ca_cert: Option<PathBuf>,
}

/// `OTEL_TRACES_SAMPLER` with its ratio (`OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl Sampler {
    fn sdk(self) -> SdkSampler {
        let parent_based = |root| SdkSampler::ParentBased(Box::new(root));
        match self {
            Self::AlwaysOn => SdkSampler::AlwaysOn,
            Self::AlwaysOff => SdkSampler::AlwaysOff,
            Self::TraceIdRatio(r) => SdkSampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => parent_based(SdkSampler::AlwaysOn),
            Self::ParentBasedAlwaysOff => parent_based(SdkSampler::AlwaysOff),
            Self::ParentBasedTraceIdRatio(r) => parent_based(SdkSampler::TraceIdRatioBased(r)),
        }
    }
}

/// What [`init`] installed that must be flushed at exit.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued. Call it outside the async runtime, before the runtime
    /// is dropped: the exporter's connection lives on it.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces {
            let _ = provider.shutdown();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Logs go to stderr, JSON by default. Audit events go with them (as JSON lines without span
/// context when the log is JSON), or, when an audit file is configured, to that file only.
/// Spans go to the OTLP endpoint when one is set. Fails on a malformed filter, an audit file
/// that cannot be opened or an unusable OTLP setting. Call it inside the Tokio runtime: the
/// exporter's connection is spawned on it.
pub fn init(config: &Settings) -> Result<Telemetry, String> {
    let mut filter = EnvFilter::try_new(&config.filter)
        .map_err(|_| format!("ROTATOR_LOG is not a valid log filter: {}", config.filter))?;
    // rustify, vaultrs's HTTP layer, logs every answer that is not a 2xx at ERROR, a key not
    // found included; the Vault adapter logs Vault's failures itself. Named in the filter, it
    // is the operator's to see.
    if !config.filter.contains("rustify") {
        filter = filter.add_directive("rustify=off".parse().expect("a valid directive"));
    }
    let main: Boxed = match config.format {
        // The current span (client_id, trace_id) and not the list of its parents: formatting
        // every parent's fields again for each line was most of a rotation's logging cost.
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
    };
    // Audit events carry their own ids, so their JSON lines need no span: a layer of their own,
    // to the audit file or beside the JSON log. With the text log they stay in it.
    let audit_writer = match (&config.audit_file, config.format) {
        (Some(path), _) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open ROTATOR_AUDIT_LOG {}: {e}", path.display()))?;
            Some(BoxMakeWriter::new(std::sync::Mutex::new(file)))
        }
        (None, LogFormat::Json) => Some(BoxMakeWriter::new(std::io::stderr)),
        (None, LogFormat::Text) => None,
    };
    let (main, audit_layer): (Boxed, Option<Boxed>) = match audit_writer {
        None => (main.with_filter(filter).boxed(), None),
        Some(writer) => {
            let audit_layer = fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(writer)
                .with_filter(Targets::new().with_target(audit::TARGET, tracing::Level::INFO))
                .boxed();
            let main = main
                .with_filter(filter)
                .with_filter(filter_fn(|meta| meta.target() != audit::TARGET))
                .boxed();
            (main, Some(audit_layer))
        }
    };
    let mut layers = vec![main];
    layers.extend(audit_layer);
    let traces = match &config.traces {
        Some(traces) => {
            let (provider, layer) = exporter(traces)?;
            layers.push(layer);
            Some(provider)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(Telemetry { traces })
}

/// The span exporter and the layer that feeds it: the service's spans at debug and above (an
/// RPC, a rotation, each Auth0 and Vault request), and its log events at info and above as
/// span events. Audit events stay in the audit trail.
fn exporter(traces: &Traces) -> Result<(SdkTracerProvider, Boxed), String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(traces.endpoint.clone());
    if traces.endpoint.starts_with("https:") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &traces.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read OTEL_EXPORTER_OTLP_CERTIFICATE {}: {e}",
                    path.display()
                )
            })?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        exporter = exporter.with_tls_config(tls);
    }
    let exporter = exporter.build().map_err(|e| {
        format!(
            "cannot export spans to OTEL_EXPORTER_OTLP_ENDPOINT {}: {e}",
            traces.endpoint
        )
    })?;
    let resource = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(
            traces
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
        .with_service_name(traces.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(traces.sampler.sdk())
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let ours = |target: &str| target.starts_with("secret_rotator") && target != audit::TARGET;
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("secret-rotator"))
        .with_location(false)
        .with_threads(false)
        .with_filter(filter_fn(move |meta| {
            let most_verbose = if meta.is_span() {
                Level::DEBUG
            } else {
                Level::INFO
            };
            ours(meta.target()) && *meta.level() <= most_verbose
        }))
        .boxed();
    Ok((provider, layer))
}
