//! `PUT /update/<token>`: how an AppServer tells a device that its channel has a new version.
//!
//! The version comes from the form body (`version=N`, with or without a Content-Type) or the
//! query string; without one it is the current Unix time. The update is stored first, then
//! handed to the device's live connection if it has one: `200` when it went to a live
//! connection, `202` when it waits in storage for the next hello.

use axum::body::{to_bytes, Body};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Gateway;
use crate::bus::DeviceMessage;
use crate::config::MAX_UPDATE_DATA;
use crate::domain::Delivery;
use crate::domain::PushUpdate;
use crate::http::error::ApiError;
use crate::store::Saved;

/// The version and optional data of one update, parsed from the request.
#[derive(Debug, PartialEq, Eq)]
pub struct UpdateRequest {
    pub version: u64,
    pub data: Option<String>,
}

impl UpdateRequest {
    /// Body fields win over query fields; `now` is the version when neither has one.
    pub fn parse(body: &[u8], query: Option<&str>, now: u64) -> Result<UpdateRequest, ApiError> {
        let mut version = None;
        let mut data = None;
        let query = query.unwrap_or("").as_bytes();
        for source in [body, query] {
            for (key, value) in form_urlencoded::parse(source) {
                match &*key {
                    "version" if version.is_none() => version = Some(value.into_owned()),
                    "data" if data.is_none() => data = Some(value.into_owned()),
                    _ => {}
                }
            }
        }
        let version = match version.as_deref().map(str::trim) {
            None | Some("") => now,
            Some(text) => {
                text.parse::<u64>().ok().filter(|v| i64::try_from(*v).is_ok()).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_version",
                        "version must be a whole number from 0 to 9223372036854775807",
                    )
                })?
            }
        };
        let data = data.filter(|d| !d.is_empty());
        if data.as_ref().is_some_and(|d| d.len() > MAX_UPDATE_DATA) {
            return Err(data_too_large());
        }
        Ok(UpdateRequest { version, data })
    }
}

fn data_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "data_too_large",
        format!("data may be at most {MAX_UPDATE_DATA} bytes"),
    )
}

pub async fn put(
    State(state): State<Gateway>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let Some((uaid, channel)) = state.keys.open(&token) else {
        return Err(ApiError::not_found("no such push endpoint"));
    };
    let body = to_bytes(body, state.config.max_update_body).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body may be at most {} bytes", state.config.max_update_body),
        )
    })?;
    let now = crate::clock::unix_now() as u64;
    let request = UpdateRequest::parse(&body, query.as_deref(), now)?;
    let update = PushUpdate { channel, version: request.version, data: request.data };
    let saved = state.store.save_update(&uaid, &update, state.config.max_stored_per_uaid).await?;
    let gone = |detail: &str| ApiError::new(StatusCode::GONE, "endpoint_gone", detail);
    let connected = match saved {
        // A device connected to another node gets it through the bus; this answers 202 (stored).
        Saved::Newer => {
            match crate::ops::DeviceLink::deliver(state.relay.as_ref(), uaid, DeviceMessage::Update(update)) {
                Delivery::Queued => true,
                Delivery::NotConnected => false,
                Delivery::QueueFull => {
                    state.metrics.outbound_queue_full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(%uaid, "device queue full; update left in storage");
                    false
                }
            }
        }
        // The device has (or will get) this version or a newer one already.
        Saved::NotNewer => state.registry.is_connected(&uaid),
        Saved::TooManyStored => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_stored",
                "the device has too many undelivered notifications; retry later",
            ))
        }
        Saved::ChannelGone => return Err(gone("this channel was unregistered")),
        Saved::UaidGone => return Err(gone("this device no longer exists")),
    };
    if connected {
        Ok(StatusCode::OK.into_response())
    } else {
        if saved == Saved::Newer {
            state.metrics.notifications_stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(StatusCode::ACCEPTED.into_response())
    }
}

pub async fn method_not_allowed() -> Response {
    let mut response =
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "push endpoints accept PUT only")
            .into_response();
    response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("PUT"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_body_then_the_query_then_the_clock() {
        assert_eq!(UpdateRequest::parse(b"version=5", Some("version=9"), 1).unwrap().version, 5);
        assert_eq!(UpdateRequest::parse(b"", Some("version=9"), 1).unwrap().version, 9);
        assert_eq!(UpdateRequest::parse(b"", None, 77).unwrap().version, 77);
        assert_eq!(UpdateRequest::parse(b"version=", None, 77).unwrap().version, 77);
        assert_eq!(UpdateRequest::parse(b"version=0", None, 77).unwrap().version, 0);
    }

    #[test]
    fn bad_versions_and_large_data_are_refused() {
        for bad in ["version=-1", "version=abc", "version=1.5", "version=9223372036854775808"] {
            let err = UpdateRequest::parse(bad.as_bytes(), None, 1).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let big = format!("version=1&data={}", "x".repeat(MAX_UPDATE_DATA + 1));
        assert_eq!(
            UpdateRequest::parse(big.as_bytes(), None, 1).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let fits = format!("version=1&data={}", "x".repeat(MAX_UPDATE_DATA));
        assert!(UpdateRequest::parse(fits.as_bytes(), None, 1).unwrap().data.is_some());
    }
}
