//! Counters for `/metrics`, rendered in the Prometheus text format. Plain atomics: the hot
//! paths pay one relaxed add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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

#[derive(Default)]
pub struct Metrics {
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
        out
    }
}
