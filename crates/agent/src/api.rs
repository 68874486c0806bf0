//! The Trust Agent HTTP API (paths follow the OpenCIT Trust Agent v2 API).
//!
//! - `GET /version` — no auth.
//! - `GET /v2/host`, `POST /v2/tpm/quote`, `POST /v2/ima`, `GET /v2/aik`, `GET /v2/ek` — HTTP
//!   basic auth with
//!   `TRUSTAGENT_ADMIN_USERNAME` / `TRUSTAGENT_ADMIN_PASSWORD`, compared in constant time.
//!
//! Untrusted input is checked at this edge: bodies are read up to
//! [`MAX_REQUEST_BODY`] bytes, the nonce is at most
//! [`MAX_NONCE`] bytes, PCR indices 0-23, bank names known and
//! allocated. Every refusal is a 400 (401 for auth) with a JSON [`ErrorBody`]; TPM failures map to
//! 503 with the TPM error's plain-language message. TPM calls run on the blocking pool, which
//! hands them to the TPM thread.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use nodetrust_proto::agent::{
    AikInfo, EkInfo, HostInfo, ImaEntries, ImaRequest, QuoteRequest, QuoteResponse, VersionInfo,
    MAX_NONCE, MAX_REQUEST_BODY,
};
use nodetrust_proto::ErrorBody;
use nodetrust_tpm::{Attester, HashAlg, PcrSelection, TpmError};
use nodetrust_tpm_wire::credential::constant_time_eq;
use nodetrust_tpm_wire::pcr::{BankSelection, PCR_COUNT};

use crate::config::Credentials;

/// What the handlers share.
#[derive(Debug)]
pub struct Inner {
    /// The TPM.
    pub attester: Arc<dyn Attester>,
    /// Host facts, gathered at start.
    pub host: HostInfo,
    /// Basic-auth credentials.
    pub admin: Credentials,
    /// Measured-boot event log.
    pub eventlog: PathBuf,
    /// IMA log path.
    pub ima_log: PathBuf,
    /// The IMA log, served from an entry index.
    pub ima: Arc<crate::ima::ImaLog>,
    /// PCR banks the TPM has allocated.
    pub banks: Vec<HashAlg>,
}

/// Shared state of the API.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Inner>);

impl AppState {
    /// State over `attester`; the allocated banks come from `host.pcr_banks`.
    pub fn new(
        attester: Arc<dyn Attester>,
        host: HostInfo,
        admin: Credentials,
        eventlog: PathBuf,
        ima_log: PathBuf,
    ) -> Self {
        let banks = host
            .pcr_banks
            .iter()
            .filter_map(|b| HashAlg::from_name(b))
            .collect();
        let ima = Arc::new(crate::ima::ImaLog::new(&ima_log));
        Self(Arc::new(Inner {
            attester,
            host,
            admin,
            eventlog,
            ima_log,
            ima,
            banks,
        }))
    }
}

/// An API failure, mapped to a response at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller sent something wrong.
    #[error("{message}")]
    BadRequest {
        /// Stable reason.
        reason: &'static str,
        /// For the caller.
        message: String,
    },
    /// Missing or wrong credentials.
    #[error("authentication required")]
    Unauthorized,
    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// Something else failed inside the agent.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn bad(reason: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            reason,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Self::BadRequest { reason, message } => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new(*reason, message.clone()),
            ),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                ErrorBody::new(
                    "unauthorized",
                    "HTTP basic authentication with the agent's admin account is required",
                ),
            ),
            Self::Tpm(e) if e.is_client_error() => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new(e.reason(), e.to_string()),
            ),
            Self::Tpm(e) => {
                tracing::error!(reason = e.reason(), "{e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorBody::new(e.reason(), e.to_string()),
                )
            }
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::new("internal", "internal error"),
            ),
        };
        let mut resp = (status, Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"nodetrust-agent\""),
            );
        }
        resp
    }
}

/// The router.
pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v2/host", get(host))
        .route("/v2/tpm/quote", post(quote))
        .route("/v2/ima", post(ima))
        .route("/v2/aik", get(aik))
        .route("/v2/ek", get(ek))
        .route_layer(middleware::from_fn_with_state(state.clone(), basic_auth));
    Router::new()
        .route("/version", get(version))
        .merge(protected)
        .fallback(|| async { ApiError::bad("not_found", "no such endpoint") })
        .with_state(state)
}

fn credentials_match(header_value: Option<&HeaderValue>, admin: &Credentials) -> bool {
    let Some(encoded) = header_value.and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
    }) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let (user, pass) = match decoded.iter().position(|b| *b == b':') {
        Some(i) => (
            decoded.get(..i).unwrap_or_default(),
            decoded.get(i + 1..).unwrap_or_default(),
        ),
        None => (decoded.as_slice(), &[][..]),
    };
    // Both comparisons always run, so timing tells nothing about which part was wrong.
    let user_ok = constant_time_eq(user, admin.username.as_bytes());
    let pass_ok = constant_time_eq(pass, admin.password.as_bytes());
    user_ok & pass_ok
}

