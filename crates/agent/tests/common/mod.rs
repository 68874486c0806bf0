//! Helpers shared by the agent's integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "shared test helpers: not every test uses each; a panic is a failed test"
)]

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use nodetrust_agent::api::{app, AppState};
use nodetrust_agent::config::Credentials;
use nodetrust_agent::host;
use nodetrust_testkit::Swtpm;
use nodetrust_tpm::{AkAlgorithm, Attester, TssAttester, TssConfig};
use tower::ServiceExt as _;

pub const USER: &str = "tagentadmin";
pub const PASSWORD: &str = "correct horse";

pub fn admin() -> Credentials {
    Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    }
}

pub fn open(tpm: &Swtpm, state: &Path, alg: AkAlgorithm) -> Arc<dyn Attester> {
    let mut cfg = TssConfig::new(tpm.tcti(), state);
    cfg.ak_algorithm = alg;
    Arc::new(TssAttester::open(cfg).unwrap())
}

pub fn state(attester: Arc<dyn Attester>, eventlog: &Path, ima: &Path) -> AppState {
    let facts = attester.facts().unwrap();
    let host = host::gather(
        Some("node-1"),
        Some("4c4c4544-0000-1111-2222-333344445555"),
        &facts,
    );
    AppState::new(
        attester,
        host,
        admin(),
        eventlog.to_path_buf(),
        ima.to_path_buf(),
    )
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Sends a request through the router; returns status and JSON body.
pub async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req = req
        .header("content-type", "application/json")
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, json)
}

pub async fn get(state: &AppState, path: &str) -> (StatusCode, serde_json::Value) {
    call(state, "GET", path, Some(&basic(USER, PASSWORD)), None).await
}

pub async fn post(
    state: &AppState,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    call(
        state,
        "POST",
        path,
        Some(&basic(USER, PASSWORD)),
        Some(serde_json::to_vec(&body).unwrap()),
    )
    .await
}
