//! Browsers: `Browser`, a browser without JavaScript over plain HTTP (keeps cookies, follows no
//! redirects, adds the CSRF token of the last page it was shown to forms), and `chromium()`, a real headless Chromium driven
//! through chromedriver, with the few steps the tests take in it.
//!
//! Chromium needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without
//! them `chromium()` says so and gives `None`, unless `TEST_REQUIRE_BROWSER=1` (CI sets it),
//! where a missing browser fails the test. Screenshots land in `target/screenshots/`.

use std::collections::HashMap;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::app::TestApp;
use super::http::PASSWORD;

/// A browser without JavaScript: keeps cookies, follows no redirects.
pub struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    base: String,
    /// The CSRF token of the last page that had a form, and the session and pre-session
    /// cookies it was shown with (a token is bound to them).
    csrf: Option<(String, String)>,
}

/// The session and pre-session cookies, under either name.
fn binding(cookies: &HashMap<String, String>) -> String {
    ["presence_session", "__Host-presence_session", "presence_csrf", "__Host-presence_csrf"]
        .iter()
        .map(|name| cookies.get(*name).cloned().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(";")
}

/// The value of the first `csrf` form field of a page.
pub fn csrf_of(body: &str) -> Option<String> {
    let start = body.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    let token = &body[start..start + body[start..].find('"')?];
    (!token.is_empty()).then(|| token.to_owned())
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        Browser::at(&app.url(""))
    }

    /// A browser for the server at `base` (`http://host:port`).
    pub fn at(base: &str) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, cookies: HashMap::new(), base: base.to_owned(), csrf: None }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        // As browsers do: pages are asked for as HTML.
        let request = request.header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        let response = request.header("cookie", self.cookie_header()).send().await.unwrap();
        for value in response.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let location = headers.get("location").map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        if let Some(token) = csrf_of(&body) {
            self.csrf = Some((token, binding(&self.cookies)));
        }
        Page { status, location, body, headers }
    }

    /// The CSRF token for this browser's cookies: the last page's, or, when the browser signed
    /// in or out since, that of a page fetched now (as the user would reload it).
    pub async fn csrf(&mut self) -> String {
        let current = binding(&self.cookies);
        if let Some((token, shown_with)) = &self.csrf {
            if *shown_with == current {
                return token.clone();
            }
        }
        let signed_in =
            ["presence_session", "__Host-presence_session"].iter().any(|c| self.cookies.contains_key(*c));
        self.get(if signed_in { "/settings" } else { "/login" }).await;
        self.csrf.as_ref().map(|(token, _)| token.clone()).unwrap_or_default()
    }

    /// Sets a cookie as another site (or an attacker on the network) might plant it.
    pub fn plant_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.to_owned(), value.to_owned());
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// Submits a form with this browser's CSRF token added.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf().await;
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf", &csrf));
        let request = self.http.post(format!("{}{path}", self.base)).form(&form);
        self.send(request).await
    }

    pub async fn post_without_csrf(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(fields);
        self.send(request).await
    }

    pub async fn sign_in(&mut self, email: &str) {
        self.get("/login").await;
        let page =
            self.post("/login", &[("email", email), ("password", PASSWORD), ("next", "/settings")]).await;
        assert_eq!(page.status, 303);
        assert_eq!(page.location.as_deref(), Some("/settings"), "signed in");
    }
}

/// chromedriver, running; stopped when dropped.
pub struct Driver {
    process: tokio::process::Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
    }
}

fn find(names: &[&str]) -> Option<std::path::PathBuf> {
    names.iter().map(std::path::PathBuf::from).find(|p| p.exists())
}

/// Starts chromedriver and a headless Chromium session; `None` when they are not installed.
pub async fn chromium() -> Option<(Driver, Client)> {
    chromium_with(&[]).await
}

/// As `chromium()`, with more command-line switches for Chromium (`--force-dark-mode`).
pub async fn chromium_with(switches: &[&str]) -> Option<(Driver, Client)> {
    let required = std::env::var("TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(driver), Some(chromium)) =
        (find(&["/usr/bin/chromedriver"]), find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]))
    else {
        assert!(!required, "TEST_REQUIRE_BROWSER=1 but chromium or chromedriver is not installed");
        eprintln!("browser test skipped: install chromium and chromium-driver to run it");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let process = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { process, url, _profile: profile };
    let mut args = json!([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1000",
        format!("--user-data-dir={}", driver._profile.path().display()),
    ]);
    args.as_array_mut().unwrap().extend(switches.iter().map(|s| json!(s)));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".to_owned(), json!({ "binary": chromium, "args": args }));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return Some((driver, client)),
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("cannot start a browser session: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Saves what the browser shows as `target/screenshots/<name>.png`.
pub async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Clicks the element that `selector` finds.
pub async fn click(client: &Client, selector: &str) {
    client
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Waits (up to 10 s) for an element that only the next page has.
pub async fn wait_for(client: &Client, selector: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector} never appeared: {e}"))
}

pub async fn wait_for_url(client: &Client, prefix: &str) -> url::Url {
    for _ in 0..100 {
        let url = client.current_url().await.unwrap();
        if url.as_str().starts_with(prefix) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never reached {prefix}: at {}", client.current_url().await.unwrap());
}
