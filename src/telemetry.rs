//! The one place that installs the tracing subscriber.

use std::{io::IsTerminal, path::PathBuf};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Logs go to stderr, JSON by default. Audit events go with them (as JSON lines without span
/// context when the log is JSON), or, when an audit file is configured, to that file only. Fails on a malformed filter or an audit file
/// that cannot be opened.
pub fn init(config: &Settings) -> Result<(), String> {
    let filter = EnvFilter::try_new(&config.filter)
        .map_err(|_| format!("ROTATOR_LOG is not a valid log filter: {}", config.filter))?;
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
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))
}
