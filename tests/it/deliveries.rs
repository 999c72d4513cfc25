//! The app's deliveries: attempts paged newest first behind an opaque cursor, and a resend of a
//! failed attempt, which sends the pending events without waiting out the backoff.

use std::time::Duration;

use reqwest::Method;

use crate::support::apps::as_app_at;
use crate::support::{builder, grant, register_app_with_webhook, Answer, Receiver, RegisteredApp, TestApp};

/// A server with a webhook app "Chat" to `receiver`, and ann, who granted it (the grant itself
/// is the first event: her status, `offline`). Returns her uid.
async fn chat_with_webhook(receiver: &Receiver) -> (TestApp, RegisteredApp, String) {
    let app = builder()
        .set("webhook_allow", "127.0.0.0/8")
        .set("webhook_batch_interval", "1s")
        .set("presence_grace", "0s")
        .spawn()
        .await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app_with_webhook(&app, &developer, "Chat", Some(&receiver.url)).await;
    app.user("ann@example.com").await;
    let (_, uid) = grant(&app.url(""), "ann@example.com", &chat).await;
    (app, chat, uid)
}

async fn deliveries(app: &TestApp, chat: &RegisteredApp, query: &str) -> serde_json::Value {
    let path = format!("/v1/apps/{}/deliveries{query}", chat.app_id);
    let page = as_app_at(&app.url(""), chat, Method::GET, &path, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    page.json()
}

/// Waits (up to 20 s) until the deliveries satisfy `done`; returns them.
async fn wait_for_deliveries(
    app: &TestApp,
    chat: &RegisteredApp,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = deliveries(app, chat, "?limit=500").await;
        if done(&page) {
            return page;
        }
        assert!(tokio::time::Instant::now() < deadline, "the deliveries never got there: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(page: &serde_json::Value) -> Vec<u64> {
    page["attempts"].as_array().unwrap().iter().map(|a| a["id"].as_u64().unwrap()).collect()
}

async fn resend(app: &TestApp, chat: &RegisteredApp, attempt: &str) -> crate::support::Reply {
    let path = format!("/v1/apps/{}/deliveries/{attempt}/resend", chat.app_id);
    as_app_at(&app.url(""), chat, Method::POST, &path, None).await
}

#[tokio::test]
async fn cursor_pages_cover_every_attempt_exactly_once_newest_first() {
    let receiver = Receiver::start().await;
    // Four failures retried at once (`Retry-After: 0`), then a success: five attempts.
    let again = Answer { status: 503, retry_after: Some(0), delay: Duration::ZERO };
    receiver.answer_next(&[again, again, again, again]);
    let (app, chat, _) = chat_with_webhook(&receiver).await;
    let all = wait_for_deliveries(&app, &chat, |page| {
        page["webhook"]["pending"] == 0 && page["attempts"].as_array().unwrap().len() == 5
    })
    .await;
    let all_ids = ids(&all);
    assert!(all_ids.windows(2).all(|pair| pair[0] > pair[1]), "newest first: {all_ids:?}");
    assert!(all["next_cursor"].is_null(), "one page holds them all");
    assert_eq!(all["attempts"][0]["outcome"], "delivered");
    assert_eq!(all["attempts"][0]["status_code"], 200);
    assert_eq!(all["attempts"][4]["outcome"], "failed");
    assert_eq!(all["attempts"][4]["status_code"], 503);
    // Today's fields stay, holding the same attempts.
    assert_eq!(all["deliveries"].as_array().unwrap().len(), 5);
    assert_eq!(all["deliveries"][0]["message_id"], all["attempts"][0]["message_id"]);
    assert_eq!(all["webhook_url"], receiver.url.as_str());

    let mut paged = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = deliveries(&app, &chat, &query).await;
        pages += 1;
        assert!(page["attempts"].as_array().unwrap().len() <= 2);
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={}", crate::support::urlencode(cursor)),
            None => break,
        }
    }
    assert_eq!(paged, all_ids, "every attempt once, in order");
    assert_eq!(pages, 3);
    // The default page is the latest hundred.
    assert_eq!(ids(&deliveries(&app, &chat, "").await), all_ids);
}

