//! Registration: which EKs may register, and the proof that the AK lives beside the EK.
//!
//! 1. [`register`]: the request's EK must be certified by a manufacturer CA of the bundle or be
//!    listed (not revoked) in `tpm-endorsements`; the AK must be a restricted signing key. The
//!    server answers a MakeCredential challenge for (EK, AK Name) and keeps only the SHA-256 of
//!    the secret.
//! 2. [`activate`]: the secret comes back (ActivateCredential succeeded in the TPM holding the
//!    EK, with the AK loaded). Only now is the host stored with its AK pinned; an earlier
//!    registration of the same hardware UUID (a reimaged node) is replaced. Each challenge
//!    allows one try.

use std::time::Duration;

use aws_lc_rs::digest;
use nodetrust_proto::agent::HostInfo;
use nodetrust_proto::b64;
use nodetrust_proto::registration::{
    ActivateRequest, RegisterChallenge, RegisterRequest, RegisterResult,
};
use nodetrust_tpm_wire::credential::{constant_time_eq, make_credential};
use nodetrust_tpm_wire::verify::check_ak_attributes;
use nodetrust_tpm_wire::{Public, PublicKey};

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{ChallengeRow, Endorsement, HostRow};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// The identifier endorsements use for an EK: SHA-256 (hex) of its key as a canonical DER
/// `SubjectPublicKeyInfo`, so an EK public area and an EK certificate of the same key agree.
pub fn ek_id(ek: &Public) -> String {
    key_id(&ek.key)
}

/// [`ek_id`] of a bare key (from a certificate).
pub fn key_id(key: &PublicKey) -> String {
    sha256_hex(&nodetrust_tpm_wire::der::spki(key))
}

/// Checks a host name: what Kubernetes accepts as a node name (DNS subdomain).
pub fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

fn check_request(req: &RegisterRequest) -> Result<(Public, Public), ApiError> {
    let host = &req.host;
    if !valid_host_name(&host.host_name) {
        return Err(ApiError::bad_request(
            "bad_host_name",
            "host.host_name must be 1-253 characters of letters, digits, '-', '.', '_'",
        ));
    }
    if host.hardware_uuid.trim().is_empty() || host.hardware_uuid.len() > 64 {
        return Err(ApiError::bad_request(
            "bad_hardware_uuid",
            "host.hardware_uuid must be 1-64 characters",
        ));
    }
    let url: axum::http::Uri = req
        .connection_url
        .parse()
        .map_err(|_| ApiError::bad_request("bad_connection_url", "connection_url is not a URL"))?;
    if url.scheme_str() != Some("https") || url.host().is_none() {
        return Err(ApiError::bad_request(
            "bad_connection_url",
            "connection_url must be an https:// URL with a host",
        ));
    }
    let pin_ok = req.tls_cert_sha256.len() == 64
        && req.tls_cert_sha256.chars().all(|c| c.is_ascii_hexdigit());
    if !pin_ok {
        return Err(ApiError::bad_request(
            "bad_tls_pin",
            "tls_cert_sha256 must be 64 hex digits",
        ));
    }
    let ek = Public::from_either(&req.ek_public).map_err(|e| {
        ApiError::bad_request("bad_ek", format!("ek_public is not a TPM public area: {e}"))
    })?;
    let ak = Public::from_either(&req.aik).map_err(|e| {
        ApiError::bad_request("bad_aik", format!("aik is not a TPM public area: {e}"))
    })?;
    check_ak_attributes(&ak).map_err(|e| ApiError::refused(e.reason(), e.to_string()))?;
    Ok((ek, ak))
}

/// Why the EK is accepted, or the refusal.
async fn check_endorsement(
    state: &AppState,
    req: &RegisterRequest,
    ek: &Public,
) -> Result<String, ApiError> {
    let id = ek_id(ek);
    let listed = state.store.active_endorsements_for(&id).await?;
    let hw = &req.host.hardware_uuid;
    if let Some(e) = listed.iter().find(|e| {
        e.hardware_uuid
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(hw))
    }) {
        return Ok(format!("listed in tpm-endorsements ({})", e.id));
    }
    let mut why = vec![format!(
        "the EK (sha256 {id}) is not listed in tpm-endorsements"
    )];
    if !listed.is_empty() {
        why.push(format!(
            "its endorsement is for another hardware UUID than {hw}"
        ));
    }
    match &req.ek_certificate {
        Some(cert) => match state.ek_cas.check(cert, ek) {
            Ok(ca) => return Ok(format!("EK certificate issued under {ca}")),
            Err(e) => why.push(e),
        },
        None => why.push("the agent sent no EK certificate".into()),
    }
    Err(ApiError::refused(
        "ek_not_endorsed",
        format!(
            "registration refused: {}. Add the EK with POST /mtwilson/v2/tpm-endorsements, or put its manufacturer's CA in --ek-ca-dir",
            why.join("; ")
        ),
    ))
}

