//! This node's place among others: its lease in the store. A lone node runs the same code.
//!
//! Leases: a node takes one at start and renews it every third of `node_lease`. Every node also
//! ends the leases that ran out, setting those nodes' devices offline, so a node that dies
//! leaves no one online for longer than the lease (plus one renewal period). A node that finds
//! its own lease ended (say, it could not reach the database for a while) closes its device
//! connections, so that they reconnect and are seen again.

use std::time::Duration;

use super::presence::Touched;
use super::Core;
use crate::clock::unix_now;
use crate::domain::Eviction;
use crate::store::StoreError;

/// A new node id: a node is a process run, so a restarted node is a new node.
pub fn new_node_id() -> String {
    format!("n{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// Takes this node's lease; a lone node also sets everyone offline (nobody is connected yet),
/// a node of a cluster ends the leases of nodes that died.
pub async fn join(state: &Core) -> Result<(), StoreError> {
    let now = unix_now();
    state.store.take_lease(now + lease_secs(state), now).await?;
    if state.is_clustered() {
        state.presence.announce(state.store.expire_leases(now).await?);
        state.presence.announce(state.store.expire_orphans(now).await?);
        Ok(())
    } else {
        state.presence.start().await
    }
}

/// Renews the lease and ends others' expired ones, every third of the lease, until shutdown.
/// While the bus is down, it also catches every connection up from the store, so pushes sent
/// through other nodes arrive late rather than at the next reconnect.
pub async fn keep_lease(state: Core) {
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
            state.devices.catch_up_all();
        }
    }
}

async fn tend_lease(state: &Core) -> Result<(), StoreError> {
    let now = unix_now();
    let until = now + lease_secs(state);
    if !state.store.renew_lease(until, now).await? {
        tracing::warn!(node = %state.node, "node lease ran out; closing device connections so they reconnect");
        state.metrics.leases_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state
            .presence
            .announce(state.presence.write(|c| Touched::changes(c), state.store.end_lease(now)).await?);
        state.devices.evict_all(Eviction::LeaseLost);
        state.store.take_lease(until, now).await?;
    }
    state
        .presence
        .announce(state.presence.write(|c| Touched::changes(c), state.store.expire_leases(now)).await?);
    Ok(())
}

/// A clean stop: this node's devices are offline now, not when its lease runs out.
pub async fn leave(state: &Core) {
    match state.presence.write(|c| Touched::changes(c), state.store.end_lease(unix_now())).await {
        Ok(changes) => state.presence.announce(changes),
        Err(error) => tracing::error!(error = %crate::error::chain(&error), "cannot end the node lease"),
    }
}

fn lease_secs(state: &Core) -> i64 {
    Duration::as_secs(&state.config.node_lease).max(1) as i64
}
