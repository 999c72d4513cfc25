//! Errors at the HTTP edge: a stable `code`, a human `detail`, the right status. Operations'
//! errors map here in one place; internal errors become an opaque 500, logged once with their
//! cause chain.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<std::time::Duration>,
}

/// Every error's body: a stable snake_case `code` and a human `detail`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// Stable, snake_case: what programs match on.
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    pub code: String,
    /// A sentence for people.
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), retry_after: None }
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// Logs `error` with its sources and hides it from the client.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(error = %crate::error::chain(error), "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> ApiError {
        ApiError::internal(&error)
    }
}

impl From<crate::ops::Error> for ApiError {
    fn from(error: crate::ops::Error) -> ApiError {
        use crate::ops::Error;
        match error {
            Error::Invalid { code, detail } => ApiError::new(StatusCode::BAD_REQUEST, code, detail),
            Error::NotFound(detail) => ApiError::not_found(detail),
            Error::Unauthorized { code, detail } => ApiError::new(StatusCode::UNAUTHORIZED, code, detail),
            Error::Conflict { code, detail } => ApiError::new(StatusCode::CONFLICT, code, detail),
            Error::Forbidden { code, detail } => ApiError::new(StatusCode::FORBIDDEN, code, detail),
            Error::TooLarge { code, detail } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, detail),
            Error::RateLimited { code, detail, retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
            },
            error @ (Error::Unavailable(_) | Error::Store(_)) => ApiError::internal(&error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody { code: self.code.to_owned(), detail: self.detail });
        let mut response = (self.status, body).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON body whose rejections are `ApiError`s (`invalid_body`), like every other error. A
/// string holding a NUL character is refused too: no id, name or URL has one, and PostgreSQL
/// cannot store one.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let invalid = |status, detail| ApiError::new(status, "invalid_body", detail);
        let value = match Json::<serde_json::Value>::from_request(request, state).await {
            Ok(Json(value)) => value,
            Err(rejection) => return Err(invalid(rejection.status(), rejection.body_text())),
        };
        if holds_nul(&value) {
            return Err(invalid(StatusCode::BAD_REQUEST, "a JSON string holds a NUL character".to_owned()));
        }
        serde_json::from_value(value).map(ApiJson).map_err(|error| {
            let detail = format!("Failed to deserialize the JSON body into the target type: {error}");
            invalid(StatusCode::UNPROCESSABLE_ENTITY, detail)
        })
    }
}

fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(key, value)| key.contains('\0') || holds_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Path parameters whose rejections (a segment that is not UTF-8) are `ApiError`s
/// (`invalid_path`), like every other error; so is a NUL character (`%00`), which no id holds.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        if parts.uri.path().contains("%00") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "the path holds a NUL character",
            ));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::new(rejection.status(), "invalid_path", rejection.body_text())),
        }
    }
}
