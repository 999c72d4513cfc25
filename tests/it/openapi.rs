//! The OpenAPI document at `/v1/openapi.json`: it is OpenAPI 3.1, it documents every route the
//! server serves under `/v1` (found in the source, so a new route without documentation fails
//! here), and real answers of the main paths match the schemas it documents for them. Inputs
//! found while fuzzing the API against it (NUL characters, which PostgreSQL cannot store) answer
//! their documented 4xx, never a 500.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::apps::as_app_at;
use crate::support::{consent, exchange, register_app, spawn_app, Browser, Reply, TestApp};

async fn document(app: &TestApp) -> Value {
    let served = app.get("/v1/openapi.json").await;
    assert_eq!(served.status, 200, "{}", served.body);
    served.json()
}

/// The `(path, method)` pairs routed with `.route("…", get(…).post(…))` in the modules whose
/// routers the server serves (the HTTP API, the streams, the device gateway).
fn routes_in_source() -> Vec<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<_> = ["http", "fanout", "gateway"].iter().map(|module| src.join(module)).collect();
    let mut routes = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            routes.extend(routes_in(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    routes
}

fn routes_in(source: &str) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(path) = rest.trim_start().strip_prefix('"').and_then(|s| s.split('"').next()) else {
            continue;
        };
        // The method router: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let chain = &rest[..end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = chain
                .match_indices(&format!("{method}("))
                .any(|(i, _)| !chain[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'));
            if called {
                routes.push((path.to_owned(), method.to_owned()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_documents_every_route_under_v1() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "{}", doc["openapi"]);
    assert!(
        doc["webhooks"]["presence"]["post"]["requestBody"].is_object(),
        "the webhook payload is documented"
    );

    let api: Vec<_> = routes_in_source()
        .into_iter()
        .filter(|(path, _)| path.starts_with("/v1/") || path.ends_with("/presence.json"))
        .collect();
    assert!(api.contains(&("/v1/openapi.json".to_owned(), "get".to_owned())), "routes found: {api:?}");
    assert!(api.contains(&("/v1/me".to_owned(), "delete".to_owned())), "routes found: {api:?}");
    let undocumented: Vec<_> =
        api.iter().filter(|(path, method)| doc["paths"][path][method].is_null()).collect();
    assert!(undocumented.is_empty(), "served but not documented: {undocumented:?}");

    // And nothing documented under /v1 that is not served.
    let documented = doc["paths"].as_object().unwrap().iter().filter(|(path, _)| path.starts_with("/v1/"));
    for (path, item) in documented {
        for method in item.as_object().unwrap().keys() {
            assert!(
                api.contains(&(path.clone(), method.clone())),
                "documented but not served: {method} {path}"
            );
        }
    }

    // Every error answer has the one shape (but readiness, whose 503 is its report).
    for (path, item) in doc["paths"].as_object().unwrap().iter().filter(|(path, _)| *path != "/healthz") {
        for (method, operation) in item.as_object().unwrap() {
            for (status, answer) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/Error", "{method} {path} {status}");
                }
            }
        }
    }
}

/// Checks a real answer against the schema the document gives for its path, method and status.
fn conforms(doc: &Value, path: &str, method: &str, answer: &Reply) -> Value {
    let documented = &doc["paths"][path][method]["responses"][answer.status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {path} answered {} undocumented: {}",
        answer.status,
        answer.body
    );
    let mut schema = documented["content"]["application/json"]["schema"].clone();
    assert!(schema.is_object(), "{method} {path} {} documents no JSON body", answer.status);
    // `$ref`s point into the document's components; give the schema a copy of them.
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&schema).expect("the documented schema compiles");
    let body = answer.json();
    let errors: Vec<String> = validator.iter_errors(&body).map(|error| error.to_string()).collect();
    assert!(errors.is_empty(), "{method} {path} {}: {body} does not match: {errors:?}", answer.status);
    body
}

#[tokio::test]
async fn real_answers_of_the_main_paths_match_their_documented_schemas() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let base = app.url("");
    let developer = app.user("dev@example.com").await;
    let kim = app.user("kim@example.com").await;

    let created = app
        .send_as(
            Method::POST,
            &developer.token,
            "/v1/apps",
            Some(json!({"name": "Chat", "redirect_uris": ["http://127.0.0.1:1/callback"]})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    conforms(&doc, "/v1/apps", "post", &created);
    let refused =
        app.send_as(Method::POST, &developer.token, "/v1/apps", Some(json!({"name": "No URIs"}))).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(conforms(&doc, "/v1/apps", "post", &refused)["code"], "invalid_body");
    conforms(&doc, "/v1/apps", "get", &app.get_as(&developer.token, "/v1/apps").await);

    let chat = register_app(&app, &developer, "Chat 2").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("kim@example.com").await;
    let code = consent(&mut browser, &chat.app_id, None).await;
    let exchanged = exchange(&app, &chat, json!({"code": code})).await;
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let uid = conforms(&doc, "/v1/grants/token", "post", &exchanged)["uid"].as_str().unwrap().to_owned();
    let reused = exchange(&app, &chat, json!({"code": code})).await;
    assert_eq!(reused.status, 400);
    assert_eq!(conforms(&doc, "/v1/grants/token", "post", &reused)["code"], "invalid_grant");
    let grants = app.get_as(&kim.token, "/v1/me/grants").await;
    assert_eq!(conforms(&doc, "/v1/me/grants", "get", &grants)["grants"][0]["app_id"], chat.app_id.as_str());

    app.register_device(&kim, "phone").await;
    let me = app.get_as(&kim.token, "/v1/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(conforms(&doc, "/v1/me", "get", &me)["devices"][0]["name"], "phone");
    let garbled = app.send_as(Method::DELETE, &kim.token, "/v1/devices/%FF", None).await;
    assert_eq!(garbled.status, 400);
    assert_eq!(conforms(&doc, "/v1/devices/{device_id}", "delete", &garbled)["code"], "invalid_path");
    let signed_out = app.get_as("pt_not-a-token", "/v1/me").await;
    assert_eq!(signed_out.status, 401);
    assert_eq!(conforms(&doc, "/v1/me", "get", &signed_out)["code"], "unauthorized");

    let notifications = format!("/v1/apps/{}/notifications", chat.app_id);
    let notification = json!({"uid": uid, "title": "Hi", "ttl": 300});
    let sent = as_app_at(&base, &chat, Method::POST, &notifications, Some(notification)).await;
    assert_eq!(sent.status, 202, "no device is connected: {}", sent.body);
    let sent = conforms(&doc, "/v1/apps/{app_id}/notifications", "post", &sent);
    assert_eq!(sent["status"], "queued");
    let state_path = format!("{notifications}/{}", sent["id"].as_str().unwrap());
    let state = as_app_at(&base, &chat, Method::GET, &state_path, None).await;
    assert_eq!(conforms(&doc, "/v1/apps/{app_id}/notifications/{id}", "get", &state)["status"], "queued");
    let unknown = as_app_at(&base, &chat, Method::GET, &format!("{notifications}/n_unknown"), None).await;
    assert_eq!(unknown.status, 404);
    conforms(&doc, "/v1/apps/{app_id}/notifications/{id}", "get", &unknown);
    let stranger = json!({"uid": "u_nobody", "title": "Hi", "ttl": 0});
    let refused = as_app_at(&base, &chat, Method::POST, &notifications, Some(stranger)).await;
    assert_eq!(refused.status, 404);
    assert_eq!(conforms(&doc, "/v1/apps/{app_id}/notifications", "post", &refused)["code"], "not_found");
}

#[tokio::test]
async fn nul_characters_in_bodies_paths_and_credentials_answer_documented_refusals() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let base = app.url("");
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;

    let named = json!({"name": "Chat", "redirect_uris": ["https://chat.example/cb"], "webhook_url": "https://chat.example/\u{0}"});
    let refused = app.send_as(Method::POST, &developer.token, "/v1/apps", Some(named)).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(conforms(&doc, "/v1/apps", "post", &refused)["code"], "invalid_body");

    let notifications = format!("/v1/apps/{}/notifications", chat.app_id);
    let nul_uid = json!({"uid": "u_\u{0}", "title": "Hi", "ttl": 0});
    let refused = as_app_at(&base, &chat, Method::POST, &notifications, Some(nul_uid)).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(conforms(&doc, "/v1/apps/{app_id}/notifications", "post", &refused)["code"], "invalid_body");

    let revoke = app.send_as(Method::DELETE, &developer.token, "/v1/me/grants/app_%00", None).await;
    assert_eq!(revoke.status, 400, "{}", revoke.body);
    assert_eq!(conforms(&doc, "/v1/me/grants/{app_id}", "delete", &revoke)["code"], "invalid_path");

    let presence = format!("/v1/apps/{}/presence?uid=u_%00,u_unknown", chat.app_id);
    let presence = as_app_at(&base, &chat, Method::GET, &presence, None).await;
    assert_eq!(presence.status, 200, "{}", presence.body);
    assert_eq!(conforms(&doc, "/v1/apps/{app_id}/presence", "get", &presence)["presence"], json!([]));

    let deliveries = format!("/v1/apps/{}/deliveries", chat.app_id);
    let impostor = reqwest::Client::new()
        .get(format!("{base}{deliveries}"))
        .basic_auth(format!("{}\u{0}", chat.app_id), Some(&chat.secret))
        .send()
        .await
        .unwrap();
    let impostor = crate::support::reply(impostor).await;
    assert_eq!(impostor.status, 401, "{}", impostor.body);
    assert_eq!(conforms(&doc, "/v1/apps/{app_id}/deliveries", "get", &impostor)["code"], "invalid_client");
}
