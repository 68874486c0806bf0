//! The agent's half of registration against a minimal in-test Trust Server that speaks
//! `nodetrust_proto::registration` and makes its challenge with tpm-wire's MakeCredential:
//! the agent waits (with backoff) until the server appears, registers, proves its AK with the
//! swtpm's ActivateCredential, and reports its start. TLS trust by SHA-256 pin and by CA file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use nodetrust_agent::client::Client;
use nodetrust_agent::config::{Credentials, ServerTrust};
use nodetrust_agent::register::{self, Backoff, Registration};
use nodetrust_agent::{host, tls};
use nodetrust_proto::registration::{
    ActivateRequest, AgentStarted, RegisterChallenge, RegisterRequest, RegisterResult,
};
use nodetrust_testkit::Swtpm;
use nodetrust_tpm::{AkAlgorithm, Attester};
use nodetrust_tpm_wire::credential::make_credential;
use nodetrust_tpm_wire::verify::check_ak_attributes;
use nodetrust_tpm_wire::Public;
use rustls::pki_types::pem::PemObject as _;

#[derive(Default)]
struct Fake {
    pending: HashMap<String, (Vec<u8>, RegisterRequest)>,
    registered: Vec<String>,
    started: Vec<AgentStarted>,
    refused_activations: usize,
}

type Shared = Arc<Mutex<Fake>>;

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok())
        == Some(common::basic("agent", "agent-pw").as_str())
}

async fn register_host(
    State(s): State<Shared>,
    h: HeaderMap,
    Json(req): Json<RegisterRequest>,
) -> Result<Json<RegisterChallenge>, StatusCode> {
    if !authorized(&h) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let ek = Public::from_tpm2b(&req.ek_public).map_err(|_| StatusCode::BAD_REQUEST)?;
    let ak = Public::from_tpm2b(&req.aik).map_err(|_| StatusCode::BAD_REQUEST)?;
    check_ak_attributes(&ak).map_err(|_| StatusCode::BAD_REQUEST)?;
    let mut secret = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).unwrap();
    let c = make_credential(&ek, &ak.name(), &secret).map_err(|_| StatusCode::BAD_REQUEST)?;
    let mut st = s.lock().unwrap();
    let id = format!("c{}", st.pending.len() + 1);
    st.pending.insert(id.clone(), (secret, req));
    Ok(Json(RegisterChallenge {
        challenge_id: id,
        credential_blob: c.blob,
        encrypted_secret: c.encrypted_secret,
    }))
}

async fn activate(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<ActivateRequest>,
) -> Result<Json<RegisterResult>, StatusCode> {
    if !authorized(&h) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let mut st = s.lock().unwrap();
    let (secret, reg) = st.pending.remove(&id).ok_or(StatusCode::NOT_FOUND)?;
    if secret != req.secret {
        st.refused_activations += 1;
        return Err(StatusCode::FORBIDDEN);
    }
    st.registered.push(reg.host.hardware_uuid.clone());
    Ok(Json(RegisterResult {
        host_name: reg.host.host_name,
        hardware_uuid: reg.host.hardware_uuid,
        replaced: false,
    }))
}

async fn started(
    State(s): State<Shared>,
    h: HeaderMap,
    Json(ev): Json<AgentStarted>,
) -> StatusCode {
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    s.lock().unwrap().started.push(ev);
    StatusCode::NO_CONTENT
}

fn fake_app(s: Shared) -> Router {
    Router::new()
        .route("/mtwilson/v2/hosts/register", post(register_host))
        .route("/mtwilson/v2/hosts/register/{id}/activate", post(activate))
        .route("/mtwilson/v2/agent-events", post(started))
        .with_state(s)
}

struct Pki {
    ca_pem: String,
    leaf: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes())
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf: leaf.der().to_vec(),
        server: Arc::new(server),
    }
}

