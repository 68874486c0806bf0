//! Who is calling: the [`Caller`] extractor (HTTP basic authentication, run on the request
//! head before any body is read, so an unauthenticated request is a 401 whatever its body) and
//! the role-checking extractors [`AdminCaller`] and [`AgentCaller`] that handlers of
//! [`crate::api`], [`crate::users`], [`crate::push`] and [`crate::ui`] take.

use axum::extract::ConnectInfo;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// Authentication runs as an extractor on the request head, before any body is read: an
/// unauthenticated request is a 401 whatever its body.
impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        state
            .auth
            .authenticate(&state.store, &state.metrics, &parts.headers, peer)
            .await
    }
}

/// A caller with the `admin` role, checked before the body is read.
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Caller);

impl axum::extract::FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let c = Caller::from_request_parts(parts, state).await?;
        c.require(ADMIN)?;
        Ok(Self(c))
    }
}

/// A caller with the `agent` (or `admin`) role, checked before the body is read.
#[derive(Debug, Clone)]
pub struct AgentCaller(pub Caller);

impl axum::extract::FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let c = Caller::from_request_parts(parts, state).await?;
        c.require(AGENTS)?;
        Ok(Self(c))
    }
}

/// The roles that read (hosts, flavors, reports).
pub(crate) const READERS: &[Role] = &[Role::Admin, Role::Reader];
/// The role that administers.
pub(crate) const ADMIN: &[Role] = &[Role::Admin];
/// The roles an agent's requests may come with.
pub(crate) const AGENTS: &[Role] = &[Role::Agent, Role::Admin];