async fn basic_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if credentials_match(req.headers().get(header::AUTHORIZATION), &state.0.admin) {
        next.run(req).await
    } else {
        tracing::warn!(path = %req.uri().path(), "refused a request without valid credentials");
        ApiError::Unauthorized.into_response()
    }
}

async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        name: crate::NAME.into(),
        version: crate::VERSION.into(),
    })
}

async fn host(State(state): State<AppState>) -> Json<HostInfo> {
    Json(state.0.host.clone())
}

async fn blocking<T: Send + 'static>(
    attester: &Arc<dyn Attester>,
    f: impl FnOnce(&dyn Attester) -> Result<T, TpmError> + Send + 'static,
) -> Result<T, ApiError> {
    let a = Arc::clone(attester);
    tokio::task::spawn_blocking(move || f(a.as_ref()))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(ApiError::from)
}

/// Checks a quote request and turns it into a PCR selection.
pub fn selection(req: &QuoteRequest, allocated: &[HashAlg]) -> Result<PcrSelection, ApiError> {
    if req.nonce.len() > MAX_NONCE {
        return Err(ApiError::bad(
            "nonce_too_long",
            format!(
                "the nonce is {} bytes; at most {MAX_NONCE} are allowed",
                req.nonce.len()
            ),
        ));
    }
    if req.pcrs.is_empty() {
        return Err(ApiError::bad(
            "no_pcrs",
            "select at least one PCR in \"pcrs\"",
        ));
    }
    if let Some(p) = req.pcrs.iter().find(|p| **p >= PCR_COUNT) {
        return Err(ApiError::bad(
            "bad_pcr_index",
            format!("PCR index {p} is not between 0 and 23"),
        ));
    }
    if req.pcrbanks.is_empty() {
        return Err(ApiError::bad(
            "no_pcr_banks",
            "select at least one bank in \"pcrbanks\" (e.g. \"SHA256\")",
        ));
    }
    let mut pcrs = req.pcrs.clone();
    pcrs.sort_unstable();
    pcrs.dedup();
    let mut banks: Vec<BankSelection> = Vec::new();
    for name in &req.pcrbanks {
        let shown: String = name.chars().take(16).collect();
        let hash = HashAlg::from_name(name).ok_or_else(|| {
            ApiError::bad(
                "unknown_pcr_bank",
                format!("unknown PCR bank {shown:?}; expected SHA1, SHA256, SHA384 or SHA512"),
            )
        })?;
        if !allocated.contains(&hash) {
            return Err(ApiError::bad(
                "pcr_bank_not_allocated",
                format!(
                    "PCR bank {} is not allocated on this TPM",
                    hash.name().to_ascii_uppercase()
                ),
            ));
        }
        if !banks.iter().any(|b| b.hash == hash) {
            banks.push(BankSelection {
                hash,
                pcrs: pcrs.clone(),
            });
        }
    }
    Ok(PcrSelection { banks })
}

async fn read_log(path: &std::path::Path) -> Option<Vec<u8>> {
    match tokio::fs::read(path).await {
        Ok(b) if !b.is_empty() => Some(b),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read a measurement log");
            None
        }
    }
}

async fn body_bytes(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_REQUEST_BODY)
        .await
        .map_err(|_| {
            ApiError::bad(
                "body_too_large",
                format!("the request body is larger than {MAX_REQUEST_BODY} bytes"),
            )
        })
}

/// IMA entries from `offset`, read on a blocking thread; `None` without an IMA log. A log that
/// exists but cannot be read is logged and treated as absent, like the event log.
async fn ima_entries(
    state: &AppState,
    offset: u64,
    max_entries: Option<u32>,
) -> Result<Option<ImaEntries>, ApiError> {
    let log = Arc::clone(&state.0.ima);
    let read = tokio::task::spawn_blocking(move || log.entries_from(offset, max_entries))
        .await
        .map_err(|_| ApiError::Internal)?;
    match read {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::warn!(path = %state.0.ima.path().display(), error = %e, "cannot read the IMA log");
            Ok(None)
        }
    }
}

async fn ima(State(state): State<AppState>, body: Body) -> Result<Json<ImaEntries>, ApiError> {
    let bytes = body_bytes(body).await?;
    let req: ImaRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad(
            "bad_request",
            format!("the body is not an IMA log request: {e}"),
        )
    })?;
    match ima_entries(&state, req.offset, req.max_entries).await? {
        Some(entries) => Ok(Json(entries)),
        None => Err(ApiError::bad(
            "no_ima_log",
            format!(
                "this host has no IMA log at {} (a kernel without IMA, or the agent's --ima-log)",
                state.0.ima.path().display()
            ),
        )),
    }
}

