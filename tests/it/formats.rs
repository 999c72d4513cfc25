//! What apps receive in each form: the seed's pairs by default, versioned objects on the stream
//! with `?format=v1`, the Standard Webhooks envelope for apps with `webhook_format = "v1"`, and
//! webhook signatures across a secret rotation, checked with the `standardwebhooks` crate.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::apps::{chat_app_by_cli_in_format, kim_grants_chat_and_adds_a_phone, Kim};
use crate::support::service::rfc3339;
use crate::support::{
    delivering, grant, now, spawn_process, Browser, DataDir, Device, DeviceClient, Hit, Receiver,
    RegisteredApp, StreamClient, TestApp, User, REDIRECT,
};

/// A server, an app with a webhook in `format` (none: the default), a user who granted it and
/// her phone.
struct World {
    app: TestApp,
    receiver: Receiver,
    registered: RegisteredApp,
    developer: User,
    device: Device,
    uid: String,
}

async fn world(format: Option<&str>) -> World {
    let app = delivering().spawn().await;
    let receiver = Receiver::start().await;
    let developer = app.user("dev@example.com").await;
    let mut body = json!({"name": "Chat", "redirect_uris": [REDIRECT], "webhook_url": receiver.url});
    if let Some(format) = format {
        body["webhook_format"] = format.into();
    }
    let created = app.send_as(Method::POST, &developer.token, "/v1/apps", Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let registered = RegisteredApp {
        app_id: created["app_id"].as_str().unwrap().to_owned(),
        secret: created["secret"].as_str().unwrap().to_owned(),
        webhook_secret: created["webhook_secret"].as_str().unwrap().to_owned(),
    };
    let user = app.user("ann@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let (_, uid) = grant(&app.url(""), "ann@example.com", &registered).await;
    World { app, receiver, registered, developer, device, uid }
}

impl World {
    async fn connect_and_report(&self, status: &str) -> DeviceClient {
        let mut socket = self.app.connect_device(&self.device).await;
        assert_eq!(socket.status(status).await.unwrap()["status"], 200);
        socket
    }

    async fn open_stream(
        &self,
        query: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Option<StreamClient>, String) {
        StreamClient::open_at(&self.app.url(""), &self.registered, query, headers).await
    }

    /// Waits (up to 10 s) for an accepted webhook after the first `after` whose body satisfies
    /// `done`; returns it.
    async fn webhook_after(&self, after: usize, done: impl Fn(&Hit) -> bool) -> Hit {
        let hits = self
            .receiver
            .wait_until(Duration::from_secs(10), |hits| {
                hits.iter().skip(after).any(|h| h.answered == 200 && done(h))
            })
            .await;
        hits.into_iter().skip(after).find(|h| h.answered == 200 && done(h)).unwrap()
    }

    async fn my_app(&self) -> Value {
        let listed = self.app.get_as(&self.developer.token, "/v1/apps").await.json();
        listed["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["app_id"] == self.registered.app_id)
            .unwrap()
            .clone()
    }

    async fn rotate_webhook_secret(&self, body: Option<Value>) -> crate::support::Reply {
        let path = format!("/v1/apps/{}/webhook/secret", self.registered.app_id);
        self.app.send_as(Method::POST, &self.developer.token, &path, body).await
    }
}

/// The events of a v1 envelope whose type is `presence.changed`.
fn envelope_events(hit: &Hit) -> Vec<Value> {
    let body: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(body["type"], "presence.changed", "{body}");
    body["data"]["events"].as_array().cloned().unwrap_or_default()
}

fn says(uid: &str, status: &str) -> impl Fn(&Value) -> bool {
    let (uid, status) = (uid.to_owned(), status.to_owned());
    move |event| event["uid"] == uid.as_str() && event["status"] == status.as_str()
}

/// Whether an RFC 3339 time written by the service lies between the two Unix times.
fn within(time: &Value, from: i64, to: i64) -> bool {
    let time = time.as_str().unwrap();
    assert_eq!(time.len(), 20, "{time}");
    assert!(time.ends_with('Z'), "{time}");
    rfc3339(from).as_str() <= time && time <= rfc3339(to).as_str()
}

fn verifies(secret: &str, hit: &Hit) -> bool {
    standardwebhooks::Webhook::new(secret).unwrap().verify(&hit.body, &hit.headers).is_ok()
}

fn signatures(hit: &Hit) -> usize {
    hit.headers["webhook-signature"].to_str().unwrap().split(' ').count()
}

/// The next non-heartbeat line of a v1 stream, as objects.
async fn objects(stream: &mut StreamClient) -> Vec<Value> {
    loop {
        let line = stream.line().await.expect("the stream ended");
        let entries: Vec<Value> = serde_json::from_str(&line).unwrap();
        if !entries.is_empty() {
            return entries;
        }
    }
}

#[tokio::test]
async fn a_v1_stream_sends_objects_with_seq_and_time_and_resumes_after_a_seq() {
    let world = world(None).await;
    let started = now();
    let (status, stream, body) = world.open_stream("?format=v1", &[]).await;
    assert_eq!(status, 200, "{body}");
    let mut stream = stream.unwrap();
    let mut socket = world.connect_and_report("O").await;
    let online = objects(&mut stream).await;
    assert_eq!(online.len(), 1, "{online:?}");
    let online = &online[0];
    assert_eq!(online["uid"], world.uid.as_str());
    assert_eq!(online["status"], "online");
    assert!(within(&online["time"], started, now()), "{online}");
    let online_seq = online["seq"].as_u64().unwrap();
    socket.status("A").await.unwrap();
    let away = objects(&mut stream).await;
    assert_eq!((away[0]["status"].as_str(), away[0]["seq"].as_u64()), (Some("away"), Some(online_seq + 1)));
    drop(stream);

    // Resuming after the online event gives the away one again, in both transports.
    let (_, stream, _) = world.open_stream(&format!("?format=v1&since={online_seq}"), &[]).await;
    let resumed = objects(&mut stream.unwrap()).await;
    assert_eq!(resumed, away);
    let last_event_id = online_seq.to_string();
    let headers = [("accept", "text/event-stream"), ("last-event-id", last_event_id.as_str())];
    let (_, stream, _) = world.open_stream("?format=v1", &headers).await;
    let mut stream = stream.unwrap();
    let data = loop {
        let line = stream.line().await.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            break data.to_owned();
        }
    };
    assert_eq!(serde_json::from_str::<Vec<Value>>(&data).unwrap(), away);

    // The default is still the seed's pairs with the seq.
    let (_, stream, _) = world.open_stream(&format!("?since={online_seq}"), &[]).await;
    let entries = stream.unwrap().entries().await;
    assert_eq!(entries, vec![(world.uid.clone(), "away".to_owned(), online_seq + 1)]);
}

#[tokio::test]
async fn an_unknown_stream_format_is_refused_with_a_reason() {
    let world = world(None).await;
    let (status, stream, body) = world.open_stream("?format=v2", &[]).await;
    assert!(stream.is_none());
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "invalid_format");
    assert!(body["detail"].as_str().unwrap().contains("v1"), "{body}");
}

#[tokio::test]
async fn a_v1_app_gets_the_standard_webhooks_envelope() {
    let world = world(Some("v1")).await;
    assert_eq!(world.my_app().await["webhook_format"], "v1");
    let started = now();
    let _socket = world.connect_and_report("O").await;
    let hit = world.webhook_after(0, |hit| envelope_events(hit).iter().any(says(&world.uid, "online"))).await;
    assert!(verifies(&world.registered.webhook_secret, &hit), "the signature verifies");
    assert!(!verifies("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &hit));
    let body: Value = serde_json::from_slice(&hit.body).unwrap();
    assert!(within(&body["timestamp"], started, now()), "{body}");
    let events = envelope_events(&hit);
    let mine: Vec<&Value> = events.iter().filter(|e| e["uid"] == world.uid.as_str()).collect();
    assert_eq!(mine.len(), 1, "the latest per user: {events:?}");
    assert!(mine[0]["seq"].as_u64().unwrap() >= 2, "{events:?}");
    assert!(within(&mine[0]["time"], started, now()), "{events:?}");
}

#[tokio::test]
async fn webhooks_are_pairs_by_default_until_the_developer_switches_to_v1() {
    let world = world(None).await;
    assert_eq!(world.my_app().await["webhook_format"], "pairs");
    let mut socket = world.connect_and_report("O").await;
    let online = world.uid.clone();
    let hit = world.webhook_after(0, |hit| hit.pairs().contains(&(online.clone(), "online".into()))).await;
    assert!(verifies(&world.registered.webhook_secret, &hit));

    let path = format!("/v1/apps/{}", world.registered.app_id);
    let refused = world
        .app
        .send_as(Method::PATCH, &world.developer.token, &path, Some(json!({"webhook_format": "xml"})))
        .await;
    assert_eq!((refused.status, refused.json()["code"].as_str()), (400, Some("invalid_webhook_format")));
    let patched = world
        .app
        .send_as(Method::PATCH, &world.developer.token, &path, Some(json!({"webhook_format": "v1"})))
        .await;
    assert_eq!(patched.json()["webhook_format"], "v1", "{}", patched.body);
    let before = world.receiver.hits().len();
    socket.status("A").await.unwrap();
    let hit =
        world.webhook_after(before, |hit| envelope_events(hit).iter().any(says(&world.uid, "away"))).await;
    assert!(verifies(&world.registered.webhook_secret, &hit));
}

#[tokio::test]
async fn during_a_rotation_overlap_deliveries_verify_under_the_old_and_the_new_secret() {
    let world = world(Some("v1")).await;
    let rotated = world.rotate_webhook_secret(None).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let rotated = rotated.json();
    let new_secret = rotated["webhook_secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_"));
    assert_ne!(new_secret, world.registered.webhook_secret);
    // The default overlap is a day.
    let day = 24 * 3600;
    assert!(within(&rotated["previous_valid_until"], now() + day - 60, now() + day), "{rotated}");

    let _socket = world.connect_and_report("O").await;
    let hit = world.webhook_after(0, |hit| envelope_events(hit).iter().any(says(&world.uid, "online"))).await;
    assert_eq!(signatures(&hit), 2, "{:?}", hit.headers["webhook-signature"]);
    assert!(verifies(&new_secret, &hit), "under the new secret");
    assert!(verifies(&world.registered.webhook_secret, &hit), "under the old secret");
    assert!(!verifies("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &hit));
}

#[tokio::test]
async fn a_rotation_without_overlap_ends_the_old_secret_at_once() {
    let world = world(None).await;
    let too_long = world.rotate_webhook_secret(Some(json!({"overlap_seconds": 8 * 24 * 3600}))).await;
    assert_eq!((too_long.status, too_long.json()["code"].as_str()), (400, Some("invalid_overlap")));
    let started = now();
    let rotated = world.rotate_webhook_secret(Some(json!({"overlap_seconds": 0}))).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let rotated = rotated.json();
    assert!(within(&rotated["previous_valid_until"], started, now()), "{rotated}");
    let new_secret = rotated["webhook_secret"].as_str().unwrap().to_owned();

    let _socket = world.connect_and_report("O").await;
    let online = world.uid.clone();
    let hit = world.webhook_after(0, |hit| hit.pairs().contains(&(online.clone(), "online".into()))).await;
    assert_eq!(signatures(&hit), 1);
    assert!(verifies(&new_secret, &hit), "under the new secret");
    assert!(!verifies(&world.registered.webhook_secret, &hit), "not under the old one");
}

#[tokio::test]
async fn the_developers_page_rotates_the_webhook_secret_showing_the_new_one_once() {
    let world = world(None).await;
    let mut dev = Browser::new(&world.app);
    dev.sign_in("dev@example.com").await;
    let action = format!("/developers/apps/{}/webhook/secret", world.registered.app_id);
    let page = dev.get("/developers").await;
    assert!(page.body.contains(&format!("action=\"{action}\"")), "a button to rotate it");
    assert!(page.body.contains("<code>pairs</code>"), "the webhook's body format");
    let rotated = dev.post(&action, &[]).await;
    assert_eq!(rotated.status, 303);
    let shown = dev.get("/developers").await;
    let start = shown.body.find("<code>whsec_").expect("the new secret is shown") + "<code>".len();
    let new_secret = &shown.body[start..start + shown.body[start..].find('<').unwrap()];
    assert_ne!(new_secret, world.registered.webhook_secret);
    assert!(!dev.get("/developers").await.body.contains(new_secret), "and only once");

    let _socket = world.connect_and_report("O").await;
    let online = world.uid.clone();
    let hit = world.webhook_after(0, |hit| hit.pairs().contains(&(online.clone(), "online".into()))).await;
    assert!(verifies(new_secret, &hit), "under the new secret");
    assert!(verifies(&world.registered.webhook_secret, &hit), "and for a day under the old one");

    // The registration form sets the format too.
    let fields = [("name", "Board"), ("redirect_uris", REDIRECT), ("webhook_format", "v1")];
    assert_eq!(dev.post("/developers/apps", &fields).await.status, 303);
    assert!(dev.get("/developers").await.body.contains("<code>v1</code>"));
}

#[tokio::test]
async fn an_app_created_on_the_command_line_in_v1_gets_envelopes() {
    let data = DataDir::new();
    let receiver = Receiver::start().await;
    let registered = chat_app_by_cli_in_format(&data.path, &receiver.url, "v1").await;
    let flags =
        ["--webhook-allow", "127.0.0.0/8", "--webhook-batch-interval", "1s", "--presence-grace", "0s"];
    let server = spawn_process(&data.path, &flags).await;
    let Kim { uid, phone, .. } = kim_grants_chat_and_adds_a_phone(&server.base(), &registered).await;
    let mut socket = server.connect().await;
    assert_eq!(socket.hello_presence(None, &phone.prid).await.unwrap()["status"], 200);
    assert_eq!(socket.status("O").await.unwrap()["status"], 200);
    let hits = receiver
        .wait_until(Duration::from_secs(10), |hits| {
            hits.iter().any(|hit| envelope_events(hit).iter().any(says(&uid, "online")))
        })
        .await;
    assert!(hits.iter().all(|hit| verifies(&registered.webhook_secret, hit)));
}
