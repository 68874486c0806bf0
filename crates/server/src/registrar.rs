//! Registration: which EKs may register, and the proof that the AK lives beside the EK.
//!
//! 1. [`register`]: the request's EK must be certified by a manufacturer CA of the bundle or be
//!    listed (not revoked) in `tpm-endorsements`; the AK must be a restricted signing key. The
//!    server answers a MakeCredential challenge for (EK, AK Name) and keeps only the SHA-256 of
//!    the secret.
//! 2. [`activate`]: the secret comes back (ActivateCredential succeeded in the TPM holding the
//!    EK, with the AK loaded). Only now is the host stored with its AK pinned; an earlier
//!    registration of the same hardware UUID with the same EK (a reimaged node) is replaced.
//!    Each challenge allows one try.
//!
//! A host's identity is its EK. A registration that claims a hardware UUID or a host name held
//! by a host with another EK is refused (409 `identity_conflict`), checked at both steps (at
//! activation in the transaction that stores the host), unless an admin endorsed the new EK for
//! that hardware UUID (`tpm-endorsements` with `hardware_uuid`: the TPM was replaced). An EK
//! registered under one hardware UUID that claims another is refused too. Every refusal is
//! logged (WARN: host name, hardware UUID, EK SHA-256, reason) and counted
//! (`nodetrust_registrations_refused_total{reason}`).
//!
//! Bounds: host facts at most [`MAX_HOST_INFO`] bytes serialized, each text field at most
//! [`MAX_FACT_LEN`]; at most [`crate::store::MAX_CHALLENGES_PER_UUID`] open challenges per
//! hardware UUID (a newer one replaces the oldest) and [`crate::store::MAX_CHALLENGES`] in all
//! (then 503 with `Retry-After`).

use aws_lc_rs::digest;
use nodetrust_proto::agent::HostInfo;
use nodetrust_proto::b64;
use nodetrust_proto::push::AgentMode;
use nodetrust_proto::registration::{
    ActivateRequest, RegisterChallenge, RegisterRequest, RegisterResult,
};
use nodetrust_tpm_wire::credential::{constant_time_eq, make_credential};
use nodetrust_tpm_wire::verify::check_ak_attributes;
use nodetrust_tpm_wire::{Public, PublicKey};

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{ChallengeRow, Endorsement, HostRow, Registered};

/// Largest host facts (the `host` object of a registration), serialized.
pub const MAX_HOST_INFO: usize = 16 * 1024;
/// Longest text field of the host facts (host name and hardware UUID have their own bounds).
pub const MAX_FACT_LEN: usize = 256;
/// Most PCR banks listed in the host facts.
pub const MAX_PCR_BANKS: usize = 8;

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

/// Checks a host name: what Kubernetes accepts as a node name (RFC 1123 DNS subdomain:
/// lowercase letters, digits, '-' and '.', at most 253 characters, labels of 1-63 characters
/// that start and end with a letter or digit).
pub fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !b.is_empty()
                && b.len() <= 63
                && b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

/// Checks the size of the host facts an agent sends.
fn check_host_facts(host: &HostInfo) -> Result<(), ApiError> {
    let fields = [
        ("os_name", &host.os_name),
        ("os_version", &host.os_version),
        ("kernel_version", &host.kernel_version),
        ("tpm_version", &host.tpm_version),
        ("tpm_manufacturer", &host.tpm_manufacturer),
        ("tpm_firmware_version", &host.tpm_firmware_version),
        ("agent_version", &host.agent_version),
    ];
    for (name, v) in fields {
        if v.len() > MAX_FACT_LEN {
            return Err(ApiError::bad_request(
                "host_facts_too_large",
                format!("host.{name} is longer than {MAX_FACT_LEN} bytes"),
            ));
        }
    }
    if host.pcr_banks.len() > MAX_PCR_BANKS || host.pcr_banks.iter().any(|b| b.len() > 16) {
        return Err(ApiError::bad_request(
            "host_facts_too_large",
            format!("host.pcr_banks lists at most {MAX_PCR_BANKS} bank names of 16 bytes"),
        ));
    }
    let size = serde_json::to_vec(host).map_or(usize::MAX, |v| v.len());
    if size > MAX_HOST_INFO {
        return Err(ApiError::bad_request(
            "host_facts_too_large",
            format!("host facts are {size} bytes serialized; at most {MAX_HOST_INFO}"),
        ));
    }
    Ok(())
}

