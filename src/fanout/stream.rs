//! The stream `GET /{app_id}/presence.json`: an app's presence updates, held open.
//!
//! Newline-delimited JSON by default: one array per flush, each entry `["<uid>", "<status>",
//! <seq>]` (the seed's pair, plus the event's sequence number so a consumer can resume), and
//! `[]` as the heartbeat when idle. With `Accept: text/event-stream`, Server-Sent Events: the
//! same array as `data:` with `id:` the last seq, and comments as heartbeats.
//!
//! `?since=<seq>` or `Last-Event-ID` resumes after that event (no gap, no duplicate) while it
//! is within retention; before it the answer is `410 resync_required`. `?snapshot=true` starts
//! with every granted user's current status. The server ends a stream with a last line saying
//! why: the consumer lagged past `stream_buffer` chunks, a newer stream for the app replaced
//! it, or the server is shutting down.
//!
//! `?format=v1` writes each entry as an object instead, `{"uid", "status", "seq", "time"}`
//! (`time` the RFC 3339 UTC time of the change), in the same arrays; heartbeats and closing
//! lines stay as they are. `?format=pairs` is the default.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::{EventObject, Fanout};
use crate::bus::Signal;
use crate::domain::EventFormat;
use crate::http::auth::AuthedApp;
use crate::http::error::ApiError;

const PAGE: u32 = 500;

/// One live stream: its number, what ends it, and the bell that wakes it.
struct Live {
    id: u64,
    replaced: CancellationToken,
    wake: Arc<Notify>,
}

/// The live stream of each app on this node: a newer one replaces the older. Each hangs its
/// app's doorbell on the bus, so only that app's new events wake it.
pub struct Streams {
    live: Mutex<HashMap<String, Live>>,
    next: AtomicU64,
    bus: Arc<dyn crate::bus::Bus>,
}

impl Streams {
    pub fn new(bus: Arc<dyn crate::bus::Bus>) -> Streams {
        Streams { live: Mutex::default(), next: AtomicU64::new(0), bus }
    }

    fn open(&self, app_id: &str) -> (u64, CancellationToken, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (replaced, wake) = (CancellationToken::new(), Arc::new(Notify::new()));
        let live = Live { id, replaced: replaced.clone(), wake: wake.clone() };
        let older = {
            let mut streams = self.lock();
            self.bus.bells().hang(app_id, wake.clone());
            streams.insert(app_id.to_owned(), live)
        };
        if let Some(older) = older {
            older.replaced.cancel();
        }
        (id, replaced, wake)
    }

    /// Ends this node's stream of the app, if any: a newer one opened on another node.
    pub fn replace(&self, app_id: &str) {
        if let Some(live) = self.remove(app_id, None) {
            live.replaced.cancel();
        }
    }

    /// Removes the app's stream (only if it is stream `id`, when given) with its bell: the
    /// registry and the bells lose a stream together.
    fn remove(&self, app_id: &str, id: Option<u64>) -> Option<Live> {
        let mut streams = self.lock();
        if id.is_some_and(|id| streams.get(app_id).is_none_or(|current| current.id != id)) {
            return None;
        }
        let live = streams.remove(app_id)?;
        self.bus.bells().take_down(app_id, &live.wake);
        Some(live)
    }

    fn wake_all(&self) {
        for live in self.lock().values() {
            live.wake.notify_one();
        }
    }

