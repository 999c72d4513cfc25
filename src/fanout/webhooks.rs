//! The webhook dispatcher: for every app with a webhook URL, at most one POST per
//! `webhook_batch_interval`, carrying the latest status per user among the events not yet
//! delivered, signed per Standard Webhooks.
//!
//! Delivery is at least once: the app's cursor moves past events only after a 2xx, so a crash
//! before that resends them. Failures back off exponentially with jitter (1 s doubling to an
//! hour) or as `Retry-After` says; `410 Gone` disables the endpoint at once, and so does
//! continuous failure for `webhook_disable_after`. One request per endpoint is in flight at a
//! time. Paused and revoked grants are re-checked when the batch is read, just before sending.
//!
//! Events are kept for `event_retention` only. A webhook whose cursor fell behind what is kept
//! (it failed, or was disabled, for longer) would miss the purged changes: its next POST is a
//! resync instead, the current status of every enabled grant (in the same format), its
//! `webhook-id` starting `msg_resync_` and with the header `presence-resync: true`; the cursor
//! then moves to the end of the log.
//!
//! The body is the app's `webhook_format`: `pairs`, `[["uid", "status"], …]`, or `v1`, the
//! Standard Webhooks envelope `{"type": "presence.changed" (or "presence.resync"), "timestamp",
//! "data": {"events": [{uid, status, seq, time}, …]}}`. After a webhook secret rotation, while
//! the old secret's overlap lasts, `webhook-signature` carries both signatures, new first.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{EventObject, Fanout};
use crate::clock::unix_now;
use crate::domain::{DeliveryRecord, Event, EventFormat, WebhookOutcome};
use crate::egress::Egress;
use crate::store::WebhookTarget;

/// How much of a webhook's response body is read (and discarded).
const MAX_RESPONSE_BODY: usize = 64 * 1024;
const MAX_BACKOFF_SECS: u64 = 3600;
const MAX_RETRY_AFTER_SECS: u64 = 86400;
/// Due webhooks are looked for at most this often, however many events arrive.
const MIN_SCAN_GAP: Duration = Duration::from_millis(100);

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the `whsec_` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The latest event per uid, in the order of each uid's last event.
pub fn latest_per_uid(events: Vec<Event>) -> Vec<Event> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        last.insert(&event.uid, index);
    }
    let mut indices: Vec<usize> = last.into_values().collect();
    indices.sort_unstable();
    let mut events: Vec<Option<Event>> = events.into_iter().map(Some).collect();
    indices.into_iter().filter_map(|i| events[i].take()).collect()
}

/// The Standard Webhooks envelope of a `v1` body.
#[derive(serde::Serialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: EnvelopeData,
}

#[derive(serde::Serialize)]
struct EnvelopeData {
    events: Vec<EventObject>,
}

/// One POST's body in the app's format, sent at `timestamp` (Unix seconds).
pub fn body(format: EventFormat, resync: bool, batch: Vec<Event>, timestamp: i64) -> String {
    match format {
        EventFormat::Pairs => {
            let pairs: Vec<(String, String)> = batch.into_iter().map(|e| (e.uid, e.status)).collect();
            serde_json::to_string(&pairs)
        }
        EventFormat::V1 => serde_json::to_string(&Envelope {
            kind: if resync { "presence.resync" } else { "presence.changed" },
            timestamp: crate::clock::rfc3339(timestamp),
            data: EnvelopeData {
                events: batch.into_iter().map(|e| EventObject::new(e.uid, e.status, e.seq, e.at)).collect(),
            },
        }),
    }
    .expect("bodies serialize")
}

/// Delay before retry number `attempts` (0-based): doubling from 1 s, capped at an hour, with
/// jitter over its upper half.
pub fn backoff(attempts: u32) -> Duration {
    let ceiling = 1u64.checked_shl(attempts.min(20)).unwrap_or(u64::MAX).min(MAX_BACKOFF_SECS) * 1000;
    Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), ceiling / 2..=ceiling))
}

/// `Retry-After` as seconds from now: a number of seconds or an HTTP date, capped at a day.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let seconds = match value.trim().parse::<u64>() {
        Ok(seconds) => seconds,
        Err(_) => {
            httpdate::parse_http_date(value.trim()).ok()?.duration_since(now).map_or(0, |d| d.as_secs())
        }
    };
    Some(seconds.min(MAX_RETRY_AFTER_SECS))
}

