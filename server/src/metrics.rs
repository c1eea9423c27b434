//! Metrics every daemon exports the same way, registered into the daemon's own registry (so
//! they carry its prefix, e.g. `damselfly_edge_http_requests_total`): requests by route, method
//! and status, their duration, open and shed connections per listener, and build information.
//!
//! Labels are bounded sets (route names the daemon chooses, methods folded to GET/HEAD/PUT/POST/
//! DELETE/other, listener names); never a digest or repository.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Handles to the shared metrics; cheap to clone.
#[derive(Clone)]
pub struct ServerMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_shed: Family<ListenerLabels, Counter>,
}

impl ServerMetrics {
    /// Registers the shared metrics in `registry`.
    pub fn register(registry: &mut Registry) -> ServerMetrics {
        let metrics = ServerMetrics {
            requests: Family::default(),
            // 1 ms … ~65 s: a ping and a whole layer pulled through a slow link both fit.
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            connections_open: Family::default(),
            connections_shed: Family::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its response body, by route",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open now, by listener",
            metrics.connections_open.clone(),
        );
        registry.register(
            "connections_shed",
            "Connections answered 503 and closed because the listener was at its connection limit",
            metrics.connections_shed.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Always 1; the version in its label", build);
        metrics
    }
}

/// The label for an HTTP method (a bounded set).
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::DELETE => "DELETE",
        _ => "other",
    }
}
