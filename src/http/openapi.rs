//! The OpenAPI 3.1 document of the HTTP API, served at `GET /v1/openapi.json`. It is assembled
//! from the handlers' `#[utoipa::path]` annotations and their typed bodies; what every path of a
//! kind answers alike (path and body rejections, authentication failures, internal errors) is
//! added here in one place, so the statuses stay honest without repeating them on each handler.
//! The stream, the AppServers' update and the webhook payload have no JSON handler to derive
//! from: they are described by the stubs below. A new route needs its `#[utoipa::path]` and a
//! place in `paths(…)`: `tests/it/openapi.rs` fails on a `/v1` route the document lacks.

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{OpenApi, PartialSchema, ToSchema};

use super::error::ErrorBody;
use super::{api, apps, deliveries, health, me, notifications, HttpState};

pub fn routes() -> Router<HttpState> {
    Router::new().route("/v1/openapi.json", get(serve))
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", body = serde_json::Value)))]
async fn serve() -> Response {
    Json(document()).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Presence",
        description = "Share whether you can be reached right now, over Mozilla SimplePush. Users and \
            their devices use a bearer token; apps use HTTP Basic `app_id:secret` or their secret as a bearer \
            token. Every error is `{code, detail}`."
    ),
    paths(
        api::create_token, api::revoke_token, api::create_device, api::list_devices, api::delete_device,
        api::me, api::get_policy, api::put_policy,
        me::delete_account, me::export, me::change_password, me::sessions, me::revoke_session,
        apps::create_app, apps::list_apps, apps::update_app, apps::rotate_secret, apps::rotate_webhook_secret,
        apps::current_presence, deliveries::resend,
        apps::list_deliveries, apps::enable_webhook, apps::exchange_code, apps::list_grants,
        apps::change_grant, apps::revoke_grant,
        notifications::send, notifications::status,
        stream, v1_stream, update, webhook,
        health::livez, health::healthz, health::metrics, serve,
    ),
    components(schemas(ErrorBody, StreamLine, StreamBatch, StreamEntry, StreamClose, EventStatus, WebhookBatch)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "users", description = "the signed-in user: tokens, status, policy, password, sessions, data"),
        (name = "devices", description = "the user's devices and their presence ids"),
        (name = "apps", description = "registering apps, and what an app reads about its users"),
        (name = "grants", description = "consent: the code exchange, and the user's grants"),
        (name = "notifications", description = "live notifications from apps to users' devices"),
        (name = "stream", description = "the app's presence updates, held open"),
        (name = "appservers", description = "SimplePush: an AppServer wakes a device's channel"),
        (name = "operations", description = "liveness, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

/// Bearer for users; Basic or bearer for apps.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut user = Http::new(HttpAuthScheme::Bearer);
        user.description =
            Some("a token from `POST /v1/tokens` (`pt_…`), or the identity provider's JWT".into());
        components.add_security_scheme("user", SecurityScheme::Http(user));
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description = Some("`app_id:secret`".into());
        components.add_security_scheme("app_basic", SecurityScheme::Http(basic));
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some("the app's secret (`ps_…`)".into());
        components.add_security_scheme("app_bearer", SecurityScheme::Http(bearer));
    }
}

/// The document, as served.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        // The JSON API's handlers (not the stream's, nor the device gateway's) read their path
        // parameters with `ApiPath`.
        let api_path = path.starts_with("/v1/") && !path.ends_with("/presence.json");
        for operation in item.as_object_mut().into_iter().flat_map(|item| item.values_mut()) {
            add_shared_answers(operation, api_path);
        }
    }
    // The webhook is a request Presence makes, not a path it serves.
    let webhook = paths.remove(WEBHOOK_STUB).expect("the webhook stub");
    doc["webhooks"] = json!({ "presence": webhook });
    answers_carry_every_field(&mut doc);
    doc
}

/// Schemas whose fields an answer may leave out (`skip_serializing_if`).
const SOMETIMES_ABSENT: &[&str] = &["Readiness"];