/// A free loopback port below the kernel's ephemeral range ([`nodetrust_testkit::free_port`]).
fn free_port() -> u16 {
    nodetrust_testkit::free_port().unwrap()
}

fn registration(attester: &Arc<dyn Attester>, port: u16) -> Registration {
    let facts = attester.facts().unwrap();
    Registration {
        host: host::gather(
            Some("node-7"),
            Some("11111111-2222-3333-4444-555555555555"),
            &facts,
        ),
        connection_url: format!("https://127.0.0.1:{port}"),
        tls_cert_sha256: "00".repeat(32),
        mode: Default::default(),
    }
}

async fn serve(port: u16, pki: &Pki, fake: Shared) -> tokio::sync::oneshot::Sender<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = Arc::clone(&pki.server);
    tokio::spawn(nodetrust_agent::server::run(
        listener,
        config,
        fake_app(fake),
        async {
            let _ = rx.await;
        },
    ));
    tx
}

fn creds() -> Credentials {
    Credentials {
        username: "agent".into(),
        password: "agent-pw".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_waits_for_the_server_then_proves_the_ak() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attester = common::open(&tpm, dir.path(), AkAlgorithm::EccP256);
    let pki = pki();
    let port = free_port();
    let pin = nodetrust_agent::config::parse_pin(&tls::fingerprint(&pki.leaf)).unwrap();
    let client = Client::new(
        &format!("https://127.0.0.1:{port}"),
        tls::client_config(&ServerTrust::Pin(pin)).unwrap(),
        &creds(),
    )
    .unwrap();
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
    };
    let task = tokio::spawn(register::run(
        client,
        Arc::clone(&attester),
        registration(&attester, 1443),
        backoff,
    ));

    // No server yet: the agent keeps trying.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !task.is_finished(),
        "registration cannot finish without a server"
    );

    let fake: Shared = Arc::default();
    let _stop = serve(port, &pki, Arc::clone(&fake)).await;
    let result = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("registered once the server appeared")
        .unwrap();
    assert_eq!(result.host_name, "node-7");
    assert_eq!(result.hardware_uuid, "11111111-2222-3333-4444-555555555555");
    let st = fake.lock().unwrap();
    assert_eq!(
        st.registered,
        vec!["11111111-2222-3333-4444-555555555555".to_string()]
    );
    assert_eq!(st.refused_activations, 0);
    assert_eq!(st.started.len(), 1, "the agent reported its start");
    assert_eq!(st.started[0].host_name, "node-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_trusts_a_ca_file_and_refuses_a_wrong_pin() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attester = common::open(&tpm, &dir.path().join("state"), AkAlgorithm::EccP256);
    let pki = pki();
    let port = free_port();
    let fake: Shared = Arc::default();
    let _stop = serve(port, &pki, Arc::clone(&fake)).await;
    let url = format!("https://127.0.0.1:{port}");

    // A wrong pin: TLS fails, nothing reaches the server.
    let wrong = Client::new(
        &url,
        tls::client_config(&ServerTrust::Pin([0u8; 32])).unwrap(),
        &creds(),
    )
    .unwrap();
    let e = register::register_once(&wrong, &attester, &registration(&attester, 1443))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("server certificate not trusted: "),
        "{e}"
    );
    assert!(fake.lock().unwrap().pending.is_empty());

    // Wrong account: 401, said so.
    let bad_creds = Credentials {
        username: "agent".into(),
        password: "nope".into(),
    };
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let trust = tls::client_config(&ServerTrust::Ca(ca.clone())).unwrap();
    let unauthorized = Client::new(&url, Arc::clone(&trust), &bad_creds).unwrap();
    let e = register::register_once(&unauthorized, &attester, &registration(&attester, 1443))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");

    // The CA file.
    let client = Client::new(&url, trust, &creds()).unwrap();
    let r = register::register_once(&client, &attester, &registration(&attester, 1443))
        .await
        .unwrap();
    assert_eq!(r.host_name, "node-7");
}
