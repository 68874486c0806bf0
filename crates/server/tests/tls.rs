//! Over real sockets: the server's TLS listener (the runbook's curl probe), and the agent
//! connector's HTTPS client with the agent certificate pinned.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use common::Harness;
use nodetrust_proto::agent::{QuoteRequest, QuoteResponse};
use nodetrust_server::agent_client::{AgentConnector, AgentError, AgentTarget, HttpsAgents};
use nodetrust_server::{run, tls};
use nodetrust_testkit::soft::SoftTpm;
use nodetrust_tpm_wire::{verify_quote, HashAlg, PcrValues};

/// Serves `app` with a self-signed certificate made in `dir`; returns the address, the
/// certificate's SHA-256, and a handle that stops the server when dropped.
async fn serve(
    app: Router,
    dir: &std::path::Path,
) -> (
    std::net::SocketAddr,
    String,
    tokio::sync::oneshot::Sender<()>,
) {
    let (certs, key) = tls::server_identity(None, None, dir).unwrap();
    let pin = tls::fingerprint(certs[0].as_ref());
    let config = tls::server_config(certs, key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(listener, config, app, async move {
        let _ = rx.await;
    }));
    (addr, pin, tx)
}

fn curl_status(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(args)
        .output()
        .expect("curl is installed");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn the_runbook_curl_probe_over_https() {
    let h = Harness::new().await;
    let (addr, _pin, _stop) = serve(h.app.clone(), h.dir.path()).await;
    let url = format!("https://{addr}/mtwilson/v2/tpm-endorsements");
    let probe = |creds: Option<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["-o", "/dev/null", "-s", "-L", "-k", "-w", "%{http_code}"];
            if let Some(c) = creds {
                args.extend(["-u", c]);
            }
            args.push(&url);
            curl_status(&args)
        })
    };
    assert_eq!(probe(Some("agent:agent-password")).await.unwrap(), "200");
    assert_eq!(probe(Some("agent:wrong")).await.unwrap(), "401");
    assert_eq!(probe(None).await.unwrap(), "401");
}

/// A fake agent over HTTPS whose quotes come from a software TPM.
fn agent_app(tpm: Arc<Mutex<SoftTpm>>, delay: Duration) -> Router {
    Router::new().route(
        "/v2/tpm/quote",
        post(move |Json(req): Json<QuoteRequest>| {
            let tpm = tpm.clone();
            async move {
                tokio::time::sleep(delay).await;
                let mut tpm = tpm.lock().unwrap();
                let sel = BTreeMap::from([(
                    HashAlg::Sha256,
                    req.pcrs.iter().copied().collect::<BTreeSet<u8>>(),
                )]);
                let q = tpm.quote(&req.nonce, &sel).unwrap();
                Json(QuoteResponse {
                    quote: q.attest,
                    signature: q.signature,
                    aik: Some(tpm.ak_public().tpm2b_bytes()),
                    pcrs: Some(nodetrust_proto::agent::Pcrs::from_value(q.pcrs.to_json()).unwrap()),
                    pcr_digest: None,
                    event_log: None,
                    event_log_sha256: None,
                    ima_log: None,
                })
            }
        }),
    )
}

#[tokio::test]
async fn agent_client_pins_the_agent_certificate_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Arc::new(Mutex::new(SoftTpm::new().unwrap()));
    let (addr, pin, _stop) = serve(agent_app(tpm.clone(), Duration::ZERO), dir.path()).await;
    let client = HttpsAgents::new(Duration::from_secs(5), Some(("ta".into(), "pw".into())));
    let req = QuoteRequest {
        nonce: vec![9; 32],
        pcrs: vec![0, 4, 7],
        pcrbanks: vec!["SHA256".into()],
        ima_offset: None,
        known_event_log_sha256: None,
        known_pcr_digest: None,
        known_aik_name: None,
    };
    let target = AgentTarget {
        host_name: "n".into(),
        url: format!("https://{addr}"),
        tls_cert_sha256: pin.clone(),
    };
    let resp = client.quote(&target, &req).await.unwrap();
    let pcrs = PcrValues::try_from(resp.pcrs.as_ref().unwrap().map().unwrap().as_ref()).unwrap();
    let ak = tpm.lock().unwrap().ak_public().clone();
    verify_quote(&ak, &resp.quote, &resp.signature, &pcrs, &[9; 32]).unwrap();
    // Another certificate than the pinned one: refused in the handshake.
    let wrong = AgentTarget {
        tls_cert_sha256: "00".repeat(32),
        ..target.clone()
    };
    let err = client.quote(&wrong, &req).await.unwrap_err();
    assert!(matches!(err, AgentError::Tls(_)), "{err:?}");
    assert!(err.is_unreachable());
    // Nothing listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let gone = AgentTarget {
        url: format!("https://{closed_addr}"),
        ..target.clone()
    };
    assert!(matches!(
        client.quote(&gone, &req).await.unwrap_err(),
        AgentError::Connect(_)
    ));
    // An agent that does not answer in time.
    let slow_dir = tempfile::tempdir().unwrap();
    let (slow_addr, slow_pin, _stop2) =
        serve(agent_app(tpm, Duration::from_secs(30)), slow_dir.path()).await;
    let quick = HttpsAgents::new(Duration::from_millis(300), None);
    let slow = AgentTarget {
        host_name: "s".into(),
        url: format!("https://{slow_addr}"),
        tls_cert_sha256: slow_pin,
    };
    assert!(matches!(
        quick.quote(&slow, &req).await.unwrap_err(),
        AgentError::Timeout(_)
    ));
}
