//! Logs, and OpenTelemetry traces when an OTLP endpoint is configured.
//!
//! One trace follows a push: the webhook request's span is the parent of the job's span (its
//! W3C `traceparent` is stored in the job, since the job runs later and maybe elsewhere), and
//! every edge warm request is a child of the job, carrying `traceparent` to the edge.

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

/// Flushes buffered spans when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("preheater: flushing traces failed: {e}");
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

/// Installs the global subscriber: `DAMSELFLY_LOG` filter, text or JSON logs on stderr, and the
/// OTLP/HTTP exporter when `otlp_endpoint` is set.
pub fn init(log_format: &str, otlp_endpoint: Option<&str>) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_env("DAMSELFLY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if log_format == "json" {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let (otel, provider) = match otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(traces_url(endpoint))
                .build()
                .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("damselfly-preheater")
                        .build(),
                )
                .build();
            let tracer = provider.tracer("damselfly-preheater");
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                Some(provider),
            )
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(otel)
        .try_init()
        .map_err(|e| format!("logging: {e}"))?;
    Ok(Telemetry { provider })
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