fn check_request(req: &RegisterRequest) -> Result<(Public, Public), ApiError> {
    let host = &req.host;
    if !valid_host_name(&host.host_name) {
        return Err(ApiError::bad_request(
            "bad_host_name",
            "host.host_name must be a DNS subdomain name as Kubernetes node names are: at most 253 characters of lowercase letters, digits, '-' and '.', each dot-separated label 1-63 characters starting and ending with a letter or digit",
        ));
    }
    if host.hardware_uuid.trim().is_empty()
        || host.hardware_uuid.len() > 64
        || !host
            .hardware_uuid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::bad_request(
            "bad_hardware_uuid",
            "host.hardware_uuid must be 1-64 characters of letters, digits and '-'",
        ));
    }
    check_host_facts(host)?;
    if req.connection_url.len() > 2048 {
        return Err(ApiError::bad_request(
            "bad_connection_url",
            "connection_url is longer than 2048 bytes",
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

/// Why the EK is accepted, and the issuer of its certificate when a CA of `--ek-ca-dir`
/// vouched for it (`None` when an endorsement accepted it: no chain was checked); or the
/// refusal.
fn check_endorsement(
    state: &AppState,
    hw: &str,
    ek_certificate: Option<&[u8]>,
    ek: &Public,
    id: &str,
    listed: &[Endorsement],
) -> Result<(String, Option<String>), ApiError> {
    if let Some(e) = listed.iter().find(|e| {
        e.hardware_uuid
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(hw))
    }) {
        return Ok((format!("listed in tpm-endorsements ({})", e.id), None));
    }
    let mut why = vec![format!(
        "the EK (sha256 {id}) is not listed in tpm-endorsements"
    )];
    if !listed.is_empty() {
        why.push(format!(
            "its endorsement is for another hardware UUID than {hw}"
        ));
    }
    match ek_certificate {
        Some(cert) => match state.ek_cas.check(cert, ek) {
            Ok(ca) => {
                let why = format!("EK certificate issued under {ca}");
                return Ok((why, certificate_issuer(cert)));
            }
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

/// Whether an admin endorsed this EK for exactly this hardware UUID (the TPM-replaced
/// workflow), among the EK's active endorsements `listed`.
fn endorsed_for_uuid(listed: &[Endorsement], hardware_uuid: &str) -> bool {
    listed.iter().any(|e| {
        e.hardware_uuid
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(hardware_uuid))
    })
}

/// The EK identifier of a stored host (`None` when its EK does not parse).
fn stored_ek_id(h: &HostRow) -> Option<String> {
    let bytes = b64::decode(&h.ek_public).ok()?;
    Public::from_either(&bytes).ok().map(|p| ek_id(&p))
}

/// The identity rule: a registration of (`name`, `uuid`, EK `ek`) against the hosts holding
/// that name, that hardware UUID or that EK. `endorsed` says whether the EK is endorsed for
/// `uuid` by an admin (then it may replace another EK's host of that UUID).
pub fn check_identity(
    holders: &[HostRow],
    name: &str,
    uuid: &str,
    ek: &str,
    endorsed: bool,
) -> Result<(), (&'static str, String)> {
    for h in holders {
        let same_uuid = h.hardware_uuid.eq_ignore_ascii_case(uuid);
        let old_ek = stored_ek_id(h);
        let same_ek = old_ek.as_deref() == Some(ek);
        let old_ek = old_ek.unwrap_or_else(|| "unreadable".into());
        if same_ek && same_uuid {
            // A reimaged node (same TPM, same machine): replaced.
            continue;
        }
        if same_ek {
            return Err((
                "identity_conflict",
                format!(
                    "registration refused: this EK (sha256 {ek}) is registered as host {:?} with hardware UUID {:?}, and this registration claims hardware UUID {uuid:?}; an EK belongs to one machine. If the machine's UUID really changed, delete host {:?} first (DELETE /mtwilson/v2/hosts/{})",
                    h.name, h.hardware_uuid, h.name, h.name
                ),
            ));
        }
        if same_uuid && endorsed {
            // The TPM was replaced, and an admin endorsed the new EK for this machine.
            continue;
        }
        let what = if same_uuid {
            format!("hardware UUID {uuid:?} is registered as host {:?}", h.name)
        } else {
            format!(
                "host name {name:?} is registered with hardware UUID {:?}",
                h.hardware_uuid
            )
        };
        let remedy = if same_uuid {
            format!(
                "If the TPM of this machine was replaced, endorse the new EK for this machine (POST /mtwilson/v2/tpm-endorsements with ek_public or certificate and \"hardware_uuid\": {uuid:?}) and register again; otherwise delete host {:?} first (DELETE /mtwilson/v2/hosts/{})",
                h.name, h.name
            )
        } else {
            format!(
                "Give this machine another host name, or delete host {:?} first (DELETE /mtwilson/v2/hosts/{})",
                h.name, h.name
            )
        };
        return Err((
            "identity_conflict",
            format!(
                "registration refused: {what} with another EK (sha256 {old_ek}), and this registration's EK is sha256 {ek}: a host's identity is its EK. {remedy}"
            ),
        ));
    }
    Ok(())
}

/// Logs and counts a refused registration.
fn refused(state: &AppState, host: &HostInfo, ek: Option<&str>, e: &ApiError) {
    let reason = match e {
        ApiError::BadRequest { reason, .. }
        | ApiError::Refused { reason, .. }
        | ApiError::ConflictWith { reason, .. }
        | ApiError::TooMany { reason, .. }
        | ApiError::Unavailable { reason, .. } => *reason,
        ApiError::Conflict(_) => "conflict",
        ApiError::NotFound(_) => "unknown_challenge",
        ApiError::Internal(_) => return,
        _ => "refused",
    };
    state.metrics.registration_refused(reason);
    let name: String = host.host_name.chars().take(253).collect();
    let uuid: String = host.hardware_uuid.chars().take(64).collect();
    tracing::warn!(
        host = ?name,
        hardware_uuid = ?uuid,
        ek_sha256 = ek.unwrap_or("unreadable"),
        reason,
        detail = %e,
        "registration refused"
    );
}

/// Registrations whose public-key work runs at once on the blocking pool: one a core (more
/// would only take turns on the cores, each holding a thread and its allocator's memory).
static PUBLIC_KEY_WORK: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        )
    });

/// Step 1: checks the request and answers a MakeCredential challenge.
pub async fn register(
    state: &AppState,
    req: RegisterRequest,
) -> Result<RegisterChallenge, ApiError> {
    let mut ek_sha = None;
    let r = register_inner(state, &req, &mut ek_sha).await;
    if let Err(e) = &r {
        refused(state, &req.host, ek_sha.as_deref(), e);
    }
    r
}

async fn register_inner(
    state: &AppState,
    req: &RegisterRequest,
    ek_sha: &mut Option<String>,
) -> Result<RegisterChallenge, ApiError> {
    if let Ok(ek) = Public::from_either(&req.ek_public) {
        *ek_sha = Some(ek_id(&ek));
    }
    let (ek, ak) = check_request(req)?;
    let id = ek_id(&ek);
    let host = &req.host;
    // The EK's active endorsements, read once for both checks, and the hosts that hold the
    // identity claimed, in one read.
    let (listed, holders) = state
        .store
        .registration_reads(
            &id,
            &host.host_name,
            &host.hardware_uuid,
            &b64::encode(&req.ek_public),
        )
        .await?;
    let endorsed = endorsed_for_uuid(&listed, &host.hardware_uuid);
    // The public-key work (the EK certificate's chain, the credential's key agreement or
    // encryption) on the blocking pool: about 170 µs a registration with P-256 EKs, which the
    // async worker's other tasks would wait behind (docs/PERFORMANCE.md, "Scale,
    // twenty-fifth round"). The credential's own refusal comes after the identity's.
    let work = {
        let (state, ek, id) = (state.clone(), ek.clone(), id.clone());
        let (hw, cert) = (host.hardware_uuid.clone(), req.ek_certificate.clone());
        let ak_name = ak.name();
        move || {
            let endorsement = check_endorsement(&state, &hw, cert.as_deref(), &ek, &id, &listed)?;
            let mut secret = vec![0u8; ek.name_alg.size().min(32)];
            state
                .random
                .fill(&mut secret)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let cred = make_credential(&ek, &ak_name, &secret);
            Ok::<_, ApiError>((endorsement, secret, cred))
        }
    };
    let permit = PUBLIC_KEY_WORK
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let ((why, ek_issuer), secret, cred) = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    drop(permit);
    check_identity(
        &holders,
        &host.host_name,
        &host.hardware_uuid,
        &id,
        endorsed,
    )
    .map_err(|(reason, message)| ApiError::ConflictWith { reason, message })?;
    let cred = cred.map_err(|e| {
        ApiError::bad_request(
            "unsuitable_ek",
            format!("cannot make a credential for this EK: {e}"),
        )
    })?;
    let request = serde_json::to_string(req).map_err(|e| ApiError::Internal(e.to_string()))?;
    let challenge_id = crate::store::new_id();
    let now = state.now_ms();
    let ttl = i64::try_from(state.settings.challenge_ttl.as_millis()).unwrap_or(300_000);
    let stored = state
        .store
        .put_challenge_bounded(
            &ChallengeRow {
                id: challenge_id.clone(),
                secret_sha256: sha256_hex(&secret),
                request,
                expires: now + ttl,
                ek_issuer,
                ek_sha256: Some(id.clone()),
            },
            &host.hardware_uuid.to_ascii_lowercase(),
            now,
        )
        .await?;
    if !stored {
        return Err(ApiError::Unavailable {
            reason: "too_many_challenges",
            message: format!(
                "{} registrations are open; try again later",
                crate::store::MAX_CHALLENGES
            ),
            retry_after: 30,
        });
    }
    tracing::info!(host = ?host.host_name, endorsement = %why, "registration challenge issued");
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
    let gone = || {
        ApiError::NotFound("no open registration with this challenge id (expired, used, or unknown): register again".into())
    };
    if challenge_id.len() > 64 {
        return Err(gone());
    }
    // Read, not taken: the registration's transaction takes it below (one write turn), and a
    // wrong secret takes it here.
    // The challenge and the EK's active endorsements in one read: an endorsement may have been
    // revoked since the challenge was issued, and the identity check below needs them.
    let (challenge, listed) = state
        .store
        .challenge_endorsed(challenge_id, now)
        .await?
        .ok_or_else(gone)?;
    let expected =
        hex::decode(&challenge.secret_sha256).map_err(|e| ApiError::Internal(e.to_string()))?;
    let reg: RegisterRequest =
        serde_json::from_str(&challenge.request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let ek = Public::from_either(&reg.ek_public).map_err(|e| ApiError::Internal(e.to_string()))?;
    let id = ek_id(&ek);
    let got = digest::digest(&digest::SHA256, &req.secret);
    if !constant_time_eq(got.as_ref(), &expected) {
        // A wrong secret uses the challenge up: a guess gets one try.
        if state
            .store
            .take_challenge(challenge_id, now)
            .await?
            .is_none()
        {
            return Err(gone());
        }
        let e = ApiError::refused(
            "activation_failed",
            "credential activation failed: the returned secret is wrong, so the AK was not shown to be in the TPM that holds the EK; register again",
        );
        refused(state, &reg.host, Some(&id), &e);
        return Err(e);
    }
    let host_info =
        serde_json::to_string(&reg.host).map_err(|e| ApiError::Internal(e.to_string()))?;
    let row = HostRow {
        name: reg.host.host_name.clone(),
        hardware_uuid: reg.host.hardware_uuid.clone(),
        // A push host is never connected to ([`crate::push`]): no address, no pin.
        connection_url: match reg.mode {
            AgentMode::Pull => reg.connection_url.clone(),
            AgentMode::Push => crate::store::PUSH_URL.to_string(),
        },
        tls_cert_sha256: match reg.mode {
            AgentMode::Pull => reg.tls_cert_sha256.to_ascii_lowercase(),
            AgentMode::Push => String::new(),
        },
        ek_public: b64::encode(&reg.ek_public),
        ak_public: b64::encode(&reg.aik),
        host_info,
        software_tpm: reg.host.software_tpm,
        status: nodetrust_proto::trust::HostStatus::Pending,
        status_detail: None,
        reset_count: None,
        restart_count: None,
        verdict: None,
        reasons: None,
        attested_at: None,
        expires_at: None,
        created: now,
    };
    // The endorsement may have been revoked, and the name or UUID taken by another machine,
    // since the challenge was issued: checked again in the transaction that stores the host.
    // (A challenge that names no EK, or another than its request's, had its endorsements read
    // apart.)
    let listed = match listed {
        Some(listed) if challenge.ek_sha256.as_deref() == Some(id.as_str()) => listed,
        _ => state.store.active_endorsements_for(&id).await?,
    };
    let endorsed = endorsed_for_uuid(&listed, &row.hardware_uuid);
    let ek_issuer = ek_certificate_issuer(state, &reg, &ek, &listed, challenge.ek_issuer);
    let (name, uuid, ek) = (row.name.clone(), row.hardware_uuid.clone(), id.clone());
    let outcome = state
        .store
        .register_host_activated(
            &row,
            ek_issuer.as_deref(),
            challenge_id,
            now,
            move |holders| check_identity(holders, &name, &uuid, &ek, endorsed),
        )
        .await?;
    let replaced = match outcome {
        Registered::Stored(replaced) => replaced,
        Registered::ChallengeGone => return Err(gone()),
        Registered::Refused(reason, message) => {
            let e = ApiError::ConflictWith { reason, message };
            refused(state, &reg.host, Some(&id), &e);
            return Err(e);
        }
    };
    state.queue.wake();
    tracing::info!(host = %row.name, replaced, "host registered; AK pinned");
    Ok(RegisterResult {
        host_name: row.name,
        hardware_uuid: row.hardware_uuid,
        replaced,
    })
}

/// Longest EK certificate issuer kept (characters).
const MAX_ISSUER_CHARS: usize = 1024;

/// The issuer (distinguished name) of a certificate (DER), at most [`MAX_ISSUER_CHARS`].
fn certificate_issuer(der: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(
        c.issuer()
            .to_string()
            .chars()
            .take(MAX_ISSUER_CHARS)
            .collect(),
    )
}

/// The issuer of the EK certificate a registration is accepted with: the certificate of an
/// active endorsement of this EK (for this hardware UUID or any), else the agent's certificate
/// when it chains to the manufacturer CA bundle: as found when the challenge was issued
/// (`vouched`), or checked now when it was not (the EK was accepted by an endorsement then).
/// `None`: the EK is endorsed by its public key alone (a certificate the agent sent that
/// chains nowhere says nothing and is not kept). `listed`: the EK's active endorsements.
fn ek_certificate_issuer(
    state: &AppState,
    reg: &RegisterRequest,
    ek: &Public,
    listed: &[Endorsement],
    vouched: Option<String>,
) -> Option<String> {
    let hw = &reg.host.hardware_uuid;
    for e in listed {
        if e.hardware_uuid
            .as_deref()
            .is_some_and(|u| !u.eq_ignore_ascii_case(hw))
        {
            continue;
        }
        let issuer = e
            .certificate
            .as_deref()
            .and_then(|c| b64::decode(c).ok())
            .and_then(|der| certificate_issuer(&der));
        if issuer.is_some() {
            return issuer;
        }
    }
    vouched.or_else(|| {
        reg.ek_certificate
            .as_deref()
            .filter(|cert| state.ek_cas.check(cert, ek).is_ok())
            .and_then(certificate_issuer)
    })
}

/// Input of `POST /mtwilson/v2/tpm-endorsements`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
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
    if let Some(u) = &req.hardware_uuid {
        if !u.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(ApiError::bad_request(
                "bad_hardware_uuid",
                "hardware_uuid must be letters, digits and '-'",
            ));
        }
    }
    if req.ek_public.as_ref().is_some_and(|c| c.len() > 16 * 1024)
        || req.comment.as_ref().is_some_and(|c| c.len() > 1024)
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
