//! appmaker's side of Presence, over HTTP only, as any third-party app would talk to it:
//!
//! 1. send the user to the consent page with a `state` and a PKCE challenge (`consent_url`);
//! 2. trade the code Presence redirects back with for the user's uid (`exchange_code`);
//! 3. follow the app's stream of presence updates (`?format=v1`: objects `{uid, status, seq,
//!    time}`), resuming after the last seq seen (`follow`);
//! 4. send a user a live notification (`notify`);
//! 5. check a webhook Presence sent (`verify_webhook`, Standard Webhooks signatures) and read its
//!    `v1` envelope (`webhook_batch`).
//!
//! The app authenticates with HTTP Basic `app_id:secret`. Every Presence error is JSON
//! `{"code", "detail"}`.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use futures_util::StreamExt as _;
use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// Where Presence is and who the app is there.
#[derive(Clone)]
pub struct Presence {
    /// `http://host:port` of the Presence service.
    pub url: String,
    pub app_id: String,
    /// The app's secret (`ps_…`): keep it on the server, never in a page.
    pub secret: String,
    http: reqwest::Client,
}

#[derive(Debug)]
pub enum PresenceError {
    /// Presence could not be reached, or answered something that is not JSON.
    Unreachable(reqwest::Error),
    /// Presence answered with an error: its status, stable code and sentence.
    Refused { status: u16, code: String, detail: String },
}

impl std::fmt::Display for PresenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PresenceError::Unreachable(error) => write!(f, "presence unreachable: {error}"),
            PresenceError::Refused { status, code, detail } => {
                write!(f, "presence refused ({status} {code}): {detail}")
            }
        }
    }
}

impl std::error::Error for PresenceError {}

impl From<reqwest::Error> for PresenceError {
    fn from(error: reqwest::Error) -> Self {
        PresenceError::Unreachable(error)
    }
}

/// A consent asked for: the page to send the user to, and what to keep until they come back.
pub struct Consent {
    pub url: String,
    /// Sent along and echoed back: ties the callback to this attempt (and to no forged one).
    pub state: String,
    /// The PKCE secret whose hash went in the URL; only this app can exchange the code.
    pub verifier: String,
}

/// What the stream or a webhook said.
pub enum Batch {
    /// Everyone the app may see now (the first batch of a `?snapshot=true` stream, or a
    /// `presence.resync` webhook).
    Snapshot(Vec<Change>),
    /// Changes since the last batch, in order.
    Changes(Vec<Change>),
}

/// `{uid, status, seq, time}`: status is online, away, offline or revoked; seq orders the
/// changes of the app's log, whichever way they came.
pub struct Change {
    pub uid: String,
    pub status: String,
    pub seq: u64,
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

impl Presence {
    pub fn new(url: &str, app_id: &str, secret: &str) -> Presence {
        // No overall timeout: the stream is held open. A stream that stays silent past a few
        // heartbeats (15 s each) is dead, and is read again.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("a default HTTP client builds");
        Presence {
            url: url.trim_end_matches('/').to_owned(),
            app_id: app_id.to_owned(),
            secret: secret.to_owned(),
            http,
        }
    }

    /// Step 1: the consent page's URL for a user who will come back to `redirect_uri`.
    pub fn consent_url(&self, redirect_uri: &str) -> Consent {
        let state = random_token();
        let verifier = random_token();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let url = format!(
            "{}/grant?app_id={}&redirect_uri={}&state={}&code_challenge={challenge}&code_challenge_method=S256",
            self.url,
            encode(&self.app_id),
            encode(redirect_uri),
            encode(&state),
        );
        Consent { url, state, verifier }
    }

