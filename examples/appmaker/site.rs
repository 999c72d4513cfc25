//! appmaker's web site: a sign-in-free page where a visitor connects their Presence, and a live
//! page of everyone who did, their status pushed to the browser with Server-Sent Events, and a
//! button that sends one of them a live notification.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the home page, with the "Connect with Presence" form |
//! | `GET /connect?name=` | remembers the attempt under a fresh `state`, redirects to Presence's consent page |
//! | `GET /callback` | Presence sends the user back here: `?code=&state=` (allowed) or `?error=access_denied&state=` |
//! | `GET /live` | the live page (plain HTML and `/live.js`) |
//! | `GET /events` | SSE: everyone the app may see, then each change |
//! | `POST /notify {uid}` | sends that user a live notification through Presence |
//! | `POST /webhook` | Presence's webhooks (`webhook_format = v1`): checked, then fed to the live page |
//!
//! The stream and the webhook may both say the same change, in either order: each user's last
//! seq is kept, and a change at or before it is ignored.
//!
//! Everything is kept in memory: this is an example, not a product.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::presence_client::{verify_webhook, webhook_batch, Batch, Change, Presence};

/// How the site is set up.
pub struct Settings {
    pub presence: Presence,
    /// Where browsers reach this site (`http://127.0.0.1:8081`); the redirect URI registered
    /// with Presence is this plus `/callback`.
    pub public_url: String,
    /// A sentence for the home page (the demo says which Presence account to sign in with).
    pub welcome: Option<String>,
    /// The name the form suggests.
    pub default_name: String,
    /// The app's webhook signing secret (`whsec_…`), if Presence sends it webhooks; without
    /// one, `/webhook` answers 404.
    pub webhook_secret: Option<String>,
}

/// Someone who connected their Presence to appmaker.
#[derive(Clone, Serialize)]
struct Person {
    uid: String,
    name: String,
    /// online, away, offline, or unknown until the stream says; revoked when they took it back.
    status: String,
}

/// A consent asked for and not answered yet.
struct Attempt {
    name: String,
    verifier: String,
    started: Instant,
}

const ATTEMPT_TTL: Duration = Duration::from_secs(600);
/// Unanswered attempts kept at most, so that following `/connect` in a loop cannot fill memory.
const MAX_ATTEMPTS: usize = 10_000;

struct Site {
    settings: Settings,
    redirect_uri: String,
    attempts: Mutex<HashMap<String, Attempt>>,
    people: Mutex<Vec<Person>>,
    /// The seq of the last change applied per uid (kept after a revocation too).
    seqs: Mutex<HashMap<String, u64>>,
    /// Each change of a person, for the live pages open now.
    changes: broadcast::Sender<Person>,
    /// Becomes true on shutdown, ending the live pages' event streams (which never end alone).
    closing: watch::Sender<bool>,
}

type Shared = Arc<Site>;

impl Site {
    /// Records what Presence or a callback said about a user and tells the live pages.
    fn update(&self, uid: &str, name: Option<&str>, status: Option<&str>) {
        let person = {
            let mut people = self.people.lock().expect("people lock");
            let index = match people.iter().position(|p| p.uid == uid) {
                Some(index) => index,
                None => {
                    // Someone the app may see but has no name for (the site forgot on a restart).
                    let name = format!("someone ({})", uid.chars().take(10).collect::<String>());
                    people.push(Person { uid: uid.to_owned(), name, status: "unknown".to_owned() });
                    people.len() - 1
                }
            };
            let person = &mut people[index];
            if let Some(name) = name {
                person.name = name.to_owned();
            }
            if let Some(status) = status {
                person.status = status.to_owned();
            }
            let person = person.clone();
            if person.status == "revoked" {
                people.remove(index);
            }
            person
        };
        let _ = self.changes.send(person);
    }

    /// Whether a change is newer than what was applied for its user; notes it if so.
    fn is_news(&self, change: &Change) -> bool {
        let mut seqs = self.seqs.lock().expect("seqs lock");
        let last = seqs.entry(change.uid.clone()).or_insert(0);
        if change.seq <= *last {
            return false;
        }
        *last = change.seq;
        true
    }