/// utoipa lists `Option` fields as optional, as they are in requests; answers carry them all
/// (`null` when empty). So in every schema no request body uses, every property is required.
fn answers_carry_every_field(doc: &mut Value) {
    let mut pending = Vec::new();
    for item in doc["paths"].as_object().into_iter().flat_map(|paths| paths.values()) {
        for operation in item.as_object().into_iter().flat_map(|item| item.values()) {
            schema_refs(&operation["requestBody"], &mut pending);
        }
    }
    let mut in_requests = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if in_requests.insert(name.clone()) {
            schema_refs(&doc["components"]["schemas"][&name], &mut pending);
        }
    }
    let Some(schemas) = doc["components"]["schemas"].as_object_mut() else { return };
    for (name, schema) in schemas {
        if in_requests.contains(name) || SOMETIMES_ABSENT.contains(&name.as_str()) {
            continue;
        }
        if let Some(properties) = schema["properties"].as_object() {
            let every: Vec<Value> = properties.keys().cloned().map(Value::String).collect();
            schema["required"] = Value::Array(every);
        }
    }
}

/// The names of the component schemas `value` refers to.
fn schema_refs(value: &Value, names: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            if let Some(name) = fields.get("$ref").and_then(Value::as_str) {
                names.extend(name.strip_prefix("#/components/schemas/").map(str::to_owned));
            }
            fields.values().for_each(|field| schema_refs(field, names));
        }
        Value::Array(items) => items.iter().for_each(|item| schema_refs(item, names)),
        _ => {}
    }
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// Adds `status` to an operation's answers, or its meaning to the one documented already.
fn add_answer(responses: &mut Map<String, Value>, status: &str, description: &str) {
    match responses.get_mut(status).and_then(|answer| answer.get_mut("description")) {
        Some(Value::String(known)) => {
            known.push_str("; ");
            known.push_str(description);
        }
        _ => {
            responses.insert(status.to_owned(), error(description));
        }
    }
}

/// What every operation of a kind answers: path and body rejections, authentication failures,
/// and the opaque `500 internal` of a store failure.
fn add_shared_answers(operation: &mut Value, api_path: bool) {
    let schemes: Vec<String> = operation["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|requirement| requirement.keys().cloned())
        .collect();
    let has_path_parameters = operation["parameters"]
        .as_array()
        .is_some_and(|parameters| parameters.iter().any(|parameter| parameter["in"] == "path"));
    let has_body = operation.get("requestBody").is_some();
    let has_json_body = operation["requestBody"]["content"].get("application/json").is_some();
    let Some(responses) = operation["responses"].as_object_mut() else { return };
    if api_path && has_path_parameters {
        add_answer(
            responses,
            "400",
            "`invalid_path`: a path segment that is not UTF-8 once decoded, or holds a NUL",
        );
    }
    if schemes.iter().any(|scheme| scheme == "user") {
        add_answer(responses, "401", "`unauthorized`: no bearer token, or one unknown, expired or revoked");
        add_answer(
            responses,
            "503",
            "`identity_provider_unavailable`: the identity provider's keys cannot be fetched",
        );
    }
    if schemes.iter().any(|scheme| scheme.starts_with("app_")) {
        add_answer(responses, "401", "`invalid_client`: no or wrong app credentials");
        add_answer(
            responses,
            "403",
            "`app_disabled` by the operator, or `forbidden`: credentials of another app",
        );
    }
    if has_json_body {
        add_answer(responses, "400", "`invalid_body`: not JSON, or a string holding a NUL character");
        add_answer(responses, "413", "`invalid_body`: over `max_json_body`");
        add_answer(responses, "415", "`invalid_body`: not `application/json`");
        add_answer(responses, "422", "`invalid_body`: JSON without the fields this body needs");
    }
    if !schemes.is_empty() || has_body {
        add_answer(responses, "500", "`internal`: the store failed (logged, never detailed here)");
    }
}

/// A status as apps see it in the event log: `revoked` is sent once, when the user revokes.
pub struct EventStatus;

impl PartialSchema for EventStatus {
    fn schema() -> RefOr<Schema> {
        event_status().into()
    }
}

fn event_status() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["online", "away", "offline", "revoked"]))
        .into()
}

impl ToSchema for EventStatus {}

/// `["<uid>", "<status>", <seq>]`: one event of the stream.
pub struct StreamEntry;