pub struct Dispatcher {
    state: Fanout,
    /// Everyone's rules and their client.
    client: reqwest::Client,
    egress: Egress,
    /// The rules and client of each set of an app's own ranges (`presence app
    /// allow-webhook-range`), made when first needed.
    widened: Mutex<HashMap<String, (Egress, reqwest::Client)>>,
    in_flight: Mutex<HashSet<String>>,
    /// When each endpoint was last tried by this node (finer than the stored seconds), within
    /// the last batch interval: older entries decide nothing and are dropped at each scan.
    last_tried: Mutex<HashMap<String, Instant>>,
}

impl Dispatcher {
    pub fn new(state: Fanout) -> Arc<Dispatcher> {
        let egress = state.egress.as_ref().clone();
        let client = egress.client(state.config.webhook_timeout);
        Arc::new(Dispatcher {
            state,
            client,
            egress,
            widened: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            last_tried: Mutex::new(HashMap::new()),
        })
    }

    /// Scans for due webhooks when any app's events arrive (its doorbell rings; at most every
    /// `MIN_SCAN_GAP`) and every second.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_scan = Instant::now() - Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = self.state.bus.bells().any().notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let since = last_scan.elapsed();
            if since < MIN_SCAN_GAP {
                tokio::time::sleep(MIN_SCAN_GAP - since).await;
            }
            last_scan = Instant::now();
            let now = unix_now();
            let sent_before = now - self.state.config.webhook_batch_interval.as_secs() as i64;
            let claim_until = now + self.state.config.node_lease.as_secs() as i64;
            let due = self
                .state
                .metrics
                .timings
                .time("due_webhooks", self.state.store.due_webhooks(now, sent_before, claim_until));
            match due.await {
                Ok(due) => self.start(due),
                Err(error) => {
                    tracing::error!(error = %crate::error::chain(&error), "cannot list due webhooks")
                }
            }
        }
    }

    fn start(self: &Arc<Self>, due: Vec<WebhookTarget>) {
        let interval = self.state.config.webhook_batch_interval;
        self.last_tried.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, at| at.elapsed() < interval);
        for target in due {
            // At most one POST per interval: the store only lists apps whose stored last send
            // (seconds; it covers restarts and other nodes) is an interval old, and the
            // monotonic time covers this node's own attempts within a second.
            let tried =
                self.last_tried.lock().unwrap_or_else(|e| e.into_inner()).get(&target.app_id).copied();
            if tried.is_some_and(|at| at.elapsed() < interval) {
                continue;
            }
            if !self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(target.app_id.clone()) {
                continue; // one request in flight per endpoint
            }
            self.last_tried
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(target.app_id.clone(), Instant::now());
            let dispatcher = Arc::clone(self);
            self.state.tracker.spawn(async move {
                let app_id = target.app_id.clone();
                if let Err(error) = dispatcher.attempt(target).await {
                    tracing::error!(error = %crate::error::chain(&error), app_id = %app_id, "webhook attempt not recorded");
                }
                dispatcher.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&app_id);
            });
        }
    }

    async fn attempt(&self, target: WebhookTarget) -> Result<(), crate::store::StoreError> {
        let config = &self.state.config;
        let store = &self.state.store;
        let timings = &self.state.metrics.timings;
        // A webhook that keeps up finds its events in memory (they follow its cursor, so none
        // is gone); one further behind asks the store.
        let max_batch = config.webhook_max_batch;
        let recent = self.state.presence.recent_events(&target.app_id, target.cursor, max_batch as usize);
        let behind = recent.is_none()
            && timings
                .time("log_bounds", store.log_bounds(&target.app_id))
                .await?
                .is_some_and(|bounds| target.cursor < bounds.purged_seq);
        let (batch, cursor, message_id) = if behind {
            // Events the webhook never got are gone: send everyone's current status instead.
            let snapshot = timings.time("snapshot", store.snapshot(&target.app_id)).await?;
            let now = unix_now();
            let seq = snapshot.seq;
            let batch: Vec<Event> = snapshot
                .entries
                .into_iter()
                .map(|entry| Event { seq, uid: entry.uid, status: entry.status, at: entry.at.unwrap_or(now) })
                .collect();
            tracing::info!(app_id = %target.app_id, users = batch.len(), "webhook behind the event log: resync");
            (batch, snapshot.seq, format!("msg_resync_{}_{}_{}", target.app_id, target.cursor, snapshot.seq))
        } else {
            let page = match recent {
                Some(page) => page,
                None => {
                    let read = store.events_after(&target.app_id, target.cursor, max_batch);
                    timings.time("events_after", read).await?
                }
            };
            let id = format!("msg_{}_{}_{}", target.app_id, target.cursor, page.scanned_to);
            (latest_per_uid(page.events), page.scanned_to, id)
        };
        let started = Instant::now();
        let now = unix_now();
        let mut record = DeliveryRecord {
            at: now,
            message_id: message_id.clone(),
            events: batch.len() as u32,
            status_code: None,
            error: None,
            duration_ms: 0,
        };
        if batch.is_empty() {
            // Everything read was withheld (paused or revoked users): nothing to send.
            let outcome = WebhookOutcome::Delivered { cursor };
            return timings
                .time("record_attempt", store.record_attempt(&target.app_id, &record, &outcome))
                .await;
        }
        let body = body(target.format, behind, batch, now);
        let sent = self.send(&target, &message_id, behind, now, body).await;
        let took = started.elapsed();
        record.duration_ms = took.as_millis() as u64;
        let outcome = match &sent {
            Ok((status, _)) if (200..300).contains(status) => "delivered",
            Ok((410, _)) => "gone",
            Ok(_) => "refused",
            Err(_) => "error",
        };
        timings
            .webhook_attempt
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .observe(took.as_secs_f64());
        let failing_for = target.failing_since.map_or(0, |since| now - since);
        let give_up = failing_for >= config.webhook_disable_after.as_secs() as i64;
        let outcome = match sent {
            Ok((status, _)) if (200..300).contains(&status) => {
                record.status_code = Some(status);
                WebhookOutcome::Delivered { cursor }
            }
            Ok((410, _)) => {
                record.status_code = Some(410);
                let disable = "the endpoint answered 410 Gone".to_owned();
                tracing::warn!(app_id = %target.app_id, "webhook disabled: 410 Gone");
                WebhookOutcome::Failed { retry_at: now, disable: Some(disable) }
            }
            Ok((status, wait)) => {
                record.status_code = Some(status);
                record.error = Some(format!("the endpoint answered {status}"));
                self.failed(&target, now, wait, give_up)
            }
            Err(error) => {
                record.error = Some(error);
                self.failed(&target, now, None, give_up)
            }
        };
        timings.time("record_attempt", store.record_attempt(&target.app_id, &record, &outcome)).await
    }

    fn failed(
        &self,
        target: &WebhookTarget,
        now: i64,
        retry_after: Option<u64>,
        give_up: bool,
    ) -> WebhookOutcome {
        if give_up {
            tracing::warn!(app_id = %target.app_id, "webhook disabled after failing continuously");
            let days = self.state.config.webhook_disable_after.as_secs() / 86400;
            let reason = format!(
                "failing continuously for {}",
                if days > 0 { format!("{days} days") } else { "too long".into() }
            );
            return WebhookOutcome::Failed { retry_at: now, disable: Some(reason) };
        }
        let wait = match retry_after {
            Some(seconds) => Duration::from_secs(seconds),
            None => backoff(target.attempts),
        };
        WebhookOutcome::Failed { retry_at: now + wait.as_secs_f64().ceil() as i64, disable: None }
    }

    /// The rules for an app with these ranges of its own, and a client that keeps to them.
    fn rules_for(&self, allow: &str) -> (Egress, reqwest::Client) {
        if allow.trim().is_empty() {
            return (self.egress.clone(), self.client.clone());
        }
        let mut widened = self.widened.lock().unwrap_or_else(|e| e.into_inner());
        widened
            .entry(allow.to_owned())
            .or_insert_with(|| {
                let egress = self.egress.widened(&crate::ops::apps::webhook_ranges(allow));
                let client = egress.client(self.state.config.webhook_timeout);
                (egress, client)
            })
            .clone()
    }

    /// The secret a rotation replaced, while it still signs at `now`.
    fn previous_secret(&self, target: &WebhookTarget, now: i64) -> Option<String> {
        let sealed = target.previous_secret_sealed.as_deref()?;
        if target.previous_until.is_none_or(|until| until <= now) {
            return None;
        }
        let opened = self.state.webhook_vault.open(sealed);
        if opened.is_none() {
            tracing::warn!(app_id = %target.app_id, "the previous webhook secret cannot be opened");
        }
        opened
    }

    /// POSTs the body; returns the status and any `Retry-After`, or why nothing was received.
    async fn send(
        &self,
        target: &WebhookTarget,
        id: &str,
        resync: bool,
        timestamp: i64,
        body: String,
    ) -> Result<(u16, Option<u64>), String> {
        let url = url::Url::parse(&target.url).map_err(|_| "the webhook URL does not parse".to_owned())?;
        let (egress, client) = self.rules_for(&target.allow);
        egress.check_url(&url)?;
        let secret =
            self.state.webhook_vault.open(&target.secret_sealed).ok_or_else(|| {
                "the webhook secret cannot be opened (was the server key changed?)".to_owned()
            })?;
        let mut signature = sign(&secret, id, timestamp, &body)
            .ok_or_else(|| "the webhook secret is malformed".to_owned())?;
        // During a rotation's overlap the replaced secret signs too, so the app may check either.
        if let Some(previous) = self.previous_secret(target, timestamp) {
            match sign(&previous, id, timestamp, &body) {
                Some(old) => {
                    signature.push(' ');
                    signature.push_str(&old);
                }
                None => tracing::warn!(app_id = %target.app_id, "the previous webhook secret is malformed"),
            }
        }
        let mut request = client.post(url);
        if resync {
            request = request.header("presence-resync", "true");
        }
        let response = request
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        // Read a little of the body, so the connection can be reused; never all of it.
        let mut response = response;
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > MAX_RESPONSE_BODY {
                break;
            }
        }
        Ok((status, wait))
    }
}

