//! The operator's control socket: a Unix socket in the data directory (`presence.sock`, mode
//! 0600, so only the service's user may use it) where a running node takes the operator's
//! `presence account …` and `presence app …` verbs that change what live connections see. A
//! lone node keeps presence in memory, so those changes must run inside it; the CLI falls back to
//! the store (and the bus) only when no node listens here.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::ops::{lifecycle, Core};

/// The control socket of a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("presence.sock")
}

fn routes(core: Core) -> Router {
    Router::new()
        .route("/accounts/{name}/disable", post(disable_account))
        .route("/accounts/{name}/enable", post(enable_account))
        .route("/accounts/{name}", delete(delete_account))
        .route("/apps/{app_id}/disable", post(disable_app))
        .route("/apps/{app_id}/enable", post(enable_app))
        .route("/apps/{app_id}", delete(delete_app))
        .with_state(core)
}

/// Binds the control socket (before the node says it listens, so a verb run right after start
/// finds it). `None`, logged, when another live node serves it or it cannot be bound; the verbs
/// then refuse to change a lone node's data behind its back.
pub fn bind(path: &Path) -> Option<tokio::net::UnixListener> {
    // A socket file left by a process that died is in the way; a live one answers.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        tracing::warn!(path = %path.display(), "another node serves this control socket; not serving it here");
        return None;
    }
    let _ = std::fs::remove_file(path);
    let listener = match tokio::net::UnixListener::bind(path) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(path = %path.display(), error = %error, "cannot serve the control socket");
            return None;
        }
    };
    use std::os::unix::fs::PermissionsExt as _;
    if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %error, "cannot restrict the control socket");
        let _ = std::fs::remove_file(path);
        return None;
    }
    Some(listener)
}

/// Serves the control socket until `shutdown`, then removes it.
pub async fn serve(
    core: Core,
    listener: tokio::net::UnixListener,
    path: PathBuf,
    shutdown: CancellationToken,
) {
    let stop = shutdown.clone();
    let served =
        axum::serve(listener, routes(core)).with_graceful_shutdown(async move { stop.cancelled().await });
    if let Err(error) = served.await {
        tracing::warn!(error = %error, "the control socket failed");
    }
    let _ = std::fs::remove_file(&path);
}

async fn disable_account(
    State(core): State<Core>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = lifecycle::find_account(&core, &name).await?;
    lifecycle::set_account_disabled(&core, account, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable_account(
    State(core): State<Core>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = lifecycle::find_account(&core, &name).await?;
    lifecycle::set_account_disabled(&core, account, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_account(
    State(core): State<Core>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = lifecycle::find_account(&core, &name).await?;
    lifecycle::delete_account(&core, account).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disable_app(
    State(core): State<Core>,
    UrlPath(app_id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    lifecycle::set_app_disabled(&core, &app_id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable_app(
    State(core): State<Core>,
    UrlPath(app_id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    lifecycle::set_app_disabled(&core, &app_id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_app(
    State(core): State<Core>,
    UrlPath(app_id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    lifecycle::delete_app(&core, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