impl PartialSchema for StreamEntry {
    fn schema() -> RefOr<Schema> {
        let uid: Schema = ObjectBuilder::new().schema_type(Type::String).description(Some("uid")).into();
        let seq: Schema =
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).description(Some("seq")).into();
        tuple([uid, event_status(), seq]).into()
    }
}

impl ToSchema for StreamEntry {}

/// The events of one flush; `[]` is the heartbeat.
pub struct StreamBatch;

impl PartialSchema for StreamBatch {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new().items(StreamEntry::name_ref()).into()
    }
}

impl ToSchema for StreamBatch {}

/// The last line of a stream the server ends (`consumer_lagging`, `replaced`, `shutting_down`).
pub struct StreamClose;

impl PartialSchema for StreamClose {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property("error", ObjectBuilder::new().schema_type(Type::String))
            .property("detail", ObjectBuilder::new().schema_type(Type::String))
            .property(
                "resume_since",
                ObjectBuilder::new().schema_type(Type::Integer).description(Some("reconnect with ?since=")),
            )
            .required("error")
            .required("detail")
            .required("resume_since")
            .into()
    }
}

impl ToSchema for StreamClose {}

/// One line of `application/x-ndjson` (or one SSE `data:`).
pub struct StreamLine;

impl PartialSchema for StreamLine {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new().item(StreamBatch::name_ref()).item(StreamClose::name_ref()).into()
    }
}

impl ToSchema for StreamLine {}

/// A webhook's body: `[["<uid>", "<status>"], …]`, the latest status per user.
pub struct WebhookBatch;

impl PartialSchema for WebhookBatch {
    fn schema() -> RefOr<Schema> {
        let uid: Schema = ObjectBuilder::new().schema_type(Type::String).description(Some("uid")).into();
        ArrayBuilder::new().items(tuple([uid, event_status()])).into()
    }
}

impl ToSchema for WebhookBatch {}

/// An array of exactly these items.
fn tuple<const N: usize>(items: [Schema; N]) -> ArrayBuilder {
    ArrayBuilder::new().prefix_items(items).min_items(Some(N)).max_items(Some(N))
}

/// `[[uid, status], …]`: the statuses an app sees now. Two strings rather than `prefixItems`:
/// schemathesis (4.32) cannot check responses against `prefixItems`.
pub fn uid_status_pairs() -> utoipa::openapi::schema::Array {
    let pair = ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String))
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some("`[uid, status]`, the status `online`, `away` or `offline`"));
    ArrayBuilder::new().items(pair).build()
}

/// A `$ref` to a schema of `components`.
trait NameRef {
    fn name_ref() -> RefOr<Schema>;
}

impl<T: ToSchema> NameRef for T {
    fn name_ref() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
    }
}

