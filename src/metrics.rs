//! Counters for `/metrics`, rendered in the Prometheus text format. Plain atomics: the hot
//! paths pay one relaxed add. The histograms (latencies and durations) are `prometheus-client`
//! metrics in a registry each node holds (no process-wide recorder: tests run many nodes in one
//! process, and each node's `/metrics` shows its own figures).

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Kinds of device messages, for `presence_ws_messages_total{type=…}`.
#[derive(Debug, Clone, Copy)]
pub enum MessageKind {
    Hello,
    Register,
    Unregister,
    Ack,
    Ping,
    Status,
    Invalid,
}

const KINDS: [(MessageKind, &str); 7] = [
    (MessageKind::Hello, "hello"),
    (MessageKind::Register, "register"),
    (MessageKind::Unregister, "unregister"),
    (MessageKind::Ack, "ack"),
    (MessageKind::Ping, "ping"),
    (MessageKind::Status, "status"),
    (MessageKind::Invalid, "invalid"),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `delivered` (2xx), `gone` (410), `refused` (any other status) or `error` (no answer).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/v1/me`, `/push/{token}`), never the raw path; `unmatched` else.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub query: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The node's histograms, in their own registry.
pub struct Timings {
    registry: Registry,
    /// From a device's status report received to its events committed and announced.
    pub status_event: Histogram,
    pub webhook_attempt: Histograms<OutcomeLabels>,
    pub http_request: Histograms<HttpLabels>,
    pub store_query: Histograms<QueryLabels>,
}

impl Default for Timings {
    fn default() -> Timings {
        let mut registry = Registry::default();
        let status_event = seconds();
        let webhook_attempt: Histograms<OutcomeLabels> = Family::new_with_constructor(seconds);
        let http_request: Histograms<HttpLabels> = Family::new_with_constructor(seconds);
        let store_query: Histograms<QueryLabels> = Family::new_with_constructor(seconds);
        registry.register(
            "presence_status_event_latency_seconds",
            "From a device's status report received to its events committed and announced to apps",
            status_event.clone(),
        );
        registry.register(
            "presence_webhook_attempt_duration_seconds",
            "Webhook POSTs, from sent to answered (or failed), by outcome",
            webhook_attempt.clone(),
        );
        registry.register(
            "presence_http_request_duration_seconds",
            "HTTP requests, by method, route template and status",
            http_request.clone(),
        );
        registry.register(
            "presence_store_query_duration_seconds",
            "Store queries (journal commits, webhook and stream reads), by query",
            store_query.clone(),
        );
        Timings { registry, status_event, webhook_attempt, http_request, store_query }
    }
}

impl Timings {
    pub fn store_query(&self, query: &'static str, took: Duration) {
        self.store_query.get_or_create(&QueryLabels { query }).observe(took.as_secs_f64());
    }

    /// Runs a store query and records how long it took.
    pub async fn time<T>(&self, query: &'static str, run: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = run.await;
        self.store_query(query, started.elapsed());
        out
    }

    fn render(&self, out: &mut String) {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_ok() {
            // OpenMetrics ends with `# EOF`; the rest of the page is the Prometheus text format.
            out.push_str(text.trim_end().trim_end_matches("# EOF"));
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub timings: Timings,
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    messages: [AtomicU64; KINDS.len()],
    pub notifications_delivered: AtomicU64,
    pub notifications_stored: AtomicU64,
    pub outbound_queue_full: AtomicU64,
    pub streams: AtomicI64,
    pub streams_lagging: AtomicU64,
    /// Messages from other nodes for devices connected here (a cluster).
    pub node_signals: AtomicU64,
    /// Times this node found its lease ended and closed its device connections.
    pub leases_lost: AtomicU64,
}

impl Metrics {
    pub fn message(&self, kind: MessageKind) {
        self.messages[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text; `bus_connected` is `Some` on a node of a cluster.
    pub fn render(&self, bus_connected: Option<bool>) -> String {
        let mut out = String::with_capacity(1024);
        let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge(
            "presence_ws_connections",
            "Open device WebSocket connections.",
            "gauge",
            self.connections.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "presence_ws_connections_total",
            "Device WebSocket connections accepted.",
            "counter",
            self.connections_total.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "presence_notifications_delivered_total",
            "SimplePush updates written to a device's connection.",
            "counter",
            self.notifications_delivered.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "presence_notifications_stored_total",
            "SimplePush updates stored for a device that was not connected.",
            "counter",
            self.notifications_stored.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "presence_outbound_queue_full_total",
            "Live deliveries that found a connection's queue full and fell back to storage.",
            "counter",
            self.outbound_queue_full.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "presence_streams",
            "Open app streams.",
            "gauge",
            self.streams.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "presence_streams_lagging_total",
            "Streams closed because their consumer fell behind.",
            "counter",
            self.streams_lagging.load(Ordering::Relaxed).to_string(),
        );
        if let Some(connected) = bus_connected {
            gauge(
                "presence_bus_connected",
                "1 while the link to the other nodes (NATS) is up.",
                "gauge",
                u8::from(connected).to_string(),
            );
            gauge(
                "presence_node_signals_total",
                "Messages from other nodes for devices connected here.",
                "counter",
                self.node_signals.load(Ordering::Relaxed).to_string(),
            );
            gauge(
                "presence_leases_lost_total",
                "Times this node found its lease ended and closed its device connections.",
                "counter",
                self.leases_lost.load(Ordering::Relaxed).to_string(),
            );
        }
        let _ = writeln!(
            out,
            "# HELP presence_ws_messages_total Device messages received, by type.\n# TYPE presence_ws_messages_total counter"
        );
        for (kind, label) in KINDS {
            let value = self.messages[kind as usize].load(Ordering::Relaxed);
            let _ = writeln!(out, "presence_ws_messages_total{{type=\"{label}\"}} {value}");
        }
        self.timings.render(&mut out);
        out
    }
}
