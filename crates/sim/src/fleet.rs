//! The virtual agents: each a [`SoftwareAttester`] (its own EK, with a certificate from the
//! simulator's CA, and its own AK), booted through the same measured boot, and served over one
//! HTTPS listener: agent `i` answers the agent API's `POST /v2/tpm/quote` at
//! `https://ADDR/agents/i`, behind one self-signed certificate (the pin every agent registers).
//!
//! Software attesters are never trustworthy: a verifier treats them as software TPMs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nodetrust_eventlog::build::{image_load_event, LogBuilder};
use nodetrust_eventlog::{types, EventLog};
use nodetrust_proto::agent::{HostInfo, QuoteRequest, QuoteResponse, MAX_REQUEST_BODY};
use nodetrust_proto::push::AgentMode;
use nodetrust_proto::registration::RegisterRequest;
use nodetrust_tpm::{Attester, HashAlg, PcrSelection, SoftwareAttester};
use nodetrust_tpm_wire::pcr::BankSelection;

use crate::ca::SimCa;

/// The AK every virtual agent gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AkKind {
    /// ECDSA P-256, SHA-256 (one fresh key per agent).
    Ecc,
    /// RSA-2048, RSASSA-SHA256 (keys shared among agents: RSA keys take long to generate).
    Rsa,
}

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

/// A plain boot: firmware, separators, shim and `grub`, the kernel command line, kernel and
/// initrd.
pub fn gold_boot(grub: &str) -> Vec<BootEvent> {
    let app = |pcr: u32, path: &str, image: &str| BootEvent {
        pcr,
        event_type: types::EV_EFI_BOOT_SERVICES_APPLICATION,
        measured: image.as_bytes().to_vec(),
        data: image_load_event(path, image.len() as u64),
    };
    let ipl = |pcr: u32, text: &str| BootEvent {
        pcr,
        event_type: types::EV_IPL,
        measured: text.as_bytes().to_vec(),
        data: text.as_bytes().to_vec(),
    };
    let mut v = vec![BootEvent {
        pcr: 0,
        event_type: types::EV_POST_CODE,
        measured: b"firmware v1".to_vec(),
        data: b"POST CODE".to_vec(),
    }];
    for pcr in 0..8 {
        v.push(BootEvent {
            pcr,
            event_type: types::EV_SEPARATOR,
            measured: vec![0; 4],
            data: vec![0; 4],
        });
    }
    v.push(app(4, "\\EFI\\BOOT\\shimx64.efi", "shim 15.7"));
    v.push(app(4, "\\EFI\\debian\\grubx64.efi", grub));
    v.push(ipl(8, "grub_cmd: set root=hd0,gpt2"));
    v.push(ipl(8, "kernel_cmdline: /vmlinuz-6.1 root=/dev/sda2 ro"));
    v.push(ipl(9, "/boot/vmlinuz-6.1"));
    v.push(ipl(9, "/boot/initrd.img-6.1"));
    v
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
}

/// The fleet's agents and what they share: the boot log, the listener's address and pin.
#[derive(Debug)]
pub struct Fleet {
    /// The agents; agent `i` answers at `/agents/i`.
    pub agents: Vec<VirtualAgent>,
    /// The boot event log every agent measured (crypto-agile, SHA-1 and SHA-256).
    pub event_log: Vec<u8>,
    /// Its SHA-256: the log is left out of a quote's answer when the server holds it
    /// ([`QuoteRequest::holds_event_log`]), as the agent does.
    pub event_log_sha256: Vec<u8>,
    /// Base URL the server reaches the listener at (`https://127.0.0.1:PORT`).
    pub base_url: String,
    /// SHA-256 (hex) of the listener's certificate.
    pub cert_sha256: String,
    /// Quotes answered so far (over the listener, for pull hosts).
    pub served: AtomicU64,
    /// How the hosts register; agent 0 is always a pull host (the gold host the flavor is
    /// imported from).
    pub mode: AgentMode,
}

