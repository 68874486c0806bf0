//! Errors, and how they become HTTP responses at the edge.
//!
//! Handlers return [`ApiError`]; each variant maps to a status and a JSON
//! [`ErrorBody`] with a stable `reason`. Internal failures (the
//! database) are logged with their detail and answered with a generic sentence: the client is
//! told what *it* did wrong, never the server's internals.
//!
//! [`ApiJson`] replaces axum's `Json` extractor so that bad JSON, unknown fields, a wrong
//! content type and oversized bodies are 400 JSON errors, not axum's plain-text rejections.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nodetrust_proto::ErrorBody;

use crate::outcome::AttestError;
use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Stable reason.
        reason: &'static str,
        /// Sentence for the client.
        message: String,
    },
    /// No or wrong credentials.
    #[error("authentication required")]
    Unauthorized,
    /// Authenticated, but the role may not do this.
    #[error("the account's role may not do this")]
    Forbidden,
    /// Refused for a reason the client can act on (e.g. an EK that is not endorsed).
    #[error("{message}")]
    Refused {
        /// Stable reason.
        reason: &'static str,
        /// Sentence for the client.
        message: String,
    },
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Conflicts with the current state, for a reason the client can act on (409 with
    /// `reason`, e.g. `identity_conflict`).
    #[error("{message}")]
    ConflictWith {
        /// Stable reason.
        reason: &'static str,
        /// Sentence for the client.
        message: String,
    },
    /// Too many requests: try again after `retry_after` seconds (429 with `Retry-After`).
    #[error("{message}")]
    TooMany {
        /// Stable reason.
        reason: &'static str,
        /// Sentence for the client.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The server cannot take this now (503 with `Retry-After`).
    #[error("{message}")]
    Unavailable {
        /// Stable reason.
        reason: &'static str,
        /// Sentence for the client.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The method is not allowed on this path.
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    /// The body is larger than allowed.
    #[error("request body too large")]
    TooLarge,
    /// A host's agent could not be reached or answered badly.
    #[error("{0}")]
    BadGateway(String),
    /// The server failed.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 with `reason`.
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            reason,
            message: message.into(),
        }
    }

    /// A 403 refusal with `reason`.
    pub fn refused(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { reason, .. } => (StatusCode::BAD_REQUEST, reason),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Refused { reason, .. } => (StatusCode::FORBIDDEN, reason),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::ConflictWith { reason, .. } => (StatusCode::CONFLICT, reason),
            Self::TooMany { reason, .. } => (StatusCode::TOO_MANY_REQUESTS, reason),
            Self::Unavailable { reason, .. } => (StatusCode::SERVICE_UNAVAILABLE, reason),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::TooLarge => (StatusCode::BAD_REQUEST, "body_too_large"),
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "agent_error"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// The engine's errors at the API edge: statuses and reasons as the API has always answered
/// (404 `not_found`, 502 `agent_error`, 403 with the failed check, 400 `import_failed`, 500).
impl From<AttestError> for ApiError {
    fn from(e: AttestError) -> Self {
        match e {
            AttestError::NotFound(host) => ApiError::NotFound(format!("no host named {host}")),
            AttestError::Agent { message, .. } => ApiError::BadGateway(message),
            AttestError::EvidenceRejected { reason, message } => ApiError::refused(reason, message),
            AttestError::Import(e) => ApiError::bad_request("import_failed", e.to_string()),
            // 409 with the engine's own reason (`challenge_stale`, `event_log_needed`,
            // `pcr_values_needed`).
            e @ (AttestError::StaleChallenge(_)
            | AttestError::EventLogNeeded(_)
            | AttestError::PcrValuesNeeded(_)) => ApiError::ConflictWith {
                reason: e.reason(),
                message: e.to_string(),
            },
            AttestError::Store(e) => e.into(),
            AttestError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, reason) = self.parts();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = (status, Json(ErrorBody::new(reason, message))).into_response();
        if let Self::TooMany { retry_after, .. } | Self::Unavailable { retry_after, .. } = &self {
            if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after.max(&1).to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        if matches!(self, Self::Unauthorized) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"nodetrust\""),
            );
        }
        resp
    }
}

