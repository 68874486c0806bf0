//! The shared HTTPS client and accept loop against each other over loopback TCP: pinned trust,
//! the answer size limit, connection reuse by address and trust key, the connection cap, the
//! handshake and idle timeouts, and graceful shutdown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use nodetrust_tls::client::{
    client_config, Call, ClientLimits, HttpsClient, HttpsError, PoolLimits, Target,
};
use nodetrust_tls::identity::{load_or_generate, SelfSigned};
use nodetrust_tls::serve::{serve, Closing, ServeLimits};
use nodetrust_tls::{provider, BaseUrl, ServerVerifier};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A running test server.
struct Server {
    addr: SocketAddr,
    pin: [u8; 32],
    connections: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn base(&self) -> BaseUrl {
        BaseUrl::parse(&format!("https://{}", self.addr)).unwrap()
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        client_config(Arc::new(ServerVerifier::new(self.pin))).unwrap()
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .expect("the accept loop ends after shutdown")
            .unwrap();
    }
}

/// `/big/N` answers N bytes, `/slow` answers after 500 ms, `/closing` answers once the server
/// begins its shutdown, anything else answers `{"path": ...}`.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap();
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"\"slow\""))));
    }
    if path == "/closing" {
        let closing = req.extensions().get::<Closing>().cloned().unwrap();
        closing.closed().await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"\"closing\""))));
    }
    let body = serde_json::to_vec(&serde_json::json!({ "path": path })).unwrap();
    Ok(Response::new(Full::new(Bytes::from(body))))
}

async fn start(limits: ServeLimits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let id = load_or_generate(
        None,
        &SelfSigned {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            names: &names,
        },
    )
    .unwrap();
    let pin: [u8; 32] = hex::decode(&id.fingerprint).unwrap().try_into().unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(id.certs, id.key)
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(serve(
        listener,
        config,
        move |_peer| {
            counted.fetch_add(1, Ordering::SeqCst);
            tower::service_fn(handle)
        },
        async move {
            let _ = rx.await;
        },
        limits,
    ));
    Server {
        addr,
        pin,
        connections,
        stop: Some(stop),
        done,
        _dir: dir,
    }
}

fn limits() -> ServeLimits {
    ServeLimits::new(16, Duration::from_secs(30))
}

fn client() -> HttpsClient {
    HttpsClient::new(ClientLimits::new(Duration::from_secs(10), 1 << 20))
}

/// Reads until the peer closes (`true`) or `wait` passes (`false`).
async fn closed_within(stream: &mut (impl tokio::io::AsyncRead + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, read_to_end).await.is_ok()
}

