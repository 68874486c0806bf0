//! `/openapi.json`: every documented route exists, and the committed copy is current.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use common::{Auth, Harness};
use nodetrust_server::openapi::{document, ROUTES};

#[tokio::test]
async fn every_documented_route_is_served() {
    let h = Harness::new().await;
    for r in ROUTES {
        let path = r
            .path
            .replace("{id}", "x")
            .replace("{name}", "x")
            .replace("{challenge_id}", "x");
        let body = r.request.map(|_| serde_json::json!({}));
        let (s, v) = h
            .call(&r.method.to_uppercase(), &path, Auth::None, body)
            .await;
        let expected_unauth = !r.roles.is_empty();
        if expected_unauth {
            assert_eq!(s.as_u16(), 401, "{} {}: {v}", r.method, r.path);
        } else {
            assert_eq!(s.as_u16(), r.response.0, "{} {}: {v}", r.method, r.path);
        }
    }
    let (s, served) = h.call("GET", "/openapi.json", Auth::None, None).await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(served, document());
}

#[test]
fn committed_openapi_json_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let current = serde_json::to_string_pretty(&document()).unwrap() + "\n";
    if std::env::var_os("NODETRUST_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "crates/server/openapi.json is stale: run NODETRUST_UPDATE_OPENAPI=1 cargo test -p nodetrust-server --test openapi"
    );
}