/// How to make a fleet.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Host names are `{prefix}-{i}`, hardware UUIDs `{prefix}-uuid-{i}`.
    pub prefix: String,
    /// How many agents.
    pub hosts: usize,
    /// The AK kind.
    pub ak: AkKind,
    /// How many RSA keys the agents share with `--ak rsa`.
    pub rsa_keys: usize,
    /// The boot every agent measures.
    pub boot: Boot,
}

/// The boot every agent of a fleet measures.
#[derive(Debug, Clone)]
pub enum Boot {
    /// Events written into a new crypto-agile log (SHA-1 and SHA-256), e.g. [`gold_boot`].
    Events(Vec<BootEvent>),
    /// A binary TCG log captured from a machine (`--boot-log`), extended as it is into the
    /// software TPM's SHA-1 and SHA-256 banks (it has no others).
    Log(Vec<u8>),
}

/// A log's extends into the software TPM, in log order: each event's SHA-1 and SHA-256
/// digests (other banks are skipped: the software TPM has none). A log whose replay starts
/// PCR 0 at a locality other than 0 (a StartupLocality or H-CRTM event) is refused: the
/// software TPM starts every PCR from its reset value.
pub fn log_extends(bytes: &[u8]) -> Result<Vec<(HashAlg, u8, Vec<u8>)>> {
    let log = EventLog::parse(bytes).map_err(|e| anyhow!("the boot log is unreadable: {e}"))?;
    let mut extends = Vec::new();
    for ev in log.measurements() {
        let locality = match ev.event_type {
            types::EV_EFI_HCRTM_EVENT => Some(4),
            types::EV_NO_ACTION => ev.startup_locality(),
            _ => None,
        };
        if ev.pcr == 0 && locality.is_some_and(|l| l != 0) {
            return Err(anyhow!(
                "the boot log starts PCR 0 at locality {} (a StartupLocality or H-CRTM event); the software TPM cannot",
                locality.unwrap_or_default()
            ));
        }
        if !ev.extends() {
            continue;
        }
        let pcr = u8::try_from(ev.pcr)
            .ok()
            .filter(|p| *p < 24)
            .ok_or_else(|| anyhow!("the boot log extends PCR {}", ev.pcr))?;
        for d in ev.digests.iter() {
            if let Some(bank @ (HashAlg::Sha1 | HashAlg::Sha256)) = d.hash() {
                extends.push((bank, pcr, d.bytes.to_vec()));
            }
        }
    }
    if extends.is_empty() {
        return Err(anyhow!("the boot log has no SHA-1 or SHA-256 measurement"));
    }
    Ok(extends)
}

