//! Messages for devices: to the UAID's connection on this node, or through the bus to the node
//! that holds it. The relay is how operations reach devices (`ops::DeviceLink`), and it carries
//! out what other nodes ask of the devices connected here.

use std::sync::Arc;

use super::registry::{Outbound, Registry};
use crate::bus::{Bus, DeviceMessage, Signal};
use crate::domain::{Delivery, Eviction, Uaid};
use crate::metrics::Metrics;

pub struct Relay {
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
    node: Arc<str>,
    /// Whether other nodes may exist (a bus between nodes is configured).
    clustered: bool,
}

impl Relay {
    pub fn new(registry: Arc<Registry>, bus: Arc<dyn Bus>, node: Arc<str>, clustered: bool) -> Relay {
        Relay { registry, bus, node, clustered }
    }

    /// Hands the message to the UAID's connection on this node, if it has one.
    fn hand_over(&self, uaid: Uaid, message: DeviceMessage) -> Delivery {
        let outbound = match message {
            DeviceMessage::Update(update) => Outbound::Update(Box::new(update)),
            DeviceMessage::Notification(notification) => Outbound::Notification(notification),
            DeviceMessage::Close(reason) => {
                let evicted = self.registry.evict(&uaid, reason);
                return if evicted { Delivery::Queued } else { Delivery::NotConnected };
            }
        };
        self.registry.deliver(&uaid, outbound)
    }

    /// Tells the other nodes, for the one holding the UAID's connection (a lone node has none).
    pub fn tell_other_nodes(&self, uaid: Uaid, message: DeviceMessage) {
        if self.clustered {
            self.bus.publish(Signal::Device { origin: self.node.clone(), uaid, message });
        }
    }

    /// Carries out what other nodes ask of devices connected here, and catches every connection
    /// up from the store when signals may have been missed. Runs until the bus closes or
    /// `shutdown` fires.
    pub async fn route_signals(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut signals = self.bus.subscribe();
        loop {
            let signal = tokio::select! {
                _ = shutdown.cancelled() => return,
                signal = signals.recv() => signal,
            };
            match signal {
                Ok(Signal::Device { origin, uaid, message }) if origin != self.node => {
                    metrics.node_signals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if self.hand_over(uaid, message) == Delivery::QueueFull {
                        tracing::warn!(%uaid, "device queue full; the message waits in storage");
                    }
                }
                Ok(Signal::Reconnected) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.registry.catch_up_all();
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

impl crate::ops::DeviceLink for Relay {
    /// On its connection here, or through the bus to whichever node holds it (the store has it
    /// either way).
    fn deliver(&self, uaid: Uaid, message: DeviceMessage) -> Delivery {
        let delivery = self.hand_over(uaid, message.clone());
        // A close goes everywhere: an older connection of the UAID may be on another node too.
        if delivery == Delivery::NotConnected || matches!(message, DeviceMessage::Close(_)) {
            self.tell_other_nodes(uaid, message);
        }
        delivery
    }

    fn evict_all(&self, reason: Eviction) {
        self.registry.evict_all(reason);
    }

    fn catch_up_all(&self) {
        self.registry.catch_up_all();
    }
}
