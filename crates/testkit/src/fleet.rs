//! A fleet simulator: N virtual agents served over HTTPS from one listener, for benchmarks and
//! scale tests of the Trust Server.
//!
//! Each virtual agent has its own [`SoftwareAttester`] (its own software EK and AK: real
//! `TPMS_ATTEST` bytes and ECDSA signatures, and answers to the MakeCredential challenge), a
//! measured boot replayed into its PCRs and the matching event log. Agent `i` answers the agent
//! API's `POST /v2/tpm/quote` at `https://127.0.0.1:PORT/agents/i`, behind one self-signed
//! certificate ([`Fleet::cert_sha256`] is its pin). The fleet runs on a runtime of its own whose
//! threads are named `fleet`, so a benchmark can tell its CPU from the server's.
//!
//! Software attesters are never trustworthy: a verifier must treat them as software TPMs.

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nodetrust_eventlog::build::LogBuilder;
use nodetrust_proto::agent::{HostInfo, QuoteRequest, QuoteResponse, MAX_REQUEST_BODY};
use nodetrust_proto::registration::RegisterRequest;
use nodetrust_tpm::{Attester, HashAlg, PcrSelection, SoftwareAttester};
use nodetrust_tpm_wire::pcr::BankSelection;

use crate::Result;

/// Threads of the fleet's runtime.
pub const FLEET_THREADS: usize = 2;

/// One measured-boot event: PCR, event type, what was measured, event data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEvent {
    /// PCR index.
    pub pcr: u32,
    /// TCG event type.
    pub event_type: u32,
    /// The bytes measured (hashed into the PCR).
    pub measured: Vec<u8>,
    /// The event data recorded in the log.
    pub data: Vec<u8>,
}

/// One virtual agent.
#[derive(Debug)]
pub struct VirtualAgent {
    /// Host name.
    pub host_name: String,
    /// Hardware UUID.
    pub hardware_uuid: String,
    /// Its software TPM.
    pub attester: SoftwareAttester,
    /// Its boot event log (crypto-agile, SHA-1 and SHA-256).
    pub event_log: Vec<u8>,
}

impl VirtualAgent {
    /// A new agent with fresh keys, booted through `boot`.
    pub fn new(host_name: &str, hardware_uuid: &str, boot: &[BootEvent]) -> Result<Self> {
        let attester = SoftwareAttester::generate().map_err(|e| e.to_string())?;
        let mut log = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
        for e in boot {
            log.measured(e.pcr, e.event_type, &e.measured, &e.data);
        }
        for e in log.events() {
            let pcr = u8::try_from(e.pcr).map_err(|_| format!("PCR {} out of range", e.pcr))?;
            for (bank, d) in &e.digests {
                attester.extend(*bank, pcr, d).map_err(|e| e.to_string())?;
            }
        }
        Ok(Self {
            host_name: host_name.into(),
            hardware_uuid: hardware_uuid.into(),
            attester,
            event_log: log.bytes(),
        })
    }

    /// Answers a quote request as the agent does.
    pub fn quote(&self, req: &QuoteRequest) -> Result<QuoteResponse> {
        let mut banks = Vec::new();
        for name in &req.pcrbanks {
            let hash = HashAlg::from_name(name).ok_or_else(|| format!("unknown bank {name}"))?;
            let mut pcrs = req.pcrs.clone();
            pcrs.sort_unstable();
            pcrs.dedup();
            banks.push(BankSelection { hash, pcrs });
        }
        let q = self
            .attester
            .quote(&req.nonce, &PcrSelection { banks })
            .map_err(|e| e.to_string())?;
        // As the agent does: the log is left out when the server holds it.
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.event_log)
            .as_ref()
            .to_vec();
        // And the PCR values.
        let pcr_digest = q.pcr_digest();
        let pcrs = match &pcr_digest {
            Some(digest) if req.holds_pcrs(digest) => None,
            _ => Some(
                nodetrust_proto::agent::Pcrs::from_value(q.pcrs.to_json())
                    .map_err(|e| e.to_string())?,
            ),
        };
        let aik = self.attester.ak_public().map_err(|e| e.to_string())?;
        let aik_name = nodetrust_tpm_wire::Public::from_tpm2b(&aik)
            .map_err(|e| e.to_string())?
            .name();
        Ok(QuoteResponse {
            quote: q.attest,
            signature: q.signature,
            aik: (!req.holds_aik(&aik_name)).then_some(aik),
            pcrs,
            pcr_digest,
            event_log: (!req.holds_event_log(&sha256)).then(|| self.event_log.clone()),
            event_log_sha256: Some(sha256),
            ima_log: None,
        })
    }
}

