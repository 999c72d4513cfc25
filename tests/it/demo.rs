//! `presence demo` end to end: the real binary, and a real headless Chromium going through the
//! example app, Presence's sign-in and consent pages, and the app's live page.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test says so and passes,
//! unless `TEST_REQUIRE_BROWSER=1` (see `support::browser`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, Locator};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::support::browser::{chromium, click, screenshot, wait_for, wait_for_url};
use crate::support::process::presence_command;

/// `presence demo` running, with every line it printed so far.
struct Demo {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    async fn start() -> Demo {
        let mut child = presence_command()
            .args(["demo", "--listen", "127.0.0.1:0", "--app-listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        Demo { child, lines }
    }

    /// The first line printed (waiting up to 60 s) that starts with `prefix`, without it.
    async fn line(&self, prefix: &str) -> String {
        for _ in 0..600 {
            let found =
                self.lines.lock().unwrap().iter().find_map(|l| l.strip_prefix(prefix).map(str::to_owned));
            if let Some(rest) = found {
                return rest;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the demo never printed {prefix:?}; it printed {:?}", self.lines.lock().unwrap());
    }
}

/// The `data-status` of the person named `name` on the live page.
async fn status_of(client: &Client, name: &str) -> String {
    let row = wait_for(client, &format!("li[data-name='{name}']")).await;
    row.attr("data-status").await.unwrap().unwrap_or_default()
}

#[tokio::test]
async fn the_demo_walks_a_browser_through_consent_to_live_statuses_and_a_delivered_notification() {
    let Some((_driver, client)) = chromium().await else { return };
    let demo = Demo::start().await;
    let sign_in = demo.line("demo: sign in to Presence as ").await;
    let (email, password) = sign_in.split_once(" with password ").expect("an email and a password");
    let presence = demo.line("demo: presence ").await;
    let site = demo.line("demo: open ").await;
    let site = site.trim_end_matches('/').to_owned();

    // The app's home page says how to sign in; connecting leads to Presence's sign-in page.
    client.goto(&format!("{site}/")).await.unwrap();
    let welcome = wait_for(&client, "#welcome").await.text().await.unwrap();
    assert!(welcome.contains(email) && welcome.contains(password), "{welcome}");
    screenshot(&client, "demo-home").await;
    click(&client, "#connect").await;
    wait_for_url(&client, &format!("{presence}/login")).await;
    wait_for(&client, "#email").await.send_keys(email).await.unwrap();
    client.find(Locator::Css("#password")).await.unwrap().send_keys(password).await.unwrap();
    click(&client, "#submit").await;

    // Don't allow: the app says access was denied, and offers to try again.
    wait_for_url(&client, &format!("{presence}/grant")).await;
    assert_eq!(wait_for(&client, "#app-name").await.text().await.unwrap(), "appmaker");
    click(&client, "#deny").await;
    wait_for_url(&client, &format!("{site}/callback")).await;
    assert_eq!(wait_for(&client, "#denied").await.text().await.unwrap(), "Access denied");
    screenshot(&client, "demo-denied").await;

    // Allow this time (already signed in): the live page lists everyone the app may see.
    click(&client, "#retry").await;
    click(&client, "#connect").await;
    wait_for_url(&client, &format!("{presence}/grant")).await;
    click(&client, "#allow").await;
    wait_for_url(&client, &format!("{site}/live")).await;
    for name in ["Bob", "Sarah", "Carol"] {
        wait_for(&client, &format!("li[data-name='{name}']")).await;
    }

    // Sarah's laptop changes status every few seconds; the change reaches the open page.
    let known = ["online", "away", "offline"];
    let mut first = String::new();
    let mut changed = None;
    for _ in 0..300 {
        let status = status_of(&client, "Sarah").await;
        if known.contains(&status.as_str()) {
            if first.is_empty() {
                first = status;
            } else if status != first {
                changed = Some(status);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(changed.is_some(), "Sarah's status stayed {first:?} on the live page");
    screenshot(&client, "demo-live").await;

    // The button sends Bob a live notification; his simulated phone receives it.
    click(&client, "li[data-name='Bob'] button.notify").await;
    let sent = wait_for(&client, "#sent[data-status]").await;
    assert_eq!(
        sent.attr("data-status").await.unwrap().as_deref(),
        Some("delivered"),
        "{:?}",
        sent.text().await
    );
    let received = demo.line("device bob-phone received notification ").await;
    assert!(received.contains("from appmaker"), "{received}");
    screenshot(&client, "demo-notified").await;
    client.close().await.unwrap();
}

#[tokio::test]
async fn appmaker_asks_for_consent_with_state_and_pkce_refuses_callbacks_it_did_not_start_and_the_demo_stops_on_ctrl_c(
) {
    let mut demo = Demo::start().await;
    let presence = demo.line("demo: presence ").await;
    let site = demo.line("demo: open ").await.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // Connecting goes to Presence's consent page with a fresh state and an S256 challenge.
    let mut asked = Vec::new();
    for _ in 0..2 {
        let response = http.get(format!("{site}/connect?name=Dana")).send().await.unwrap();
        assert_eq!(response.status(), 303);
        let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(&format!("{presence}/grant?")), "{location}");
        let query: std::collections::HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(query["redirect_uri"], format!("{site}/callback"));
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["code_challenge"].len(), 43, "base64url of a SHA-256");
        assert!(query["state"].len() >= 32, "{:?}", query["state"]);
        asked.push((query["state"].clone(), query["code_challenge"].clone()));
    }
    assert_ne!(asked[0], asked[1], "each attempt has its own state and verifier");

    // A callback with a state appmaker never handed out is not taken, code or no code.
    for query in ["code=pc_forged&state=forged", "error=access_denied&state=forged", "code=pc_forged"] {
        let response = http.get(format!("{site}/callback?{query}")).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
    }

    // Don't allow brings the visitor back to a page that names them, escaped; a state works once.
    let response = http.get(format!("{site}/connect?name=%3Cb%3EDana%3C/b%3E")).send().await.unwrap();
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let state = location.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let denied = format!("{site}/callback?error=access_denied&state={state}");
    let response = http.get(&denied).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("Access denied") && body.contains("&lt;b&gt;Dana&lt;/b&gt;"), "{body}");
    assert!(!body.contains("<b>Dana"), "{body}");
    assert_eq!(http.get(&denied).send().await.unwrap().status(), 400, "a state is used once");

    // The live page's event stream starts with the users who connected earlier.
    let mut events = http.get(format!("{site}/events")).send().await.unwrap();
    let mut seen = String::new();
    while !(seen.contains("\"name\":\"Sarah\"") && seen.contains("\"name\":\"Carol\"")) {
        let chunk = tokio::time::timeout(Duration::from_secs(30), events.chunk()).await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open")));
    }

    // Ctrl-C stops everything, even with a live page still open.
    let pid = demo.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), demo.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    demo.line("demo: stopped").await;
}