async fn tls_connect(server: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(server.config())
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn json_call_with_the_pinned_certificate_and_refusal_of_another() {
    let server = start(limits()).await;
    let base = server.base();
    let config = server.config();
    let target = Target {
        base: &base,
        config: &config,
        trust_key: "pin",
    };
    let call = Call::json(Method::POST, "/hello", &serde_json::json!({"a": 1}))
        .unwrap()
        .basic_auth("u", "p")
        .unwrap();
    let answer = client().send(&target, &call).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let body: serde_json::Value = answer.json().unwrap();
    assert_eq!(body["path"], "/hello");

    let other = client_config(Arc::new(ServerVerifier::new([7; 32]))).unwrap();
    let wrong = Target {
        base: &base,
        config: &other,
        trust_key: "other",
    };
    let err = client()
        .send(&wrong, &Call::new(Method::GET, "/"))
        .await
        .unwrap_err();
    assert!(err.rejection().is_some(), "{err:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn answer_larger_than_the_limit_is_refused() {
    let server = start(limits()).await;
    let base = server.base();
    let config = server.config();
    let target = Target {
        base: &base,
        config: &config,
        trust_key: "pin",
    };
    let small = HttpsClient::new(ClientLimits::new(Duration::from_secs(10), 1024));
    let at_limit = small
        .send(&target, &Call::new(Method::GET, "/big/1024"))
        .await
        .unwrap();
    assert_eq!(at_limit.body.len(), 1024);
    let err = small
        .send(&target, &Call::new(Method::GET, "/big/1025"))
        .await
        .unwrap_err();
    assert!(matches!(err, HttpsError::TooLarge(1024)), "{err:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn request_timeout_bounds_a_slow_answer() {
    let server = start(limits()).await;
    let base = server.base();
    let config = server.config();
    let target = Target {
        base: &base,
        config: &config,
        trust_key: "pin",
    };
    let quick = HttpsClient::new(ClientLimits::new(Duration::from_millis(100), 1024));
    let err = quick
        .send(&target, &Call::new(Method::GET, "/slow"))
        .await
        .unwrap_err();
    assert!(matches!(err, HttpsError::Timeout(_)), "{err:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn pooled_client_reuses_connections_per_address_and_trust_key() {
    let server = start(limits()).await;
    let base = server.base();
    let config = server.config();
    let pool = PoolLimits {
        per_key: 4,
        total: 16,
        idle_for: Duration::from_secs(60),
    };
    let pooled = HttpsClient::pooled(ClientLimits::new(Duration::from_secs(10), 1 << 20), pool);
    let target = Target {
        base: &base,
        config: &config,
        trust_key: "a",
    };
    for _ in 0..3 {
        let a = pooled
            .send(&target, &Call::new(Method::GET, "/x"))
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "one connection reused"
    );
    // Another trust key: never the connection opened under the first.
    let other = Target {
        trust_key: "b",
        ..target
    };
    pooled
        .send(&other, &Call::new(Method::GET, "/x"))
        .await
        .unwrap();
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    // Without a pool, one connection per call.
    client()
        .send(&target, &Call::new(Method::GET, "/x"))
        .await
        .unwrap();
    client()
        .send(&target, &Call::new(Method::GET, "/x"))
        .await
        .unwrap();
    assert_eq!(server.connections.load(Ordering::SeqCst), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn pooled_client_retries_a_connection_the_server_closed() {
    let server = start(ServeLimits::new(16, Duration::from_millis(200))).await;
    let base = server.base();
    let config = server.config();
    let pool = PoolLimits {
        per_key: 4,
        total: 16,
        idle_for: Duration::from_secs(60),
    };
    let pooled = HttpsClient::pooled(ClientLimits::new(Duration::from_secs(10), 1 << 20), pool);
    let target = Target {
        base: &base,
        config: &config,
        trust_key: "a",
    };
    pooled
        .send(&target, &Call::new(Method::GET, "/x"))
        .await
        .unwrap();
    // The server's idle timeout closes the kept connection; the next call still succeeds.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let a = pooled
        .send(&target, &Call::new(Method::GET, "/y"))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_until_slots_free() {
    let server = start(ServeLimits::new(2, Duration::from_secs(30))).await;
    // Two connections that never finish TLS take both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // Wait until the loop has accepted both (each makes its service).
    for _ in 0..100 {
        if server.connections.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    let mut extra = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(5)).await,
        "a connection beyond the cap is closed, not held"
    );
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        2,
        "the connection beyond the cap got no service"
    );
    // The held connections are still open: the cap closed only the new one.
    assert!(!closed_within(&mut held[0], Duration::from_millis(200)).await);
    drop(held);
    let base = server.base();
    let config = server.config();
    let target = Target {
        base: &base,
        config: &config,
        trust_key: "pin",
    };
    let mut served = false;
    for _ in 0..100 {
        if client()
            .send(&target, &Call::new(Method::GET, "/"))
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "slots come back when the flood stops");
    server.shutdown().await;
}

#[tokio::test]
async fn handshake_timeout_closes_a_silent_connection() {
    let mut limits = ServeLimits::new(16, Duration::from_secs(60));
    limits.handshake_timeout = Duration::from_millis(200);
    let server = start(limits).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    server.shutdown().await;

    // The same silent connection is held while the handshake timeout has not passed.
    let mut patient = ServeLimits::new(16, Duration::from_secs(60));
    patient.handshake_timeout = Duration::from_secs(60);
    let server = start(patient).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(!closed_within(&mut silent, Duration::from_secs(1)).await);
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = start(ServeLimits::new(16, Duration::from_millis(300))).await;
    // After the handshake, no request at all.
    let mut quiet = tls_connect(&server).await;
    assert!(closed_within(&mut quiet, Duration::from_secs(10)).await);
    // A header dribbled and never finished.
    let mut dribble = tls_connect(&server).await;
    dribble
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    dribble.flush().await.unwrap();
    assert!(closed_within(&mut dribble, Duration::from_secs(10)).await);
    // Kept alive after an answer, then idle.
    let mut kept = tls_connect(&server).await;
    kept.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    kept.flush().await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "answered first");
    assert!(closed_within(&mut kept, Duration::from_secs(10)).await);
    server.shutdown().await;

    // With a long idle timeout the same connection stays open.
    let server = start(ServeLimits::new(16, Duration::from_secs(60))).await;
    let mut quiet = tls_connect(&server).await;
    assert!(!closed_within(&mut quiet, Duration::from_secs(1)).await);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_requests_finish_and_ends_endless_ones() {
    let server = start(limits()).await;
    let base = server.base();
    let config = server.config();
    let slow = {
        let (base, config) = (base.clone(), Arc::clone(&config));
        tokio::spawn(async move {
            let target = Target {
                base: &base,
                config: &config,
                trust_key: "pin",
            };
            client()
                .send(&target, &Call::new(Method::GET, "/slow"))
                .await
        })
    };
    let endless = {
        let (base, config) = (base.clone(), Arc::clone(&config));
        tokio::spawn(async move {
            let target = Target {
                base: &base,
                config: &config,
                trust_key: "pin",
            };
            client()
                .send(&target, &Call::new(Method::GET, "/closing"))
                .await
        })
    };
    // Both requests are in flight.
    for _ in 0..100 {
        if server.connections.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = server.addr;
    server.shutdown().await;
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(&slow.body[..], b"\"slow\"");
    let endless = endless.await.unwrap().unwrap();
    assert_eq!(&endless.body[..], b"\"closing\"");
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