/// The stream: held open, one JSON array per flush (or Server-Sent Events on request).
#[utoipa::path(get, path = "/{app_id}/presence.json", tag = "stream",
    security(("app_basic" = []), ("app_bearer" = [])),
    params(
        ("app_id" = String, Path),
        ("since" = Option<u64>, Query, description = "resume right after this seq (or `Last-Event-ID`)"),
        ("snapshot" = Option<bool>, Query, description = "start with every granted user's current status"),
        ("format" = Option<String>, Query, description = "`pairs` (the default: `[uid, status, seq]` entries) or \
            `v1` (`{uid, status, seq, time}` objects); anything else `400 invalid_format`"),
    ),
    responses(
        (status = 200, description = "held open: `application/x-ndjson` lines (the default), or with \
            `Accept: text/event-stream` events whose `id` is the batch's last seq and whose `data` is the \
            same array; heartbeats when idle",
            content((StreamLine = "application/x-ndjson"), (String = "text/event-stream"))),
        (status = 400, description = "`invalid_since`: beyond the newest event (a `since` or `snapshot` that \
            does not parse gets a plain-text 400)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such app", body = ErrorBody),
        (status = 410, description = "`resync_required`: before the retained log; reconnect with ?snapshot=true", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn stream() {}

/// The same stream, under `/v1`.
#[utoipa::path(get, path = "/v1/apps/{app_id}/presence.json", tag = "stream",
    security(("app_basic" = []), ("app_bearer" = [])),
    params(
        ("app_id" = String, Path),
        ("since" = Option<u64>, Query, description = "resume right after this seq (or `Last-Event-ID`)"),
        ("snapshot" = Option<bool>, Query, description = "start with every granted user's current status"),
        ("format" = Option<String>, Query, description = "`pairs` (the default: `[uid, status, seq]` entries) or \
            `v1` (`{uid, status, seq, time}` objects); anything else `400 invalid_format`"),
    ),
    responses(
        (status = 200, description = "as `GET /{app_id}/presence.json`",
            content((StreamLine = "application/x-ndjson"), (String = "text/event-stream"))),
        (status = 400, description = "`invalid_since`: beyond the newest event", body = ErrorBody),
        (status = 404, description = "`not_found`: no such app", body = ErrorBody),
        (status = 410, description = "`resync_required`: before the retained log; reconnect with ?snapshot=true", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn v1_stream() {}

/// The form an AppServer sends (`version` and `data` may come in the query string instead).
#[derive(ToSchema)]
#[allow(dead_code)]
struct UpdateForm {
    /// 0 to 2^63−1; the current Unix time when absent.
    version: Option<u64>,
    /// At most 4096 bytes.
    data: Option<String>,
}

/// SimplePush: an AppServer tells a device's channel it has a new version.
#[utoipa::path(put, path = "/update/{token}", tag = "appservers",
    params(("token" = String, Path, description = "from the device's `pushEndpoint`")),
    request_body(content = UpdateForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "handed to the device's live connection (empty body)"),
        (status = 202, description = "stored for the device's next hello (empty body)"),
        (status = 400, description = "`invalid_version`", body = ErrorBody),
        (status = 404, description = "`not_found`: the token was not issued here", body = ErrorBody),
        (status = 410, description = "`endpoint_gone`: the channel or the device is gone", body = ErrorBody),
        (status = 413, description = "`data_too_large` or `body_too_large`", body = ErrorBody),
        (status = 429, description = "`too_many_stored` for this device", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn update() {}

const WEBHOOK_STUB: &str = "/webhook";

/// The webhook: Presence `POST`s the latest status per user to the app's webhook URL, signed per
/// Standard Webhooks, at most once per `webhook_batch_interval`.
#[utoipa::path(post, path = "/webhook", tag = "apps",
    params(
        ("webhook-id" = String, Header, description = "the message's id; `msg_resync_…` for a resync"),
        ("webhook-timestamp" = i64, Header, description = "Unix seconds; refuse one that is not recent"),
        ("webhook-signature" = String, Header,
            description = "`v1,` + base64(HMAC-SHA256(key, \"<webhook-id>.<webhook-timestamp>.<body>\")), the key \
                being the base64 after `whsec_`, decoded"),
        ("presence-resync" = Option<bool>, Header,
            description = "`true`: the body is every granted user's current status, after events were lost"),
    ),
    request_body(content = WebhookBatch, content_type = "application/json"),
    responses(
        (status = 200, description = "any 2xx: delivered"),
        (status = 410, description = "disables the webhook"),
        (status = "default", description = "retried with backoff (or after `Retry-After`)"),
    ))]
#[allow(dead_code)]
fn webhook() {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_openapi_3_1_with_webhooks_and_shared_errors() {
        let doc = super::document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"].get(super::WEBHOOK_STUB).is_none());
        assert!(doc["webhooks"]["presence"]["post"]["requestBody"].is_object());
        let create = &doc["paths"]["/v1/apps"]["post"]["responses"];
        assert!(create["401"]["description"].as_str().unwrap().contains("unauthorized"));
        assert!(create["422"]["description"].as_str().unwrap().contains("invalid_body"));
        assert!(doc["components"]["securitySchemes"]["app_basic"].is_object());
        // Answers carry their `null`s; requests may leave optional fields out.
        let required = |name: &str| doc["components"]["schemas"][name]["required"].clone();
        assert!(required("Me").as_array().unwrap().contains(&"email".into()));
        assert!(!required("NewApp").as_array().unwrap().contains(&"webhook_url".into()));
    }
}