/// A short reason for a failed request, naming egress refusals plainly.
fn describe(error: &reqwest::Error) -> String {
    let chain = crate::error::chain(error);
    if let Some(refused) = chain.split(": ").find(|part| part.starts_with("refused")) {
        return refused.to_owned();
    }
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        format!("cannot connect: {chain}")
    } else {
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, uid: &str, status: &str) -> Event {
        Event { seq, uid: uid.into(), status: status.into(), at: 1_614_265_330 + seq as i64 }
    }

    #[test]
    fn a_batch_keeps_the_latest_status_per_user() {
        let events = vec![
            event(1, "a", "online"),
            event(2, "b", "away"),
            event(3, "a", "offline"),
            event(4, "c", "online"),
        ];
        assert_eq!(
            latest_per_uid(events),
            vec![event(2, "b", "away"), event(3, "a", "offline"), event(4, "c", "online")]
        );
    }

    #[test]
    fn bodies_are_pairs_by_default_and_an_envelope_in_v1() {
        let batch = || vec![event(7, "u_a", "online"), event(9, "u_b", "away")];
        assert_eq!(body(EventFormat::Pairs, false, batch(), 0), r#"[["u_a","online"],["u_b","away"]]"#);
        let v1: serde_json::Value =
            serde_json::from_str(&body(EventFormat::V1, false, batch(), 1_614_265_400)).unwrap();
        assert_eq!(
            v1,
            serde_json::json!({
                "type": "presence.changed",
                "timestamp": "2021-02-25T15:03:20Z",
                "data": {"events": [
                    {"uid": "u_a", "status": "online", "seq": 7, "time": "2021-02-25T15:02:17Z"},
                    {"uid": "u_b", "status": "away", "seq": 9, "time": "2021-02-25T15:02:19Z"},
                ]},
            })
        );
        let resync: serde_json::Value =
            serde_json::from_str(&body(EventFormat::V1, true, batch(), 0)).unwrap();
        assert_eq!(resync["type"], "presence.resync");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_an_hour() {
        for attempts in 0..30 {
            let ceiling = (1u64 << attempts.min(20)).min(3600) * 1000;
            let wait = backoff(attempts).as_millis() as u64;
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{attempts}: {wait}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(retry_after("120", now), Some(120));
        assert_eq!(retry_after("999999999", now), Some(86400));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(&later, now), Some(90));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example from the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
