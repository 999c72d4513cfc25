//! Plain HTTP as users and operators use it, against any server (`base` is `http://host:port`):
//! replies, signing in, registering devices, reading status and metrics.

use super::service::AccountId;

/// The HTTP status and body of a response.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not json: {}", self.body))
    }
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    Reply { status, body: response.text().await.unwrap() }
}

/// `PUT <endpoint>` with a form body and no Content-Type, as many AppServers send it.
pub async fn put(http: &reqwest::Client, endpoint: &str, body: &str) -> Reply {
    reply(http.put(endpoint).body(body.to_owned()).send().await.unwrap()).await
}

/// The password of every test account.
pub const PASSWORD: &str = "password123";

/// A signed-in user of a test server.
pub struct User {
    pub token: String,
    pub account: AccountId,
}

/// A registered presence device.
pub struct Device {
    pub device_id: String,
    pub prid: String,
}

/// Signs in to the server at `base` and returns the bearer token.
pub async fn sign_in(base: &str, email: &str) -> String {
    let reply = reply(
        reqwest::Client::new()
            .post(format!("{base}/v1/tokens"))
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.json()["token"].as_str().unwrap().to_owned()
}

/// Registers a device for the token's account on the server at `base`.
pub async fn register_device_at(base: &str, token: &str, name: &str) -> Device {
    let reply = reply(
        reqwest::Client::new()
            .post(format!("{base}/v1/devices"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let body = reply.json();
    Device {
        device_id: body["device_id"].as_str().unwrap().to_owned(),
        prid: body["prid"].as_str().unwrap().to_owned(),
    }
}

/// The token's user's status as `GET /v1/me` on the server at `base` tells it.
pub async fn status_at(base: &str, token: &str) -> String {
    let me =
        reply(reqwest::Client::new().get(format!("{base}/v1/me")).bearer_auth(token).send().await.unwrap())
            .await;
    assert_eq!(me.status, 200, "{}", me.body);
    me.json()["status"].as_str().unwrap().to_owned()
}

/// A figure from the text of `/metrics`.
pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

/// A figure from `/metrics` of the server at `base`.
pub async fn metric_at(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    metric_in(&text, name)
}
