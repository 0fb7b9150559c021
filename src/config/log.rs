//! Settings of logs, the audit trail and traces. Traces use OpenTelemetry's own variable
//! names, so a platform's usual `OTEL_*` environment configures them; as OpenTelemetry's
//! specification asks, one set to an empty value counts as unset.

use std::path::PathBuf;

use clap::Args;
use reqwest::Url;

use super::ConfigError;
use crate::telemetry::{self, LogFormat, Sampler, Traces};

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "ROTATOR_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "ROTATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Write audit events (target `audit`) to this file, as JSON lines, instead of the log.
    #[arg(long, env = "ROTATOR_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// Export spans over OTLP/gRPC to this collector, http://host:port or https://host:port
    /// [default: no traces].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// CA bundle (PEM) for an https OTLP endpoint [default: the system's roots].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    pub otlp_certificate: Option<String>,

    /// `service.name` of the exported spans [default: secret-rotator].
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,

    /// Which traces are kept: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off or parentbased_traceidratio [default: parentbased_always_on].
    #[arg(long, env = "OTEL_TRACES_SAMPLER")]
    pub otel_traces_sampler: Option<String>,

    /// The ratio of the traceidratio samplers, 0 to 1 [default: 1].
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub otel_traces_sampler_arg: Option<String>,

    /// Attributes of the exported spans' resource, key=value pairs separated by commas
    /// (values percent-encoded), e.g. deployment.environment.name=prod.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES")]
    pub otel_resource_attributes: Option<String>,
}

impl LogArgs {
    pub fn into_settings(self) -> Result<telemetry::Settings, ConfigError> {
        let traces = match set(self.otlp_endpoint) {
            None => None,
            Some(url) => Some(Traces {
                endpoint: endpoint(&url)?,
                service_name: set(self.otel_service_name)
                    .unwrap_or_else(|| "secret-rotator".to_owned()),
                sampler: sampler(
                    set(self.otel_traces_sampler).as_deref(),
                    set(self.otel_traces_sampler_arg).as_deref(),
                )?,
                resource: match set(self.otel_resource_attributes) {
                    Some(list) => resource_attributes(&list)?,
                    None => Vec::new(),
                },
                ca_cert: set(self.otlp_certificate).map(PathBuf::from),
            }),
        };
        Ok(telemetry::Settings {
            filter: self.log,
            format: self.log_format,
            audit_file: self.audit_log,
            traces,
        })
    }
}

/// The value, trimmed; `None` when unset or empty.
fn set(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// An OTLP/gRPC endpoint is an origin: gRPC chooses the path.
fn endpoint(value: &str) -> Result<String, ConfigError> {
    let origin_only = |url: &Url| {
        matches!(url.scheme(), "http" | "https")
            && url.host().is_some()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none()
    };
    match Url::parse(value) {
        Ok(url) if origin_only(&url) => Ok(url.origin().ascii_serialization()),
        _ => Err(ConfigError::Traces(
            "OTEL_EXPORTER_OTLP_ENDPOINT must be http://host:port or https://host:port (OTLP over gRPC: no path)".into(),
        )),
    }
}

fn sampler(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, ConfigError> {
    let ratio = || match arg.map(str::parse::<f64>) {
        None => Ok(1.0),
        Some(Ok(r)) if (0.0..=1.0).contains(&r) => Ok(r),
        Some(_) => Err(ConfigError::Traces(
            "OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1".into(),
        )),
    };
    Ok(match name.unwrap_or("parentbased_always_on") {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatio(ratio()?),
        "parentbased_always_on" => Sampler::ParentBasedAlwaysOn,
        "parentbased_always_off" => Sampler::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => Sampler::ParentBasedTraceIdRatio(ratio()?),
        _ => {
            return Err(ConfigError::Traces(
                "OTEL_TRACES_SAMPLER must be always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio".into(),
            ));
        }
    })
}

/// `key=value,key=value`, values percent-decoded (the W3C Baggage form the specification
/// uses). A malformed pair is refused, naming it.
fn resource_attributes(list: &str) -> Result<Vec<(String, String)>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let malformed = || {
                ConfigError::Traces(format!(
                    "OTEL_RESOURCE_ATTRIBUTES: {pair:?} is not key=value"
                ))
            };
            let (key, value) = pair.split_once('=').ok_or_else(malformed)?;
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|_| malformed())?;
            match key.trim() {
                "" => Err(malformed()),
                key => Ok((key.to_owned(), value.into_owned())),
            }
        })
        .collect()
}