/// Step 1: checks the request and answers a MakeCredential challenge.
pub async fn register(
    state: &AppState,
    req: RegisterRequest,
) -> Result<RegisterChallenge, ApiError> {
    let (ek, ak) = check_request(&req)?;
    if let Some(existing) = state.store.host(&req.host.host_name).await? {
        if !existing
            .hardware_uuid
            .eq_ignore_ascii_case(&req.host.hardware_uuid)
        {
            return Err(ApiError::Conflict(format!(
                "host name {} is registered with another hardware UUID ({}); delete that host first",
                req.host.host_name, existing.hardware_uuid
            )));
        }
    }
    let why = check_endorsement(state, &req, &ek).await?;
    let mut secret = vec![0u8; ek.name_alg.size().min(32)];
    aws_lc_rs::rand::fill(&mut secret)
        .map_err(|_| ApiError::Internal("system random generator failed".into()))?;
    let cred = make_credential(&ek, &ak.name(), &secret).map_err(|e| {
        ApiError::bad_request(
            "unsuitable_ek",
            format!("cannot make a credential for this EK: {e}"),
        )
    })?;
    let request = serde_json::to_string(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
    let challenge_id = crate::store::new_id();
    let now = state.now_ms();
    let ttl = i64::try_from(state.settings.challenge_ttl.as_millis()).unwrap_or(300_000);
    state
        .store
        .put_challenge(
            &ChallengeRow {
                id: challenge_id.clone(),
                secret_sha256: sha256_hex(&secret),
                request,
                expires: now + ttl,
            },
            now,
        )
        .await?;
    tracing::info!(host = %req.host.host_name, endorsement = %why, "registration challenge issued");
    Ok(RegisterChallenge {
        challenge_id,
        credential_blob: cred.blob,
        encrypted_secret: cred.encrypted_secret,
    })
}

/// Step 2: checks the returned secret, then stores the host with its AK pinned.
pub async fn activate(
    state: &AppState,
    challenge_id: &str,
    req: ActivateRequest,
) -> Result<RegisterResult, ApiError> {
    let now = state.now_ms();
    let challenge = state
        .store
        .take_challenge(challenge_id, now)
        .await?
        .ok_or_else(|| ApiError::NotFound("no open registration with this challenge id (expired, used, or unknown): register again".into()))?;
    let expected =
        hex::decode(&challenge.secret_sha256).map_err(|e| ApiError::Internal(e.to_string()))?;
    let got = digest::digest(&digest::SHA256, &req.secret);
    if !constant_time_eq(got.as_ref(), &expected) {
        return Err(ApiError::refused(
            "activation_failed",
            "credential activation failed: the returned secret is wrong, so the AK was not shown to be in the TPM that holds the EK; register again",
        ));
    }
    let reg: RegisterRequest =
        serde_json::from_str(&challenge.request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let host_info =
        serde_json::to_string(&reg.host).map_err(|e| ApiError::Internal(e.to_string()))?;
    let row = HostRow {
        name: reg.host.host_name.clone(),
        hardware_uuid: reg.host.hardware_uuid.clone(),
        connection_url: reg.connection_url.clone(),
        tls_cert_sha256: reg.tls_cert_sha256.to_ascii_lowercase(),
        ek_public: b64::encode(&reg.ek_public),
        ak_public: b64::encode(&reg.aik),
        host_info,
        software_tpm: reg.host.software_tpm,
        status: "pending".into(),
        status_detail: None,
        reset_count: None,
        restart_count: None,
        verdict: None,
        reasons: None,
        attested_at: None,
        expires_at: None,
        created: now,
    };
    // The name may have been taken by another machine since the challenge was issued.
    if let Some(existing) = state.store.host(&row.name).await? {
        if !existing
            .hardware_uuid
            .eq_ignore_ascii_case(&row.hardware_uuid)
        {
            return Err(ApiError::Conflict(format!(
                "host name {} is registered with another hardware UUID ({}); delete that host first",
                row.name, existing.hardware_uuid
            )));
        }
    }
    let replaced = state.store.register_host(&row, now).await?;
    state.wake.notify_one();
    tracing::info!(host = %row.name, replaced, "host registered; AK pinned");
    Ok(RegisterResult {
        host_name: row.name,
        hardware_uuid: row.hardware_uuid,
        replaced,
    })
}

/// Input of `POST /mtwilson/v2/tpm-endorsements`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndorsement {
    /// Hardware UUID the EK belongs to (optional: without it, any host with this EK).
    #[serde(default)]
    pub hardware_uuid: Option<String>,
    /// EK `TPM2B_PUBLIC` or `TPMT_PUBLIC`, base64 (this, `certificate`, or both).
    #[serde(default)]
    pub ek_public: Option<String>,
    /// EK certificate, PEM or base64 DER: its key is endorsed.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Reads a certificate given as PEM or as base64 DER.
fn certificate_der(text: &str) -> Result<Vec<u8>, ApiError> {
    if text.contains("-----BEGIN") {
        return rustls_pemfile::certs(&mut text.as_bytes())
            .next()
            .and_then(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| {
                ApiError::bad_request("bad_certificate", "certificate: no PEM certificate found")
            });
    }
    b64::decode(text).map_err(|_| {
        ApiError::bad_request(
            "bad_certificate",
            "certificate is neither PEM nor base64 DER",
        )
    })
}

/// Adds an endorsement: an EK public area, an EK certificate, or both (then they must agree).
pub async fn add_endorsement(
    state: &AppState,
    req: NewEndorsement,
) -> Result<Endorsement, ApiError> {
    if let Some(u) = &req.hardware_uuid {
        if u.trim().is_empty() || u.len() > 64 {
            return Err(ApiError::bad_request(
                "bad_hardware_uuid",
                "hardware_uuid must be 1-64 characters",
            ));
        }
    }
    if req.comment.as_ref().is_some_and(|c| c.len() > 1024)
        || req
            .certificate
            .as_ref()
            .is_some_and(|c| c.len() > 64 * 1024)
    {
        return Err(ApiError::bad_request(
            "too_long",
            "comment or certificate too long",
        ));
    }
    let ek = match &req.ek_public {
        Some(ek_b64) => {
            let ek_bytes = b64::decode(ek_b64)
                .map_err(|_| ApiError::bad_request("bad_ek", "ek_public is not base64"))?;
            Some(Public::from_either(&ek_bytes).map_err(|e| {
                ApiError::bad_request("bad_ek", format!("ek_public is not a TPM public area: {e}"))
            })?)
        }
        None => None,
    };
    let cert = match &req.certificate {
        Some(text) => {
            let der = certificate_der(text)?;
            let key = crate::ekca::certificate_key(&der)
                .map_err(|e| ApiError::bad_request("bad_certificate", e))?;
            Some((der, key))
        }
        None => None,
    };
    let id = match (&ek, &cert) {
        (Some(ek), Some((_, key))) => {
            if key_id(key) != ek_id(ek) {
                return Err(ApiError::bad_request(
                    "certificate_mismatch",
                    "the certificate is for another key than ek_public",
                ));
            }
            ek_id(ek)
        }
        (Some(ek), None) => ek_id(ek),
        (None, Some((_, key))) => key_id(key),
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_ek",
                "give ek_public (base64 TPM2B_PUBLIC of the EK), certificate (the EK certificate, PEM or base64 DER), or both",
            ))
        }
    };
    let e = Endorsement {
        id: crate::store::new_id(),
        hardware_uuid: req.hardware_uuid,
        ek_sha256: id,
        ek_public: ek.as_ref().map(|k| b64::encode(&k.tpm2b_bytes())),
        certificate: cert.map(|(der, _)| b64::encode(&der)),
        comment: req.comment,
        revoked: false,
        created: state.now_ms(),
    };
    state.store.add_endorsement(&e).await?;
    Ok(e)
}

/// The host facts stored at registration.
pub fn host_info(row: &HostRow) -> Option<HostInfo> {
    serde_json::from_str(&row.host_info).ok()
}

/// How long a challenge stays open by default.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