#[tokio::test]
async fn a_cursor_or_limit_that_no_page_gave_is_refused() {
    let receiver = Receiver::start().await;
    let (app, chat, _) = chat_with_webhook(&receiver).await;
    for (query, code) in [
        ("?cursor=not-a-cursor", "invalid_cursor"),
        ("?cursor=", "invalid_cursor"),
        ("?limit=0", "invalid_limit"),
        ("?limit=501", "invalid_limit"),
        ("?limit=many", "invalid_limit"),
    ] {
        let path = format!("/v1/apps/{}/deliveries{query}", chat.app_id);
        let refused = as_app_at(&app.url(""), &chat, Method::GET, &path, None).await;
        assert_eq!((refused.status, refused.json()["code"].as_str()), (400, Some(code)), "{query}");
    }
}

#[tokio::test]
async fn resending_a_failed_attempt_delivers_the_pending_events_without_waiting_for_the_backoff() {
    let receiver = Receiver::start().await;
    // A failure that asks for an hour's wait: only a resend sends sooner.
    receiver.answer_next(&[Answer { status: 503, retry_after: Some(3600), delay: Duration::ZERO }]);
    let (app, chat, uid) = chat_with_webhook(&receiver).await;
    let failed = wait_for_deliveries(&app, &chat, |page| !page["webhook"]["failing_since"].is_null()).await;
    assert_eq!(failed["attempts"][0]["outcome"], "failed");
    let failed_id = failed["attempts"][0]["id"].as_u64().unwrap();
    assert_eq!(receiver.hits().len(), 1);

    let scheduled = resend(&app, &chat, &failed_id.to_string()).await;
    assert_eq!(scheduled.status, 202, "{}", scheduled.body);
    assert_eq!(scheduled.json()["status"], "scheduled");
    let hits = receiver
        .wait_until(Duration::from_secs(10), |hits| {
            Receiver::last_status_of(hits, &uid).as_deref() == Some("offline")
        })
        .await;
    assert_eq!(hits.len(), 2, "one resend");
    let delivered = wait_for_deliveries(&app, &chat, |page| page["webhook"]["failing_since"].is_null()).await;
    assert_eq!(delivered["webhook"]["pending"], 0);
    let latest = &delivered["attempts"][0];
    assert!(latest["id"].as_u64().unwrap() > failed_id, "a new attempt: {delivered}");
    assert_eq!((latest["outcome"].as_str(), latest["status_code"].as_u64()), (Some("delivered"), Some(200)));

    // A successful attempt has nothing to resend; nor has the failed one any more; nor an
    // unknown one.
    let not_failed = resend(&app, &chat, &latest["id"].to_string()).await;
    assert_eq!((not_failed.status, not_failed.json()["code"].as_str()), (409, Some("not_failed")));
    let nothing = resend(&app, &chat, &failed_id.to_string()).await;
    assert_eq!((nothing.status, nothing.json()["code"].as_str()), (409, Some("nothing_pending")));
    for unknown in ["999999", "abc"] {
        assert_eq!(resend(&app, &chat, unknown).await.status, 404, "{unknown}");
    }
}

#[tokio::test]
async fn resending_after_a_410_enables_the_webhook_again() {
    let receiver = Receiver::start().await;
    receiver.answer_next(&[Answer::status(410)]);
    let (app, chat, uid) = chat_with_webhook(&receiver).await;
    let disabled = wait_for_deliveries(&app, &chat, |page| !page["webhook"]["disabled_at"].is_null()).await;
    let gone = disabled["attempts"][0]["id"].as_u64().unwrap();
    let scheduled = resend(&app, &chat, &gone.to_string()).await;
    assert_eq!(scheduled.status, 202, "{}", scheduled.body);
    assert_eq!(scheduled.json()["reenabled"], true);
    receiver
        .wait_until(Duration::from_secs(10), |hits| {
            Receiver::last_status_of(hits, &uid).as_deref() == Some("offline")
        })
        .await;
    let enabled = wait_for_deliveries(&app, &chat, |page| page["webhook"]["pending"] == 0).await;
    assert!(enabled["webhook"]["disabled_at"].is_null(), "{enabled}");
}
