//! Logs, and OpenTelemetry traces when an OTLP endpoint is configured.
//!
//! The log filter is `DAMSELFLY_LOG`, else the usual `RUST_LOG`, else `info`. Traces go over
//! OTLP/HTTP to the configured endpoint, else to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_ENDPOINT` when those are set (the standard `OTEL_*` variables, such as
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, apply as usual).
//!
//! One trace follows work across daemons: [`current_traceparent`] gives the W3C `traceparent`
//! to send with a request (or to store with a job that runs later), [`adopt_parent`] makes a span
//! its child on the other side.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogConfig;
use crate::Daemon;

/// Flushes buffered spans when dropped: hold it until the daemon exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    daemon: &'static str,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("{}: flushing traces failed: {e}", self.daemon);
            }
        }
    }
}

/// `http://collector:4318` → `http://collector:4318/v1/traces`; a URL with a path is kept.
pub fn traces_url(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(u) if u.path() == "/" || u.path().is_empty() => {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        }
        _ => endpoint.to_string(),
    }
}

fn otlp_from_environment() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// Installs the global subscriber: the filter, text or JSON logs on stderr, and the OTLP/HTTP
/// exporter when an endpoint is configured (`log.otlp_endpoint`) or given by the environment.
pub fn init(daemon: &Daemon, config: &LogConfig) -> Result<Telemetry, String> {
    let (format, otlp_endpoint) = (config.format.as_str(), config.otlp_endpoint.as_deref());
    let filter = EnvFilter::try_from_env("DAMSELFLY_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if format == "json" {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let provider = if otlp_endpoint.is_some() || otlp_from_environment() {
        Some(tracer_provider(daemon, otlp_endpoint)?)
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        let service = format!("damselfly-{}", daemon.name);
        tracing_opentelemetry::layer().with_tracer(p.tracer(service))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(otel)
        .try_init()
        .map_err(|e| format!("logging: {e}"))?;
    if let Some(endpoint) = otlp_endpoint {
        tracing::info!(endpoint = %traces_url(endpoint), "exporting traces over OTLP/HTTP");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP to the endpoint in OTEL_EXPORTER_OTLP_*");
    }
    Ok(Telemetry {
        provider,
        daemon: daemon.name,
    })
}

fn tracer_provider(daemon: &Daemon, endpoint: Option<&str>) -> Result<SdkTracerProvider, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(traces_url(endpoint));
    }
    let exporter = exporter.build().map_err(|e| {
        format!(
            "OTLP exporter for {}: {e}",
            endpoint.unwrap_or("OTEL_EXPORTER_OTLP_*")
        )
    })?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(format!("damselfly-{}", daemon.name));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The current span's W3C `traceparent`, if it belongs to a sampled trace.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace named by `traceparent` (no-op without one or without OTLP).
pub fn adopt_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(value) = traceparent {
        let carrier = HashMap::from([("traceparent".to_string(), value.to_string())]);
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_base_urls_get_the_traces_path() {
        assert_eq!(traces_url("http://otel:4318"), "http://otel:4318/v1/traces");
        assert_eq!(traces_url("http://otel:4318/"), "http://otel:4318/v1/traces");
        assert_eq!(
            traces_url("https://otel.example/custom/path"),
            "https://otel.example/custom/path"
        );
    }

    #[test]
    fn no_trace_no_traceparent() {
        assert_eq!(current_traceparent(), None);
        adopt_parent(
            &tracing::Span::none(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
    }
}