    /// Step 2: trades the callback's `code` for the uid this app knows the user by.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, PresenceError> {
        let answer = self
            .post(
                "/v1/grants/token",
                json!({"code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}),
            )
            .await?;
        Ok(answer["uid"].as_str().unwrap_or_default().to_owned())
    }

    /// Step 4: a live notification to the user's devices. The answer says whether it was
    /// `delivered` (to how many devices), `queued` (until a device connects) or `not_delivered`.
    pub async fn notify(&self, uid: &str, title: &str, body: &str) -> Result<Value, PresenceError> {
        let path = format!("/v1/apps/{}/notifications", encode(&self.app_id));
        self.post(&path, json!({"uid": uid, "title": title, "body": body, "ttl": 300})).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, PresenceError> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .basic_auth(&self.app_id, Some(&self.secret))
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await?;
        answer(response).await
    }

    /// Step 3: follows the stream for ever, handing each batch to `on_batch`.
    ///
    /// The first connection asks for a snapshot; every later one resumes with `?since=` the
    /// last seq seen, so nothing is missed or repeated across reconnects. When the server says
    /// the cursor is too old (`410 resync_required`) it starts again from a snapshot.
    pub async fn follow(&self, mut on_batch: impl FnMut(Batch)) {
        let mut since: Option<u64> = None;
        let mut pause = Duration::from_secs(1);
        loop {
            match self.read_stream(&mut since, &mut on_batch).await {
                // Another consumer of this app's stream took over (one stream per app): leave
                // it be for a while rather than take the stream back and forth.
                Ok(Ended::Replaced) => pause = Duration::from_secs(30),
                Ok(Ended::Other) => pause = Duration::from_secs(1),
                Err(PresenceError::Refused { status: 410 | 400, code, .. }) => {
                    eprintln!("appmaker: stream {code}: starting again from a snapshot");
                    since = None;
                }
                Err(error) => {
                    pause = (pause * 2).min(Duration::from_secs(30));
                    eprintln!("appmaker: stream: {error}; again in {pause:?}");
                }
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// One connection of the stream, until it ends.
    async fn read_stream(
        &self,
        since: &mut Option<u64>,
        on_batch: &mut impl FnMut(Batch),
    ) -> Result<Ended, PresenceError> {
        let query = match since {
            Some(seq) => format!("format=v1&since={seq}"),
            None => "format=v1&snapshot=true".to_owned(),
        };
        let url = format!("{}/{}/presence.json?{query}", self.url, encode(&self.app_id));
        let response = self.http.get(url).basic_auth(&self.app_id, Some(&self.secret)).send().await?;
        if !response.status().is_success() {
            return answer(response).await.map(|_| Ended::Other);
        }
        let mut ended = Ended::Other;
        let mut snapshot = since.is_none();
        let mut bytes = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = bytes.next().await {
            pending.extend_from_slice(&chunk?);
            // Newline-delimited JSON: one array of objects per line, `[]` as a heartbeat.
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match serde_json::from_slice::<Value>(&line) {
                    Ok(Value::Array(entries)) => {
                        let changes: Vec<Change> = entries.iter().filter_map(change).collect();
                        if let Some(last) = changes.last() {
                            *since = Some(last.seq);
                        }
                        if snapshot {
                            snapshot = false;
                            on_batch(Batch::Snapshot(changes));
                        } else if !changes.is_empty() {
                            on_batch(Batch::Changes(changes));
                        }
                    }
                    // The server's last line says why it ends the stream, and where to resume.
                    Ok(closing) => {
                        eprintln!("appmaker: stream ended: {}", closing["error"].as_str().unwrap_or("?"));
                        if let Some(seq) = closing["resume_since"].as_u64() {
                            *since = Some(seq);
                        }
                        if closing["error"] == "replaced" {
                            ended = Ended::Replaced;
                        }
                    }
                    Err(_) => eprintln!("appmaker: stream: a line that is not JSON"),
                }
            }
        }
        Ok(ended)
    }
}

/// How a stream that Presence answered ended.
enum Ended {
    /// A newer stream for the same app replaced it.
    Replaced,
    /// The connection ended otherwise (shutdown, lagging, a network error's end of body).
    Other,
}

fn change(entry: &Value) -> Option<Change> {
    Some(Change {
        uid: entry["uid"].as_str()?.to_owned(),
        status: entry["status"].as_str()?.to_owned(),
        seq: entry["seq"].as_u64()?,
    })
}

/// How far a webhook's timestamp may be from the app's clock: older ones may be replays.
const WEBHOOK_TOLERANCE_SECS: i64 = 5 * 60;

/// Why a webhook was not taken as Presence's.
#[derive(Debug, PartialEq, Eq)]
pub enum WebhookRejected {
    /// A `webhook-*` header is missing or does not parse.
    Malformed,
    /// Its timestamp is more than five minutes from now.
    Stale,
    /// None of its signatures is this app's.
    BadSignature,
}

/// Step 5: whether a webhook comes from Presence, per Standard Webhooks: one of the
/// space-separated `v1,<base64>` signatures in `webhook-signature` (during a secret rotation
/// Presence sends two) is the HMAC-SHA256 of `id.timestamp.body` under the app's `whsec_`
/// secret, and `webhook-timestamp` is within five minutes of `now` (Unix seconds).
pub fn verify_webhook(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), WebhookRejected> {
    let key = secret.strip_prefix("whsec_").and_then(|key| STANDARD.decode(key).ok());
    let key = key.ok_or(WebhookRejected::Malformed)?;
    let sent: i64 = timestamp.trim().parse().map_err(|_| WebhookRejected::Malformed)?;
    if id.is_empty() || signatures.is_empty() {
        return Err(WebhookRejected::Malformed);
    }
    if (now - sent).abs() > WEBHOOK_TOLERANCE_SECS {
        return Err(WebhookRejected::Stale);
    }
    let mut mac = <Hmac<Sha256>>::new_from_slice(&key).map_err(|_| WebhookRejected::Malformed)?;
    mac.update(format!("{id}.{}.", timestamp.trim()).as_bytes());
    mac.update(body);
    let matches = signatures
        .split_whitespace()
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .filter_map(|signature| STANDARD.decode(signature).ok())
        // `verify_slice` compares in constant time.
        .any(|signature| mac.clone().verify_slice(&signature).is_ok());
    if matches {
        Ok(())
    } else {
        Err(WebhookRejected::BadSignature)
    }
}

/// The changes of a verified `v1` webhook body (`{"type", "timestamp", "data": {"events"}}`);
/// `None` if it is not one.
pub fn webhook_batch(body: &[u8]) -> Option<Batch> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let changes: Vec<Change> = body["data"]["events"].as_array()?.iter().filter_map(change).collect();
    match body["type"].as_str()? {
        "presence.changed" => Some(Batch::Changes(changes)),
        "presence.resync" => Some(Batch::Snapshot(changes)),
        _ => None,
    }
}

async fn answer(response: reqwest::Response) -> Result<Value, PresenceError> {
    let status = response.status().as_u16();
    let body: Value = response.json().await?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    Err(PresenceError::Refused {
        status,
        code: body["code"].as_str().unwrap_or_default().to_owned(),
        detail: body["detail"].as_str().unwrap_or_default().to_owned(),
    })
}