    fn apply(&self, batch: Batch) {
        match batch {
            Batch::Snapshot(entries) => {
                // Whoever the snapshot leaves out may no longer be seen.
                let gone: Vec<String> = {
                    let people = self.people.lock().expect("people lock");
                    people
                        .iter()
                        .filter(|p| !entries.iter().any(|e| e.uid == p.uid))
                        .map(|p| p.uid.clone())
                        .collect()
                };
                for uid in gone {
                    self.update(&uid, None, Some("revoked"));
                }
                for entry in entries.iter().filter(|e| self.is_news(e)) {
                    self.update(&entry.uid, None, Some(&entry.status));
                }
            }
            Batch::Changes(entries) => {
                for entry in entries.iter().filter(|e| self.is_news(e)) {
                    self.update(&entry.uid, None, Some(&entry.status));
                }
            }
        }
    }
}

/// Serves the site on `listener` and follows the Presence stream, until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let redirect_uri = format!("{}/callback", settings.public_url.trim_end_matches('/'));
    let site = Arc::new(Site {
        settings,
        redirect_uri,
        attempts: Mutex::default(),
        people: Mutex::default(),
        seqs: Mutex::default(),
        changes: broadcast::channel(256).0,
        closing: watch::channel(false).0,
    });
    let following = site.clone();
    let stream = tokio::spawn(async move {
        let presence = following.settings.presence.clone();
        presence.follow(|batch| following.apply(batch)).await;
    });
    let closing = site.clone();
    let shutdown = async move {
        shutdown.await;
        closing.closing.send_replace(true);
    };
    let router = Router::new()
        .route("/", get(home))
        .route("/connect", get(connect))
        .route("/callback", get(callback))
        .route("/live", get(live))
        .route("/live.js", get(live_js))
        .route("/events", get(events))
        .route("/notify", post(notify))
        .route("/webhook", post(webhook))
        .with_state(site);
    let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
    stream.abort();
    served
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · appmaker</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        title = escape(title)
    ))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}\