/// Makes the agents of `spec` on every core, each EK certified by `ca`. Returns the agents and
/// the boot log.
pub fn make_agents(spec: &FleetSpec, ca: &SimCa) -> Result<(Vec<VirtualAgent>, Vec<u8>)> {
    let (log_bytes, extends) = match &spec.boot {
        Boot::Events(events) => {
            let mut log = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
            for e in events {
                log.measured(e.pcr, e.event_type, &e.measured, &e.data);
            }
            let mut extends: Vec<(HashAlg, u8, Vec<u8>)> = Vec::new();
            for e in log.events() {
                let pcr = u8::try_from(e.pcr).map_err(|_| anyhow!("PCR {} out of range", e.pcr))?;
                for (bank, d) in &e.digests {
                    extends.push((*bank, pcr, d.clone()));
                }
            }
            (log.bytes(), extends)
        }
        Boot::Log(bytes) => (bytes.clone(), log_extends(bytes)?),
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 16);
    let rsa: Vec<Arc<aws_lc_rs::signature::RsaKeyPair>> = if spec.ak == AkKind::Rsa {
        let want = spec.rsa_keys.clamp(1, spec.hosts.max(1));
        let made: Vec<Result<Vec<_>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t..want)
                            .step_by(threads)
                            .map(|_| {
                                aws_lc_rs::signature::RsaKeyPair::generate(
                                    aws_lc_rs::rsa::KeySize::Rsa2048,
                                )
                                .map(Arc::new)
                                .map_err(|_| anyhow!("RSA key generation failed"))
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow!("key thread failed"))?)
                .collect()
        });
        made.into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect()
    } else {
        Vec::new()
    };
    let make = |i: usize| -> Result<VirtualAgent> {
        let mut attester = match rsa.get(i % rsa.len().max(1)) {
            Some(key) if spec.ak == AkKind::Rsa => {
                SoftwareAttester::generate_with_rsa_ak(key.clone())?
            }
            _ => SoftwareAttester::generate()?,
        };
        for (bank, pcr, d) in &extends {
            attester.extend(*bank, *pcr, d)?;
        }
        let cert = ca.issue_ek(&attester.ek_point()?, i as u64)?;
        attester.set_ek_certificate(cert);
        Ok(VirtualAgent {
            host_name: format!("{}-{i}", spec.prefix),
            hardware_uuid: format!("{}-uuid-{i}", spec.prefix),
            attester,
        })
    };
    let chunks: Vec<Result<Vec<VirtualAgent>>> = std::thread::scope(|s| {
        let per = spec.hosts.div_ceil(threads);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let make = &make;
                s.spawn(move || {
                    let start = (t * per).min(spec.hosts);
                    let end = ((t + 1) * per).min(spec.hosts);
                    (start..end).map(make).collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("agent thread failed"))?)
            .collect()
    });
    let mut agents = Vec::with_capacity(spec.hosts);
    for c in chunks {
        agents.extend(c?);
    }
    Ok((agents, log_bytes))
}

impl Fleet {
    /// Agent `i`'s registration request, as its agent would send it.
    pub fn register_request(&self, i: usize) -> Result<RegisterRequest> {
        let a = self.agents.get(i).ok_or_else(|| anyhow!("no agent {i}"))?;
        let ek = a.attester.ek()?;
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
                agent_version: concat!("nodetrust-sim/", env!("CARGO_PKG_VERSION")).into(),
            },
            connection_url: format!("{}/agents/{i}", self.base_url),
            tls_cert_sha256: self.cert_sha256.clone(),
            ek_public: ek.public,
            ek_certificate: ek.certificate,
            aik: a.attester.ak_public()?,
            mode: if i == 0 { AgentMode::Pull } else { self.mode },
        })
    }

    /// Agent `i` answers a quote request as the agent does.
    pub fn quote(&self, i: usize, req: &QuoteRequest) -> Result<QuoteResponse> {
        let a = self.agents.get(i).ok_or_else(|| anyhow!("no agent {i}"))?;
        let mut banks = Vec::new();
        for name in &req.pcrbanks {
            let hash = HashAlg::from_name(name).ok_or_else(|| anyhow!("unknown bank {name}"))?;
            let mut pcrs = req.pcrs.clone();
            pcrs.sort_unstable();
            pcrs.dedup();
            banks.push(BankSelection { hash, pcrs });
        }
        let q = a.attester.quote(&req.nonce, &PcrSelection { banks })?;
        // As the agent does: the values are left out when the server holds them.
        let pcr_digest = q.pcr_digest();
        let pcrs = match &pcr_digest {
            Some(digest) if req.holds_pcrs(digest) => None,
            _ => Some(nodetrust_proto::agent::Pcrs::from_value(q.pcrs.to_json())?),
        };
        let aik = a.attester.ak_public()?;
        let aik_name = nodetrust_tpm_wire::Public::from_tpm2b(&aik)?.name();
        Ok(QuoteResponse {
            quote: q.attest,
            signature: q.signature,
            aik: (!req.holds_aik(&aik_name)).then_some(aik),
            pcrs,
            pcr_digest,
            event_log: (!req.holds_event_log(&self.event_log_sha256))
                .then(|| self.event_log.clone()),
            event_log_sha256: Some(self.event_log_sha256.clone()),
            ima_log: None,
        })
    }
}

