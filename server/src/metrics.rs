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
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

/// Declares label sets whose labels are all `&'static str` (values from a bounded set), with
/// what a `Family` needs of them: written once here rather than as a derive list on each.
#[macro_export]
macro_rules! label_sets {
    ($($(#[$doc:meta])* $vis:vis struct $name:ident { $($(#[$field_doc:meta])* $field:ident),+ $(,)? })*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Debug, Hash, PartialEq, Eq, ::prometheus_client::encoding::EncodeLabelSet)]
            $vis struct $name {
                $($(#[$field_doc])* pub $field: &'static str,)+
            }
        )*
    };
}

crate::label_sets! {
    pub struct RouteLabels {
        route,
    }

    pub struct ListenerLabels {
        listener,
    }

    struct BuildLabels {
        version,
    }
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
        // 1 ms … ~65 s: a ping and a whole layer pulled through a slow link both fit.
        let request_seconds: Family<RouteLabels, Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 17)));
        let metrics = ServerMetrics {
            requests: added(
                registry,
                "http_requests",
                "HTTP requests answered, by route, method and status",
                Family::default(),
            ),
            request_seconds: added(
                registry,
                "http_request_duration_seconds",
                "Time from a request's arrival to the end of its response body, by route",
                request_seconds,
            ),
            connections_open: added(
                registry,
                "connections_open",
                "Client connections open now, by listener",
                Family::default(),
            ),
            connections_shed: added(
                registry,
                "connections_shed",
                "Connections answered 503 and closed because the listener was at its connection limit",
                Family::default(),
            ),
        };
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

/// Registers `metric` as `name` and hands it back, so that a metric is made, named and
/// described in one expression.
fn added<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// A daemon's metrics: each one made, named and described in one expression of its `Metrics`
/// constructor, the shared ones ([`ServerMetrics`]) first; all under the daemon's prefix.
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    /// An empty registry whose metrics are named `<prefix>_<name>`.
    pub fn new(prefix: &str) -> Self {
        MetricsRegistry {
            registry: Registry::with_prefix(prefix),
        }
    }

    /// The metrics every daemon exports.
    pub fn server(&mut self) -> ServerMetrics {
        ServerMetrics::register(&mut self.registry)
    }

    /// A new metric (starting at zero), registered as `name` with `help`.
    pub fn add<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        added(&mut self.registry, name, help, M::default())
    }

    /// `metric` (one made otherwise, e.g. a histogram with its buckets), registered as `name`.
    pub fn add_made<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        added(&mut self.registry, name, help, metric)
    }

    /// Every metric in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
