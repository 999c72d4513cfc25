//! Accessibility: axe-core checks every page a person sees, in the real Chromium, against the
//! WCAG 2.0 and 2.1 A and AA rules, in the light colour scheme and (a subset) in the dark one.
//!
//! axe-core comes from npm, pinned by `tests/a11y/package-lock.json`; `.ci/run` installs it
//! with `npm ci --prefix tests/a11y`. Without it (or without Chromium) the test says so and
//! passes, unless `TEST_REQUIRE_BROWSER=1` (CI sets it), where it fails.

use fantoccini::Client;
use serde_json::{json, Value};

use std::time::Duration;

use crate::support::apps::register_app;
use crate::support::browser::{chromium, chromium_with, click, wait_for, wait_for_url};
use crate::support::{builder, register_app_with_webhook, spawn_app, urlencode, Answer, Receiver, REDIRECT};

/// The rule sets the pages must pass: WCAG 2.0 and 2.1, levels A and AA.
const TAGS: [&str; 4] = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/// axe-core's script, or `None` (with a note) when `npm ci` has not installed it.
fn axe_source() -> Option<String> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/a11y/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(error) => {
            let required = std::env::var("TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
            assert!(!required, "TEST_REQUIRE_BROWSER=1 but {} cannot be read: {error}", path.display());
            eprintln!(
                "accessibility test skipped: run `npm ci --prefix tests/a11y` to install axe-core ({})",
                path.display()
            );
            None
        }
    }
}