/// The listener's TLS: a fresh self-signed certificate for `host`; its SHA-256 pin.
pub fn listener_tls(host: &str) -> Result<(tokio_rustls::TlsAcceptor, String)> {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_string()])
        .map_err(|e| anyhow!("listener certificate: {e}"))?;
    let der = cert.cert.der().to_vec();
    let pin = nodetrust_tls::fingerprint(&der);
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der())
        .map_err(|e| anyhow!("listener key: {e}"))?;
    let tls = rustls::ServerConfig::builder_with_provider(nodetrust_tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der.into()], key)?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(tls)), pin))
}

/// Serves the fleet's quotes on `listener` until the task is dropped. With `authorization`
/// (`Basic ...`, from `TRUSTAGENT_ADMIN_*`), requests without it are answered 401, as the
/// agent does.
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    fleet: Arc<Fleet>,
    authorization: Option<Arc<str>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let fleet = fleet.clone();
        let authorization = authorization.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let fleet = fleet.clone();
                let authorization = authorization.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        answer(&fleet, authorization.as_deref(), req).await,
                    )
                }
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

/// Equality that takes the same time wherever the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /agents/{i}/v2/tpm/quote`.
async fn answer(
    fleet: &Fleet,
    authorization: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let index = req
        .uri()
        .path()
        .strip_prefix("/agents/")
        .and_then(|rest| rest.strip_suffix("/v2/tpm/quote"))
        .and_then(|i| i.parse::<usize>().ok())
        .filter(|i| *i < fleet.agents.len());
    let Some(index) = index.filter(|_| req.method() == hyper::Method::POST) else {
        return reply(StatusCode::NOT_FOUND, br#"{"error":"not found"}"#.to_vec());
    };
    if let Some(expected) = authorization {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same(given, expected.as_bytes()) {
            return reply(
                StatusCode::UNAUTHORIZED,
                br#"{"error":"authentication required","reason":"unauthorized"}"#.to_vec(),
            );
        }
    }
    let Ok(body) = Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    else {
        return reply(StatusCode::BAD_REQUEST, br#"{"error":"body"}"#.to_vec());
    };
    let quote = serde_json::from_slice::<QuoteRequest>(&body.to_bytes())
        .map_err(anyhow::Error::from)
        .and_then(|q| fleet.quote(index, &q));
    match quote.and_then(|r| serde_json::to_vec(&r).map_err(anyhow::Error::from)) {
        Ok(bytes) => {
            fleet.served.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::OK, bytes)
        }
        Err(e) => reply(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": e.to_string() })
                .to_string()
                .into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captured_log_extends_its_sha1_and_sha256_digests_in_order() {
        let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
        b.measured(0, types::EV_POST_CODE, b"firmware", b"POST CODE");
        b.measured(4, types::EV_SEPARATOR, &[0; 4], &[0; 4]);
        let got = log_extends(&b.bytes()).unwrap_or_default();
        let want: Vec<(HashAlg, u8, Vec<u8>)> = b
            .events()
            .iter()
            .flat_map(|e| {
                let pcr = u8::try_from(e.pcr).unwrap_or(u8::MAX);
                e.digests.iter().map(move |(h, d)| (*h, pcr, d.clone()))
            })
            .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got, want);
    }

    #[test]
    fn a_log_starting_at_locality_3_or_unreadable_is_refused() {
        let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
        b.startup_locality(3);
        b.measured(0, types::EV_POST_CODE, b"firmware", b"POST CODE");
        let e = log_extends(&b.bytes()).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("locality 3"), "{e}");
        let e = log_extends(&[1, 2, 3]).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("unreadable"), "{e}");
    }
}