    /// Reads the bus for the streams of this node until it closes or `shutdown` fires: wakes
    /// every stream when signals may have been missed, and ends a stream that a newer one on
    /// another node replaced. (An app's new events ring its stream's bell directly.)
    pub async fn follow(self: Arc<Self>, node: Arc<str>, shutdown: CancellationToken) {
        let mut signals = self.bus.subscribe();
        loop {
            let signal = tokio::select! {
                _ = shutdown.cancelled() => return,
                signal = signals.recv() => signal,
            };
            match signal {
                Ok(Signal::StreamOpened { origin, app_id }) if origin != node => self.replace(&app_id),
                Ok(Signal::Reconnected) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.wake_all();
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn close(&self, app_id: &str, id: u64) {
        self.remove(app_id, Some(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Deserialize)]
pub struct StreamQuery {
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    snapshot: Option<bool>,
    /// `pairs` (the default) or `v1`.
    #[serde(default)]
    format: Option<String>,
}

/// One change as the stream sends it.
struct Entry {
    uid: String,
    status: String,
    seq: u64,
    at: i64,
}

fn serialize(form: EventFormat, entries: Vec<Entry>) -> String {
    match form {
        EventFormat::Pairs => {
            let pairs: Vec<(String, String, u64)> =
                entries.into_iter().map(|e| (e.uid, e.status, e.seq)).collect();
            serde_json::to_string(&pairs)
        }
        EventFormat::V1 => {
            let objects: Vec<EventObject> =
                entries.into_iter().map(|e| EventObject::new(e.uid, e.status, e.seq, e.at)).collect();
            serde_json::to_string(&objects)
        }
    }
    .expect("entries serialize")
}

/// The `?format=` of a stream request.
fn stream_form(named: Option<&str>) -> Result<EventFormat, ApiError> {
    match named {
        None => Ok(EventFormat::Pairs),
        Some(name) => EventFormat::parse(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_format",
                format!("format={name:?} is not a stream format: use \"pairs\" (the default) or \"v1\""),
            )
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Lines,
    EventStream,
}

impl Format {
    fn batch(self, form: EventFormat, entries: Vec<Entry>) -> Bytes {
        let id = entries.last().map_or(0, |e| e.seq);
        let array = serialize(form, entries);
        match self {
            Format::Lines => Bytes::from(format!("{array}\n")),
            Format::EventStream => Bytes::from(format!("id: {id}\ndata: {array}\n\n")),
        }
    }

    fn heartbeat(self) -> Bytes {
        match self {
            Format::Lines => Bytes::from_static(b"[]\n"),
            Format::EventStream => Bytes::from_static(b": heartbeat\n\n"),
        }
    }

    fn closing(self, code: &str, detail: &str, cursor: u64) -> Bytes {
        let object = json!({"error": code, "detail": detail, "resume_since": cursor});
        match self {
            Format::Lines => Bytes::from(format!("{object}\n")),
            Format::EventStream => Bytes::from(format!("event: close\ndata: {object}\n\n")),
        }
    }
}

pub async fn stream(
    State(state): State<Fanout>,
    Path(app_id): Path<String>,
    authed: AuthedApp,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authed.require(&app_id)?;
    let form = stream_form(query.format.as_deref())?;
    let format = match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        Some(accept) if accept.contains("text/event-stream") => Format::EventStream,
        _ => Format::Lines,
    };
    let last_event_id =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let since = query.since.or(last_event_id);
    let bounds = state.store.log_bounds(&app_id).await?.ok_or_else(|| ApiError::not_found("no such app"))?;
    if let Some(since) = since {
        if since < bounds.purged_seq {
            return Err(ApiError::new(
                StatusCode::GONE,
                "resync_required",
                format!(
                    "events after {since} are past retention (kept from {}); reconnect with ?snapshot=true",
                    bounds.purged_seq + 1
                ),
            ));
        }
        if since > bounds.last_seq {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_since",
                format!("since={since} is beyond the newest event ({})", bounds.last_seq),
            ));
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(state.config.stream_buffer);
    let (id, replaced, wake) = state.streams.open(&app_id);
    // One stream per app in the whole cluster: an older one on another node ends too.
    if state.is_clustered() {
        state.bus.publish(Signal::StreamOpened { origin: state.node.clone(), app_id: app_id.clone() });
    }
    let snapshot = query.snapshot.unwrap_or(false);
    let start = since.unwrap_or(bounds.last_seq);
    state.metrics.streams.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let pump = Pump { state: state.clone(), app_id: app_id.clone(), format, form, tx, cursor: start };
        pump.run(snapshot, replaced, wake).await;
        state.streams.close(&app_id, id);
        state.metrics.streams.fetch_sub(1, Ordering::Relaxed);
    });
    let content_type = match format {
        Format::Lines => "application/x-ndjson",
        Format::EventStream => "text/event-stream",
    };
    let chunks = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = Body::from_stream(futures_util::StreamExt::map(chunks, Ok::<Bytes, std::convert::Infallible>));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

/// Why a stream ended early.
enum End {
    /// The consumer went away, or the stream closed itself with a reason already sent.
    Done,
    Lagging,
}

struct Pump {
    state: Fanout,
    app_id: String,
    format: Format,
    form: EventFormat,
    tx: mpsc::Sender<Bytes>,
    cursor: u64,
}

impl Pump {
    /// Queues a chunk unless that would leave no room for a closing line.
    fn push(&self, chunk: Bytes) -> Result<(), End> {
        if self.tx.is_closed() {
            return Err(End::Done);
        }
        if self.tx.capacity() < 2 {
            return Err(End::Lagging);
        }
        self.tx.try_send(chunk).map_err(|_| End::Done)
    }

    fn close_with(&self, code: &str, detail: &str) {
        let _ = self.tx.try_send(self.format.closing(code, detail, self.cursor));
    }

    async fn run(mut self, snapshot: bool, replaced: CancellationToken, wake: Arc<Notify>) {
        let shutdown = self.state.shutdown.clone();
        let heartbeat = self.state.config.stream_heartbeat;
        let result: Result<(), End> = async {
            if snapshot {
                self.snapshot().await?;
            }
            loop {
                self.drain().await?;
                tokio::select! {
                    _ = replaced.cancelled() => {
                        self.close_with("replaced", "a newer stream for this app replaced this one");
                        return Err(End::Done);
                    }
                    _ = shutdown.cancelled() => {
                        self.close_with("shutting_down", "the server is shutting down; reconnect with ?since");
                        return Err(End::Done);
                    }
                    _ = self.tx.closed() => return Err(End::Done),
                    // A heartbeat also reads the log: a signal lost between nodes delays an
                    // event by at most one heartbeat.
                    () = tokio::time::sleep(heartbeat) => self.push(self.format.heartbeat())?,
                    // This app's log grew, or signals may have been missed.
                    () = wake.notified() => {}
                }
            }
        }
        .await;
        if let Err(End::Lagging) = result {
            self.state.metrics.streams_lagging.fetch_add(1, Ordering::Relaxed);
            self.close_with(
                "consumer_lagging",
                "the consumer fell too far behind; reconnect with ?since to resume",
            );
        }
    }

    async fn snapshot(&mut self) -> Result<(), End> {
        let timings = &self.state.metrics.timings;
        let snapshot = match timings.time("snapshot", self.state.store.snapshot(&self.app_id)).await {
            Ok(found) => found,
            Err(error) => return Err(self.store_failed(error)),
        };
        let seq = snapshot.seq;
        let now = crate::clock::unix_now();
        let entries: Vec<Entry> = snapshot
            .entries
            .into_iter()
            .map(|entry| Entry { uid: entry.uid, status: entry.status, seq, at: entry.at.unwrap_or(now) })
            .collect();
        self.push(self.format.batch(self.form, entries))?;
        self.cursor = seq;
        Ok(())
    }

    /// Sends everything in the log after the cursor.
    async fn drain(&mut self) -> Result<(), End> {
        loop {
            // A stream that keeps up finds its events in memory; one behind reads the store.
            let page = match self.state.presence.recent_events(&self.app_id, self.cursor, PAGE as usize) {
                Some(page) => page,
                None => {
                    // The store follows the journal a little behind: let it catch up first, or
                    // this read could end short of events whose wake has already come.
                    self.state.presence.settle().await;
                    let read = self.state.store.events_after(&self.app_id, self.cursor, PAGE);
                    match self.state.metrics.timings.time("events_after", read).await {
                        Ok(page) => page,
                        Err(error) => return Err(self.store_failed(error)),
                    }
                }
            };
            let scanned_all = page.complete;
            if !page.events.is_empty() {
                let entries: Vec<Entry> = page
                    .events
                    .into_iter()
                    .map(|e| Entry { uid: e.uid, status: e.status, seq: e.seq, at: e.at })
                    .collect();
                self.push(self.format.batch(self.form, entries))?;
            }
            self.cursor = page.scanned_to;
            if scanned_all {
                return Ok(());
            }
        }
    }

    fn store_failed(&self, error: crate::store::StoreError) -> End {
        tracing::error!(error = %crate::error::chain(&error), app_id = %self.app_id, "stream cannot read the log");
        self.close_with("unavailable", "the server cannot read the event log; reconnect later");
        End::Done
    }
}