/// Injects axe-core into the page the browser shows, runs it, and gives one line per violation
/// (rule id, impact, what it asks, and each failing node's selector and why).
async fn violations(client: &Client, axe: &str) -> Vec<String> {
    client.execute(axe, vec![]).await.expect("axe-core loads");
    let script = r#"
        const done = arguments[arguments.length - 1];
        axe.run(document, { runOnly: { type: 'tag', values: arguments[0] }, resultTypes: ['violations'] })
          .then(result => done(result.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => ({ target: n.target.join(' '), why: n.failureSummary })),
          }))))
          .catch(error => done({ error: String(error) }));
    "#;
    let found = client.execute_async(script, vec![json!(TAGS)]).await.expect("axe.run answers");
    let Value::Array(found) = found else { panic!("axe.run failed: {found}") };
    found
        .iter()
        .map(|v| {
            let nodes = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    let why = n["why"].as_str().unwrap_or_default().replace('\n', " ");
                    format!("\n    {}: {why}", n["target"].as_str().unwrap_or_default())
                })
                .collect::<String>();
            format!(
                "{} ({}): {}{nodes}",
                v["id"].as_str().unwrap(),
                v["impact"].as_str().unwrap_or("?"),
                v["help"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Checks the page the browser shows; failures are gathered so one run reports every page.
async fn check(client: &Client, axe: &str, name: &str, failures: &mut Vec<String>) {
    let url = client.current_url().await.unwrap();
    let found = violations(client, axe).await;
    eprintln!("axe: {name} ({url}): {} violation(s)", found.len());
    failures.extend(found.into_iter().map(|v| format!("{name} ({}): {v}", url.path())));
}

#[tokio::test]
async fn every_page_a_person_sees_passes_the_wcag_aa_checks() {
    let Some(axe) = axe_source() else { return };
    let Some((_driver, client)) = chromium().await else { return };
    // Chat's webhook fails, so the developers' page lists a failed delivery with its button.
    let receiver = Receiver::start().await;
    receiver.answer_always(Answer { status: 503, retry_after: Some(3600), delay: Duration::ZERO });
    let app = builder().set("webhook_allow", "127.0.0.0/8").set("webhook_batch_interval", "1s").spawn().await;
    let presence = app.url("");
    let developer = app.user("dev@example.com").await;
    let chat = register_app_with_webhook(&app, &developer, "Chat", Some(&receiver.url)).await;
    let mia = app.user("mia@example.com").await;
    app.register_device(&mia, "Laptop").await;
    let mut failures = Vec::new();

    // Signed out: the landing page, sign-up, sign-in.
    client.goto(&format!("{presence}/")).await.unwrap();
    wait_for(&client, "#landing").await;
    check(&client, &axe, "landing", &mut failures).await;
    client.goto(&format!("{presence}/signup")).await.unwrap();
    wait_for(&client, "#email").await;
    check(&client, &axe, "signup", &mut failures).await;
    client.goto(&format!("{presence}/login")).await.unwrap();
    wait_for(&client, "#email").await;
    check(&client, &axe, "login", &mut failures).await;

    // A failed sign-in shows its error on the page.
    wait_for(&client, "#email").await.send_keys("mia@example.com").await.unwrap();
    wait_for(&client, "#password").await.send_keys("not-the-password").await.unwrap();
    click(&client, "#submit").await;
    wait_for(&client, "#email").await;
    check(&client, &axe, "login with an error", &mut failures).await;

    // Signed in: the consent page, then the settings with a device and the granted app.
    wait_for(&client, "#email").await.clear().await.unwrap();
    wait_for(&client, "#email").await.send_keys("mia@example.com").await.unwrap();
    wait_for(&client, "#password").await.send_keys("password123").await.unwrap();
    click(&client, "#submit").await;
    wait_for_url(&client, &format!("{presence}/settings")).await;
    client
        .goto(&format!(
            "{presence}/grant?app_id={}&redirect_uri={}&state=a11y",
            chat.app_id,
            urlencode(REDIRECT)
        ))
        .await
        .unwrap();
    wait_for(&client, "#allow").await;
    check(&client, &axe, "consent", &mut failures).await;
    click(&client, "#allow").await;
    wait_for_url(&client, REDIRECT).await;

    client.goto(&format!("{presence}/settings")).await.unwrap();
    wait_for(&client, &format!("#pause-{}", chat.app_id)).await;
    wait_for(&client, "#devices").await;
    check(&client, &axe, "settings", &mut failures).await;

    // The confirmation steps: revoke an app, remove a device, delete the account.
    for (name, button) in [
        ("revoke confirmation", format!("#revoke-{}", chat.app_id)),
        ("remove confirmation", "#devices button[id^=remove-]".to_owned()),
        ("delete confirmation", "#delete-account".to_owned()),
    ] {
        click(&client, &button).await;
        wait_for(&client, "#confirm-step").await;
        check(&client, &axe, name, &mut failures).await;
        click(&client, "#cancel").await;
        wait_for(&client, "#my-status").await;
    }

    // A notice after an action, and the developers' page with an app.
    click(&client, &format!("#pause-{}", chat.app_id)).await;
    wait_for(&client, ".alert.notice").await;
    check(&client, &axe, "settings with a notice", &mut failures).await;
    client.goto(&format!("{presence}/developers")).await.unwrap();
    wait_for(&client, "main").await;
    check(&client, &axe, "developers (no app)", &mut failures).await;

    // The developer's own page lists the app.
    client.goto(&format!("{presence}/")).await.unwrap();
    click(&client, "form[action='/logout'] button").await;
    // Signed out once the logout's redirect lands (going on before it raced the old session).
    wait_for_url(&client, &format!("{presence}/login")).await;
    client.goto(&format!("{presence}/login?next=/developers")).await.unwrap();
    wait_for(&client, "#email").await.send_keys("dev@example.com").await.unwrap();
    wait_for(&client, "#password").await.send_keys("password123").await.unwrap();
    click(&client, "#submit").await;
    wait_for_url(&client, &format!("{presence}/developers")).await;
    wait_for(&client, &format!("form[action='/developers/apps/{}/secret']", chat.app_id)).await;
    receiver.wait_until(Duration::from_secs(10), |hits| !hits.is_empty()).await;
    let resend = "#deliveries-".to_owned() + &chat.app_id + " button[id^=resend-]";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.find(fantoccini::Locator::Css(&resend)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the failed delivery is never listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.refresh().await.unwrap();
    }
    check(&client, &axe, "developers", &mut failures).await;

    // A message page (an app that does not exist).
    client.goto(&format!("{presence}/grant?app_id=nope&redirect_uri={}", urlencode(REDIRECT))).await.unwrap();
    wait_for(&client, "main").await;
    check(&client, &axe, "message", &mut failures).await;

    client.close().await.unwrap();
    assert!(failures.is_empty(), "accessibility violations (WCAG 2.x A/AA):\n{}", failures.join("\n"));
}

/// The dark colour scheme has colours of its own: the signed-out pages and the settings with
/// a device and a granted app pass in it too.
#[tokio::test]
async fn the_pages_pass_the_wcag_aa_checks_in_the_dark_colour_scheme_too() {
    let Some(axe) = axe_source() else { return };
    let Some((_driver, client)) = chromium_with(&["--force-dark-mode"]).await else { return };
    let app = spawn_app().await;
    let presence = app.url("");
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let noor = app.user("noor@example.com").await;
    app.register_device(&noor, "Phone").await;
    let mut failures = Vec::new();

    client.goto(&format!("{presence}/")).await.unwrap();
    wait_for(&client, "#landing").await;
    let dark =
        client.execute("return matchMedia('(prefers-color-scheme: dark)').matches", vec![]).await.unwrap();
    assert_eq!(dark, json!(true), "--force-dark-mode gives the dark colour scheme");
    check(&client, &axe, "landing (dark)", &mut failures).await;
    client.goto(&format!("{presence}/signup")).await.unwrap();
    wait_for(&client, "#email").await;
    check(&client, &axe, "signup (dark)", &mut failures).await;
    client.goto(&format!("{presence}/login")).await.unwrap();
    wait_for(&client, "#email").await.send_keys("noor@example.com").await.unwrap();
    check(&client, &axe, "login (dark)", &mut failures).await;
    wait_for(&client, "#password").await.send_keys("password123").await.unwrap();
    click(&client, "#submit").await;
    wait_for_url(&client, &format!("{presence}/settings")).await;
    client
        .goto(&format!(
            "{presence}/grant?app_id={}&redirect_uri={}&state=dark",
            chat.app_id,
            urlencode(REDIRECT)
        ))
        .await
        .unwrap();
    wait_for(&client, "#allow").await;
    check(&client, &axe, "consent (dark)", &mut failures).await;
    click(&client, "#allow").await;
    wait_for_url(&client, REDIRECT).await;
    client.goto(&format!("{presence}/settings")).await.unwrap();
    wait_for(&client, &format!("#pause-{}", chat.app_id)).await;
    check(&client, &axe, "settings (dark)", &mut failures).await;
    click(&client, &format!("#revoke-{}", chat.app_id)).await;
    wait_for(&client, "#confirm-step").await;
    check(&client, &axe, "revoke confirmation (dark)", &mut failures).await;

    client.close().await.unwrap();
    assert!(failures.is_empty(), "accessibility violations (WCAG 2.x A/AA, dark):\n{}", failures.join("\n"));
}
