//! appmaker's side of Presence, over HTTP only, as any third-party app would talk to it:
//!
//! 1. send the user to the consent page with a `state` and a PKCE challenge (`consent_url`);
//! 2. trade the code Presence redirects back with for the user's uid (`exchange_code`);
//! 3. follow the app's stream of presence updates, resuming after the last seq seen (`follow`);
//! 4. send a user a live notification (`notify`).
//!
//! The app authenticates with HTTP Basic `app_id:secret`. Every Presence error is JSON
//! `{"code", "detail"}`.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::StreamExt as _;
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

/// What the stream said.
pub enum Batch {
    /// Everyone the app may see now (the first batch of a `?snapshot=true` stream).
    Snapshot(Vec<Change>),
    /// Changes since the last batch, in order.
    Changes(Vec<Change>),
}

/// `[uid, status, seq]` from the stream: status is online, away, offline or revoked.
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
            Some(seq) => format!("since={seq}"),
            None => "snapshot=true".to_owned(),
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
            // Newline-delimited JSON: one array per line, `[]` as a heartbeat.
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
        uid: entry[0].as_str()?.to_owned(),
        status: entry[1].as_str()?.to_owned(),
        seq: entry[2].as_u64()?,
    })
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