async fn quote(State(state): State<AppState>, body: Body) -> Result<Json<QuoteResponse>, ApiError> {
    let bytes = body_bytes(body).await?;
    let mut req: QuoteRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad(
            "bad_request",
            format!("the body is not a quote request: {e}"),
        )
    })?;
    let sel = selection(&req, &state.0.banks)?;
    let nonce = std::mem::take(&mut req.nonce);
    let (out, aik) = blocking(&state.0.attester, move |a| {
        Ok((a.quote(&nonce, &sel)?, a.ak_public()?))
    })
    .await?;
    // The logs are read after the quote, so they cover at least what it measured.
    let event_log = read_log(&state.0.eventlog).await;
    let (event_log, event_log_sha256) = leave_out_if_known(&req, event_log);
    let ima_log = match req.ima_offset {
        Some(offset) => ima_entries(&state, offset, None).await?,
        None => None,
    };
    // The PCR values are left out when the verifier holds them; the quote's digest of them is
    // always sent, which tells the verifier that this agent can leave them out (and its AK,
    // when the verifier names the one it pinned).
    let pcr_digest = out.pcr_digest();
    let aik = leave_out_aik_if_pinned(&req, aik);
    let pcrs = match &pcr_digest {
        Some(digest) if req.holds_pcrs(digest) => None,
        _ => {
            let mut pcrs = nodetrust_proto::agent::PcrMap::new();
            for (bank, index, value) in out.pcrs.iter() {
                pcrs.entry(bank.name().to_string())
                    .or_default()
                    .insert(index.to_string(), hex::encode(value));
            }
            Some(pcrs.into())
        }
    };
    Ok(Json(QuoteResponse {
        quote: out.attest,
        signature: out.signature,
        aik,
        pcrs,
        pcr_digest,
        event_log,
        event_log_sha256,
        ima_log,
    }))
}

/// The AK to send: none when the verifier names it as the one it pinned
/// ([`QuoteRequest::holds_aik`]).
fn leave_out_aik_if_pinned(req: &QuoteRequest, aik: Vec<u8>) -> Option<Vec<u8>> {
    let name = nodetrust_tpm_wire::Public::from_tpm2b(&aik).map(|p| p.name());
    match name {
        Ok(name) if req.holds_aik(&name) => None,
        _ => Some(aik),
    }
}

/// The event log to send and its SHA-256: the log is left out when the verifier holds it
/// ([`QuoteRequest::holds_event_log`]). Its digest is always sent, which tells the verifier
/// that this agent can leave out a log it holds.
fn leave_out_if_known(
    req: &QuoteRequest,
    event_log: Option<Vec<u8>>,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let Some(log) = event_log else {
        return (None, None);
    };
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &log)
        .as_ref()
        .to_vec();
    if req.holds_event_log(&sha256) {
        (None, Some(sha256))
    } else {
        (Some(log), Some(sha256))
    }
}

fn pem_and_name(tpm2b: &[u8], what: &str) -> Result<(String, String), ApiError> {
    let p = nodetrust_tpm_wire::Public::from_tpm2b(tpm2b).map_err(|e| {
        tracing::error!("the TPM's {what} public area does not parse: {e}");
        ApiError::Internal
    })?;
    Ok((
        nodetrust_tpm_wire::der::pem("PUBLIC KEY", &nodetrust_tpm_wire::der::spki(&p.key)),
        hex::encode(p.name()),
    ))
}

async fn aik(State(state): State<AppState>) -> Result<Json<AikInfo>, ApiError> {
    let aik = blocking(&state.0.attester, |a| a.ak_public()).await?;
    let (pem, name) = pem_and_name(&aik, "AK")?;
    Ok(Json(AikInfo { aik, pem, name }))
}

async fn ek(State(state): State<AppState>) -> Result<Json<EkInfo>, ApiError> {
    let ek = blocking(&state.0.attester, |a| a.ek()).await?;
    let (pem, _) = pem_and_name(&ek.public, "EK")?;
    Ok(Json(EkInfo {
        ek_public: ek.public,
        ek_certificate: ek.certificate,
        pem,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]
    use super::*;

    #[test]
    fn basic_auth_parsing() {
        let admin = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(credentials_match(
            Some(&hv(&format!("Basic {}", enc("u:p:w")))),
            &admin
        ));
        assert!(credentials_match(
            Some(&hv(&format!("basic  {}", enc("u:p:w")))),
            &admin
        ));
        assert!(!credentials_match(
            Some(&hv(&format!("Basic {}", enc("u:p")))),
            &admin
        ));
        assert!(!credentials_match(
            Some(&hv(&format!("Basic {}", enc("x:p:w")))),
            &admin
        ));
        assert!(!credentials_match(
            Some(&hv(&format!("Bearer {}", enc("u:p:w")))),
            &admin
        ));
        assert!(!credentials_match(Some(&hv("Basic !!!")), &admin));
        assert!(!credentials_match(None, &admin));
    }
}
