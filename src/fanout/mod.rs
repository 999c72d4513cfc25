//! Fan-out: how apps hear about their users. The stream (`GET /{app_id}/presence.json`) and
//! the webhook dispatcher read each app's event log and wake on bus signals.

pub mod stream;
pub mod webhooks;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::ops::Core;

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
