//! Logs and traces: JSON lines in production (pretty output for local work), and
//! OpenTelemetry traces over OTLP/HTTP when a collector is configured (SPEC 14).

use crate::config::{LogFormat, LogSettings, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The standard variable naming the collector; it wins over `telemetry.otlp_endpoint`.
const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const OTLP_TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const SERVICE_NAME: &str = "agentassist-hooks";

/// Keeps the trace exporter running; dropping it sends the spans still queued.
#[must_use = "traces stop being exported when this is dropped"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take()
            && let Err(error) = traces.shutdown()
        {
            tracing::warn!(%error, "could not send the last spans to the collector");
        }
    }
}

/// Installs the global subscriber (`RUST_LOG` overrides the configured log filter) and,
/// when a collector is configured, the trace exporter. Call it outside the async runtime:
/// the exporter runs on a thread of its own, so that a slow or absent collector never
/// holds up a request (spans beyond its bounded queue are dropped).
pub fn init(log: &LogSettings, telemetry: &TelemetrySettings) -> Telemetry {
    let traces = match otlp_endpoint(telemetry) {
        Some(endpoint) => match trace_provider(endpoint.as_deref()) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("traces are off: cannot set up the OTLP exporter: {error:#}");
                None
            }
        },
        None => None,
    };
    let otel = traces.as_ref().map(|provider| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            // The service's own spans, whatever the log filter says.
            .with_filter(Targets::new().with_target("agentassist_hooks", Level::INFO))
    });
    let json = (log.format == LogFormat::Json).then(|| json_lines().with_filter(log_filter(log)));
    let pretty = (log.format == LogFormat::Pretty)
        .then(|| tracing_subscriber::fmt::layer().with_filter(log_filter(log)));
    // A second init (tests, CLI) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(json)
        .with(pretty)
        .try_init();
    Telemetry { traces }
}

fn log_filter(log: &LogSettings) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// One JSON object per line: time, level, target, the event's fields, and the fields of
/// every span it happened in (`request_id`, `trace_id`, `http.route`, …), all at the top
/// level.
fn json_lines<S>() -> json_subscriber::JsonLayer<S, fn() -> std::io::Stdout>
where
    S: tracing::Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
{
    let mut layer = json_subscriber::JsonLayer::stdout();
    layer
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_flattened_event()
        .with_top_level_flattened_span_list();
    layer
}

/// `Some(None)`: the standard environment names the collector (the exporter reads it, with
/// the rest of the `OTEL_EXPORTER_OTLP_*` variables); `Some(Some(url))`: the config does.
fn otlp_endpoint(telemetry: &TelemetrySettings) -> Option<Option<String>> {
    let set = |name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    if set(OTLP_ENDPOINT_ENV) || set(OTLP_TRACES_ENDPOINT_ENV) {
        return Some(None);
    }
    let endpoint = telemetry.otlp_endpoint.as_deref()?.trim();
    (!endpoint.is_empty()).then(|| Some(format!("{}/v1/traces", endpoint.trim_end_matches('/'))))
}

fn trace_provider(endpoint: Option<&str>) -> anyhow::Result<SdkTracerProvider> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build()?)
        .with_resource(resource.build())
        .build())
}

/// Makes `span` continue the trace of an incoming W3C `traceparent` (when traces are on),
/// and records the trace's id on it, for the log lines.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use opentelemetry::trace::{TraceContextExt, TraceId};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    // Fails only when traces are off: there is no trace to continue then.
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != TraceId::INVALID {
        span.record("trace_id", trace_id.to_string());
    }
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
