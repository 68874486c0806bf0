//! The whole router ([`app`]): the JSON API ([`crate::api::routes`]), the OpenAPI document that
//! describes it ([`crate::openapi`], at `/openapi.json`), the fleet view ([`crate::ui`]), the
//! JSON fallbacks for unknown paths and methods, and the body limit. The top of the crate's
//! modules: nothing below refers to it.

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};

use crate::error::ApiError;
use crate::state::AppState;

/// The router, with every route and the body limit.
pub fn app(state: AppState) -> Router {
    let max_body = state.settings.max_body;
    crate::api::routes()
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .merge(crate::ui::router())
        .fallback(|| async { ApiError::NotFound("no such resource".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}