/// The fleet: its agents, where they answer, and its runtime.
#[derive(Debug)]
pub struct Fleet {
    agents: Arc<Vec<VirtualAgent>>,
    port: u16,
    cert_sha256: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fleet {
    /// Makes `n` agents named `{prefix}-{i}` (hardware UUID `{prefix}-uuid-{i}`), each booted
    /// through `boot`, and starts serving them on 127.0.0.1.
    pub fn start(prefix: &str, n: usize, boot: &[BootEvent]) -> Result<Self> {
        let agents: Vec<VirtualAgent> = (0..n)
            .map(|i| {
                VirtualAgent::new(
                    &format!("{prefix}-{i}"),
                    &format!("{prefix}-uuid-{i}"),
                    boot,
                )
            })
            .collect::<Result<_>>()?;
        let agents = Arc::new(agents);
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .map_err(|e| e.to_string())?;
        let der = cert.cert.der().to_vec();
        let cert_sha256 = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref());
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der())
            .map_err(|e| e.to_string())?;
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![der.into()], key)
        .map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(FLEET_THREADS)
            .thread_name("fleet")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = agents.clone();
        let thread = std::thread::Builder::new()
            .name("fleet-main".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = serve(listener, acceptor, served) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            agents,
            port,
            cert_sha256,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// How many agents.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Agent `i`.
    pub fn agent(&self, i: usize) -> Option<&VirtualAgent> {
        self.agents.get(i)
    }

    /// Agent `i`'s base URL.
    pub fn url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}/agents/{i}", self.port)
    }

    /// SHA-256 (hex) of the fleet's TLS certificate: the pin every agent registers.
    pub fn cert_sha256(&self) -> &str {
        &self.cert_sha256
    }

    /// Agent `i`'s registration request, as its agent would send it.
    pub fn register_request(&self, i: usize) -> Result<RegisterRequest> {
        let a = self.agent(i).ok_or("no such agent")?;
        Ok(RegisterRequest {
            host: HostInfo {
                host_name: a.host_name.clone(),
                hardware_uuid: a.hardware_uuid.clone(),
                os_name: "Debian GNU/Linux".into(),
                os_version: "12".into(),
                kernel_version: "6.1.0".into(),
                tpm_version: "2.0".into(),
                tpm_manufacturer: "NTSW".into(),
                tpm_firmware_version: "0.0.0.0".into(),
                pcr_banks: vec!["SHA1".into(), "SHA256".into()],
                measured_launch: false,
                secure_boot: Some(true),
                software_tpm: true,
                agent_version: "fleet".into(),
            },
            connection_url: self.url(i),
            tls_cert_sha256: self.cert_sha256.clone(),
            ek_public: a.attester.ek().map_err(|e| e.to_string())?.public,
            ek_certificate: None,
            aik: a.attester.ak_public().map_err(|e| e.to_string())?,
            mode: Default::default(),
        })
    }

    /// Agent `i` answers the registration's MakeCredential challenge (ActivateCredential).
    pub fn activate(&self, i: usize, blob: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>> {
        let a = self.agent(i).ok_or("no such agent")?;
        a.attester
            .activate_credential(blob, encrypted_secret)
            .map_err(|e| e.to_string())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    agents: Arc<Vec<VirtualAgent>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let agents = agents.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let agents = agents.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&agents, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `POST /agents/{i}/v2/tpm/quote`.
async fn answer(agents: &[VirtualAgent], req: Request<Incoming>) -> Response<Full<Bytes>> {
    let index = req
        .uri()
        .path()
        .strip_prefix("/agents/")
        .and_then(|rest| rest.strip_suffix("/v2/tpm/quote"))
        .and_then(|i| i.parse::<usize>().ok());
    let agent = index.and_then(|i| agents.get(i));
    let Some(agent) = agent.filter(|_| req.method() == hyper::Method::POST) else {
        return reply(StatusCode::NOT_FOUND, br#"{"error":"not found"}"#.to_vec());
    };
    let Ok(body) = Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    else {
        return reply(StatusCode::BAD_REQUEST, br#"{"error":"body"}"#.to_vec());
    };
    let quote = serde_json::from_slice::<QuoteRequest>(&body.to_bytes())
        .map_err(|e| e.to_string())
        .and_then(|q| agent.quote(&q).map_err(|e| e.to_string()));
    match quote.and_then(|r| serde_json::to_vec(&r).map_err(|e| e.to_string())) {
        Ok(bytes) => reply(StatusCode::OK, bytes),
        Err(e) => reply(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": e }).to_string().into_bytes(),
        ),
    }
}
