//! This node's place among others: its lease in the store, and signals for devices connected
//! to another node. A lone node runs the same code; its signals simply never leave it.
//!
//! Leases: a node takes one at start and renews it every third of `node_lease`. Every node also
//! ends the leases that ran out, setting those nodes' devices offline, so a node that dies
//! leaves no one online for longer than the lease (plus one renewal period). A node that finds
//! its own lease ended (say, it could not reach the database for a while) closes its device
//! connections, so that they reconnect and are seen again.

use std::time::Duration;

use crate::app::AppState;
use crate::bus::{DeviceMessage, Signal};
use crate::ids::Uaid;
use crate::registry::{Delivery, Eviction, Outbound};
use crate::store::StoreError;
use crate::ws::unix_now;

/// A new node id: a node is a process run, so a restarted node is a new node.
pub fn new_node_id() -> String {
    format!("n{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// Hands a message to a device: on its connection here, or through the bus to whichever node
/// holds it (the store has it either way). Returns what happened here.
pub fn deliver(state: &AppState, uaid: Uaid, message: DeviceMessage) -> Delivery {
    let delivery = hand_over(state, uaid, message.clone());
    // A close goes everywhere: an older connection of the UAID may be on another node too.
    if delivery == Delivery::NotConnected || matches!(message, DeviceMessage::Close(_)) {
        tell_device(state, uaid, message);
    }
    delivery
}

/// Hands the message to the UAID's connection on this node, if it has one.
fn hand_over(state: &AppState, uaid: Uaid, message: DeviceMessage) -> Delivery {
    let outbound = match message {
        DeviceMessage::Update(update) => Outbound::Update(Box::new(update)),
        DeviceMessage::Notification(notification) => Outbound::Notification(notification),
        DeviceMessage::Close(reason) => {
            let evicted = state.registry.evict(&uaid, reason);
            return if evicted { Delivery::Queued } else { Delivery::NotConnected };
        }
    };
    state.registry.deliver(&uaid, outbound)
}

/// Tells the other nodes, for the one holding the UAID's connection (a lone node has none).
pub fn tell_device(state: &AppState, uaid: Uaid, message: DeviceMessage) {
    if is_clustered(state) {
        state.bus.publish(Signal::Device { origin: state.node.clone(), uaid, message });
    }
}

/// Whether other nodes may exist: a bus between nodes is configured.
pub fn is_clustered(state: &AppState) -> bool {
    !state.config.bus_url.is_empty()
}

/// Carries out what other nodes ask of devices connected here, and catches every connection up
/// from the store when signals may have been missed.
pub async fn route_signals(state: AppState) {
    let mut signals = state.bus.subscribe();
    loop {
        let signal = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            signal = signals.recv() => signal,
        };
        match signal {
            Ok(Signal::Device { origin, uaid, message }) if origin != state.node => {
                state.metrics.node_signals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if hand_over(&state, uaid, message) == Delivery::QueueFull {
                    tracing::warn!(%uaid, "device queue full; the message waits in storage");
                }
            }
            Ok(Signal::StreamOpened { origin, app_id }) if origin != state.node => {
                state.streams.replace(&app_id);
            }
            Ok(Signal::Reconnected) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                state.registry.catch_up_all();
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Takes this node's lease; a lone node also sets everyone offline (nobody is connected yet),
/// a node of a cluster ends the leases of nodes that died.
pub async fn join(state: &AppState) -> Result<(), StoreError> {
    let now = unix_now();
    state.store.take_lease(now + lease_secs(state), now).await?;
    if is_clustered(state) {
        state.presence.publish(state.store.expire_leases(now).await?);
        state.presence.publish(state.store.expire_orphans(now).await?);
        Ok(())
    } else {
        state.presence.start().await
    }
}

/// Renews the lease and ends others' expired ones, every third of the lease, until shutdown.
/// While the bus is down, it also catches every connection up from the store, so pushes sent
/// through other nodes arrive late rather than at the next reconnect.
pub async fn keep_lease(state: AppState) {
    let period = state.config.node_lease / 3;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if let Err(error) = tend_lease(&state).await {
            tracing::error!(error = %crate::error::chain(&error), "cannot renew the node lease");
        }
        if !state.bus.is_connected() {
            state.registry.catch_up_all();
        }
    }
}

async fn tend_lease(state: &AppState) -> Result<(), StoreError> {
    let now = unix_now();
    let until = now + lease_secs(state);
    if !state.store.renew_lease(until, now).await? {
        tracing::warn!(node = %state.node, "node lease ran out; closing device connections so they reconnect");
        state.metrics.leases_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state.presence.publish(state.store.end_lease(now).await?);
        state.registry.evict_all(Eviction::LeaseLost);
        state.store.take_lease(until, now).await?;
    }
    state.presence.publish(state.store.expire_leases(now).await?);
    Ok(())
}

/// A clean stop: this node's devices are offline now, not when its lease runs out.
pub async fn leave(state: &AppState) {
    match state.store.end_lease(unix_now()).await {
        Ok(changes) => state.presence.publish(changes),
        Err(error) => tracing::error!(error = %crate::error::chain(&error), "cannot end the node lease"),
    }
}

fn lease_secs(state: &AppState) -> i64 {
    Duration::as_secs(&state.config.node_lease).max(1) as i64
}