/// JSON body extractor whose rejections are [`ApiError`]s.
///
/// A body sent as `Content-Type: application/json` is read with `serde_json` alone; only when
/// that fails is it read again through axum's `Json`, whose error names the field at fault
/// (`evidence.quote: invalid base64`). That path tracking costs on every field, and the bodies
/// that fail are few. Any other content type goes through axum's `Json` as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let read = if plain_json(req.headers()) {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e| json_rejection(e.into()))?;
            match serde_json::from_slice(&bytes) {
                Ok(v) => return Ok(Self(v)),
                Err(_) => Json::<T>::from_bytes(&bytes),
            }
        } else {
            Json::<T>::from_request(req, state).await
        };
        read.map(|Json(v)| Self(v)).map_err(json_rejection)
    }
}

/// Whether the content type is exactly `application/json`, as every client of this server
/// sends it; others (`application/json; charset=utf-8`, `application/x+json`) are left to
/// axum's parse of the media type.
fn plain_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json")
}

fn json_rejection(r: JsonRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::TooLarge;
    }
    match r {
        JsonRejection::JsonDataError(e) => ApiError::bad_request(
            "invalid_field",
            format!("invalid request: {}", e.body_text()),
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request("bad_json", format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("content_type", "expected Content-Type: application/json")
        }
        other => ApiError::bad_request("bad_body", other.body_text()),
    }
}

/// Query-string extractor whose rejections are [`ApiError`]s (400 `bad_query`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(r) => Err(ApiError::bad_request(
                "bad_query",
                format!("invalid query string: {}", r.body_text()),
            )),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
    struct Inner {
        n: u8,
    }

    async fn extract(content_type: Option<&str>, body: &str) -> Result<Outer, (String, String)> {
        let mut req = Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req
            .body(axum::body::Body::from(body.to_string()))
            .expect("request");
        match ApiJson::<Outer>::from_request(req, &()).await {
            Ok(ApiJson(v)) => Ok(v),
            Err(e) => Err((e.parts().1.to_string(), e.to_string())),
        }
    }

    #[tokio::test]
    async fn plain_json_bodies_read_as_axum_reads_them_with_the_same_errors() {
        let good = r#"{"name": "a", "inner": {"n": 7}}"#;
        let want = Outer {
            name: "a".into(),
            inner: Inner { n: 7 },
        };
        let bad = [
            // A value out of range deep in the body: the error names its path.
            r#"{"name": "a", "inner": {"n": 300}}"#,
            r#"{"name": "a", "inner": {"n": 1}, "colour": "red"}"#,
            r#"{"name": "a"}"#,
            r#"{"name": "a", "inner": {"n": 1}} trailing"#,
            r#"{"name": "a", "inner": {"n": "#,
            "",
        ];
        // `application/json` is read by serde_json alone, the same type with a parameter
        // through axum's Json: both give the same value and the same errors.
        for ct in ["application/json", "application/json; charset=utf-8"] {
            assert_eq!(extract(Some(ct), good).await, Ok(want.clone()), "{ct}");
        }
        for body in bad {
            let fast = extract(Some("application/json"), body).await;
            let axum = extract(Some("application/json; charset=utf-8"), body).await;
            assert!(fast.is_err(), "{body}");
            assert_eq!(fast, axum, "{body}");
        }
        let (reason, message) = extract(Some("application/json"), bad[0]).await.unwrap_err();
        assert_eq!(reason, "invalid_field");
        assert!(message.contains("inner.n"), "{message}");
        let (reason, _) = extract(Some("application/json"), bad[3]).await.unwrap_err();
        assert_eq!(reason, "bad_json");
        for ct in [None, Some("text/plain")] {
            let (reason, _) = extract(ct, good).await.unwrap_err();
            assert_eq!(reason, "content_type", "{ct:?}");
        }
    }
}
