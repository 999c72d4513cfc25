//! Fan-out: how apps hear about their users. The stream (`GET /{app_id}/presence.json`) and
//! the webhook dispatcher read each app's event log and wake on bus signals.
//!
//! Both write a change either as the seed's pair (`["uid", "status"]`, the stream adding the
//! seq) or, when the app asks for `v1`, as an `EventObject`.

pub mod stream;
pub mod webhooks;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::ops::Core;

/// One change in the versioned form (`v1`): the uid, the status the app sees, the seq of the
/// event in the app's log, and when it changed (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventObject {
    pub uid: String,
    pub status: String,
    pub seq: u64,
    pub time: String,
}

impl EventObject {
    pub fn new(uid: String, status: String, seq: u64, at: i64) -> EventObject {
        EventObject { uid, status, seq, time: crate::clock::rfc3339(at) }
    }
}

/// What the stream handlers and the dispatcher share.
#[derive(Clone)]
pub struct Fanout {
    pub core: Core,
    /// The live app streams of this node.
    pub streams: Arc<stream::Streams>,
}

impl std::ops::Deref for Fanout {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

pub fn routes(state: Fanout) -> Router {
    Router::new()
        .route("/{app_id}/presence.json", get(stream::stream))
        .route("/v1/apps/{app_id}/presence.json", get(stream::stream))
        .with_state(state)
}