main{max-width:40rem;margin:2rem auto;padding:0 1rem}\
.hint{background:#fff7d6;border:1px solid #e8d27a;padding:.75rem 1rem;border-radius:.5rem}\
button,.button{font:inherit;padding:.5rem 1rem;border-radius:.4rem;border:1px solid #2456c7;background:#2f6fed;color:#fff;cursor:pointer;text-decoration:none}\
input{font:inherit;padding:.45rem;margin:0 .5rem}\
ul{list-style:none;padding:0}li{display:flex;gap:1rem;align-items:center;background:#fff;margin:.5rem 0;padding:.75rem 1rem;border-radius:.5rem}\
.name{flex:1;font-weight:600}.status{min-width:5rem}\
li[data-status=online] .status{color:#137333}li[data-status=away] .status{color:#b06000}li[data-status=offline] .status{color:#5f6368}";

async fn home(State(site): State<Shared>) -> Html<String> {
    let welcome = site
        .settings
        .welcome
        .as_deref()
        .map(|w| format!("<p class=\"hint\" id=\"welcome\">{}</p>", escape(w)));
    page(
        "appmaker",
        &format!(
            "<h1>appmaker</h1><p>See which of your friends can be reached right now, and ping them.</p>{}\
             <form action=\"/connect\" method=\"get\"><label for=\"name\">Your name</label>\
             <input id=\"name\" name=\"name\" required maxlength=\"40\" value=\"{}\">\
             <button id=\"connect\">Connect with Presence</button></form>\
             <p><a href=\"/live\">Who can be reached now</a></p>",
            welcome.unwrap_or_default(),
            escape(&site.settings.default_name)
        ),
    )
}

#[derive(Deserialize)]
struct ConnectQuery {
    #[serde(default)]
    name: String,
}

/// Sends the visitor to Presence's consent page, keeping the PKCE verifier on the server.
async fn connect(State(site): State<Shared>, Query(query): Query<ConnectQuery>) -> Response {
    let name: String = query.name.trim().chars().take(40).collect();
    let name = if name.is_empty() { "a visitor".to_owned() } else { name };
    let consent = site.settings.presence.consent_url(&site.redirect_uri);
    let mut attempts = site.attempts.lock().expect("attempts lock");
    attempts.retain(|_, attempt| attempt.started.elapsed() < ATTEMPT_TTL);
    if attempts.len() >= MAX_ATTEMPTS {
        let body = "<h1>Too many people are connecting right now</h1><p><a href=\"/\">Try again</a> in a minute.</p>";
        return (StatusCode::SERVICE_UNAVAILABLE, page("Busy", body)).into_response();
    }
    attempts.insert(consent.state, Attempt { name, verifier: consent.verifier, started: Instant::now() });
    Redirect::to(&consent.url).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(State(site): State<Shared>, Query(query): Query<CallbackQuery>) -> Response {
    // Only a state this site handed out counts, once: anything else is not an answer to us.
    let attempt =
        query.state.as_deref().and_then(|state| site.attempts.lock().expect("attempts lock").remove(state));
    let Some(attempt) = attempt.filter(|a| a.started.elapsed() < ATTEMPT_TTL) else {
        let body = "<h1>That link has expired</h1><p><a href=\"/\">Start again</a></p>";
        return (StatusCode::BAD_REQUEST, page("Expired", body)).into_response();
    };
    let Some(code) = query.code else {
        let reason = query.error.as_deref().unwrap_or("no code");
        let body = format!(
            "<h1 id=\"denied\">Access denied</h1><p>{}, you chose not to share your Presence with appmaker \
             ({}). Nothing was shared.</p><p><a class=\"button\" id=\"retry\" href=\"/\">Try again</a></p>",
            escape(&attempt.name),
            escape(reason)
        );
        return page("Access denied", &body).into_response();
    };
    match site.settings.presence.exchange_code(&code, &site.redirect_uri, &attempt.verifier).await {
        Ok(uid) => {
            site.update(&uid, Some(&attempt.name), None);
            Redirect::to("/live").into_response()
        }
        Err(error) => {
            eprintln!("appmaker: code exchange failed: {error}");
            let body = "<h1>Presence did not confirm</h1><p><a href=\"/\">Try again</a></p>";
            (StatusCode::BAD_GATEWAY, page("Not connected", body)).into_response()
        }
    }
}

async fn live() -> Html<String> {
    page(
        "Who can be reached",
        "<h1>Who can be reached</h1><p id=\"connection\">Connecting…</p><ul id=\"people\"></ul>\
         <p id=\"sent\" role=\"status\" aria-live=\"polite\"></p><p><a href=\"/\">Connect someone else</a></p>\
         <script src=\"/live.js\"></script>",
    )
}

async fn live_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("live.js"))
}

/// Everyone the app may see now, then each change as it comes, as SSE `data: {uid,name,status}`.
async fn events(
    State(site): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before reading the list, so no change falls in between.
    let changes = site.changes.subscribe();
    let mut closing = site.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    let now: Vec<Person> = site.people.lock().expect("people lock").clone();
    let first = futures_util::stream::iter(now.into_iter().map(|person| Ok(to_event(&person))));
    let rest = futures_util::stream::unfold(changes, |mut changes| async move {
        loop {
            match changes.recv().await {
                Ok(person) => return Some((Ok(to_event(&person)), changes)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let events = futures_util::StreamExt::take_until(futures_util::StreamExt::chain(first, rest), closed);
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn to_event(person: &Person) -> Event {
    Event::default().data(serde_json::to_string(person).unwrap_or_default())
}

#[derive(Deserialize)]
struct NotifyRequest {
    uid: String,
}

/// Asks Presence to notify the user. Taking JSON only keeps other sites' forms from posting here.
async fn notify(State(site): State<Shared>, Json(request): Json<NotifyRequest>) -> Response {
    let name = site
        .people
        .lock()
        .expect("people lock")
        .iter()
        .find(|p| p.uid == request.uid)
        .map(|p| p.name.clone());
    let Some(name) = name else {
        return (StatusCode::NOT_FOUND, Json(json!({"status": "unknown person"}))).into_response();
    };
    let title = format!("{name}, someone on appmaker is thinking of you");
    match site.settings.presence.notify(&request.uid, &title, "Sent from appmaker's live page").await {
        Ok(answer) => Json(json!({
            "name": name,
            "status": answer["status"],
            "delivered_to": answer["delivered_to"],
        }))
        .into_response(),
        Err(error) => {
            eprintln!("appmaker: notification failed: {error}");
            (
                StatusCode::BAD_GATEWAY,
                Json(json!({"name": name, "status": "failed", "detail": error.to_string()})),
            )
                .into_response()
        }
    }
}

/// Presence's webhook: taken only with a valid signature under the app's webhook secret and a
/// fresh timestamp (401 otherwise), then applied like a stream batch.
async fn webhook(State(site): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(secret) = site.settings.webhook_secret.as_deref() else {
        return StatusCode::NOT_FOUND;
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let checked = verify_webhook(
        secret,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        now,
    );
    if let Err(why) = checked {
        eprintln!("appmaker: webhook refused: {why:?}");
        return StatusCode::UNAUTHORIZED;
    }
    match webhook_batch(&body) {
        Some(batch) => {
            site.apply(batch);
            StatusCode::NO_CONTENT
        }
        None => {
            eprintln!("appmaker: a webhook that is not a v1 envelope (set webhook_format = v1)");
            StatusCode::BAD_REQUEST
        }
    }
}
