//! The tss-esapi implementation of [`Attester`].
//!
//! One dedicated thread owns the ESYS context and runs every TPM command; callers send it jobs
//! through a channel and block on the answer, so a TPM (which serves one command at a time
//! anyway, and may take seconds per signature) never blocks an async executor.
//!
//! On connect the thread:
//! 1. opens the TCTI (`device:/dev/tpmrm0`, `tabrmd`, `swtpm:host=..,port=..`);
//! 2. checks the TPM's state (startup, lockout, endorsement hierarchy enabled, auth set) so that
//!    the common failures get a plain-language [`TpmError`];
//! 3. flushes transient objects a crashed client left behind (a resource manager shows only our
//!    own; swtpm has none and keeps everything);
//! 4. recreates the EK from the TCG default template, RSA 2048 or ECC P-256 (its Name matches
//!    the manufacturer's certificate in NV) and reads the certificate;
//! 5. loads the AK from the state directory (`ak-<ak alg>-<ek alg>.pub` / `.priv`), creating and
//!    saving it on the first start. The AK is a restricted signing key under the EK.
//!
//! EK and AK stay loaded while the connection lives and are flushed when it ends ([`Drop`]);
//! every other transient handle (policy sessions) is flushed on every path. When the transport
//! fails, or the TPM lost the loaded keys (swtpm restarted, TPM reset), the thread reconnects
//! once, reloads EK and AK, and retries the command.
//!
//! Hot paths (Quote, PCR_Read) use password sessions: HMAC sessions cost 4-8 ms each in
//! tpm2-tss 3.2.1.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::mpsc;

use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::{CapabilityType, PropertyTag, SessionType, StartupType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, SessionHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Auth, CapabilityData, Data, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot,
    Private, PublicBuffer, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::traits::{Marshall as _, UnMarshall as _};
use tss_esapi::{Context, TctiNameConf};

use nodetrust_tpm_wire::pcr::BankSelection;
use nodetrust_tpm_wire::{HashAlg, PcrSelection, PcrValues, Public};

use crate::auth::Secret;
use crate::error::{classify, is_lost_objects, is_transport, raw_rc, rc, tpm_code};
use crate::{
    pcrs_match_quote, AkAlgorithm, Attester, EkData, QuoteOutput, TpmError, TpmFacts,
    QUOTE_ATTEMPTS,
};

/// How to reach the TPM and where the AK lives.
#[derive(Debug, Clone)]
pub struct TssConfig {
    /// TCTI configuration (`device:/dev/tpmrm0`, `tabrmd`, `swtpm:host=127.0.0.1,port=2321`).
    pub tcti: String,
    /// Directory holding the AK blobs.
    pub state_dir: PathBuf,
    /// Owner / endorsement hierarchy auth value (`TPM_OWNER_SECRET`), empty when none.
    pub owner_secret: Secret,
    /// Algorithm of a newly created AK (an existing AK of that algorithm is reused).
    pub ak_algorithm: AkAlgorithm,
    /// EK template; `None` picks RSA 2048 and falls back to ECC P-256 on a TPM without RSA.
    pub ek_algorithm: Option<EkAlgorithm>,
}

/// The EK template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkAlgorithm {
    /// RSA 2048 (TCG template L-1; certificate in NV 0x01c00002).
    Rsa2048,
    /// ECC NIST P-256 (TCG template L-2; certificate in NV 0x01c0000a).
    EccP256,
}

impl EkAlgorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "ekrsa2048",
            Self::EccP256 => "ekecc-p256",
        }
    }
}

impl TssConfig {
    /// Defaults for `tcti` and `state_dir`.
    pub fn new(tcti: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            tcti: tcti.into(),
            state_dir: state_dir.into(),
            owner_secret: Secret::default(),
            ak_algorithm: AkAlgorithm::default(),
            ek_algorithm: None,
        }
    }
}

/// Whether a TCTI string names a software TPM.
pub fn is_software_tcti(tcti: &str) -> bool {
    let t = tcti.trim_start();
    t.starts_with("swtpm") || t.starts_with("mssim")
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The tss-esapi attester: a handle to the thread that owns the TPM connection. Dropping it
/// stops the thread after the jobs already queued, and waits until the EK and AK are flushed.
#[derive(Debug)]
pub struct TssAttester {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TssAttester {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl TssAttester {
    /// Starts the TPM thread and connects (EK, AK). Fails with the plain-language error when the
    /// TPM cannot be used.
    pub fn open(config: TssConfig) -> Result<Self, TpmError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), TpmError>>(1);
        let thread = std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut worker = Worker { config, conn: None };
                let first = worker.ensure().map(|_| ());
                let failed = first.is_err();
                let _ = ready_tx.send(first);
                if failed {
                    return;
                }
                while let Ok(job) = rx.recv() {
                    job(&mut worker);
                }
                // Channel closed: `worker` drops here and flushes the EK and AK.
            })
            .map_err(|e| TpmError::Tpm {
                op: "start TPM thread",
                detail: e.to_string(),
                rc: None,
            })?;
        ready_rx.recv().map_err(|_| TpmError::WorkerGone)??;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<T, TpmError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |w| {
            let _ = reply_tx.send(f(w));
        });
        self.tx
            .as_ref()
            .ok_or(TpmError::WorkerGone)?
            .send(job)
            .map_err(|_| TpmError::WorkerGone)?;
        reply_rx.recv().map_err(|_| TpmError::WorkerGone)?
    }
}

impl TssAttester {
    /// Times one `TPM2_Quote` alone (no PCR reads, no marshalling) on the TPM thread: the raw TPM
    /// cost that performance figures subtract from the endpoint's latency.
    pub fn raw_quote_time(
        &self,
        nonce: &[u8],
        selection: &PcrSelection,
    ) -> Result<std::time::Duration, TpmError> {
        crate::check_selection(selection)?;
        let selection = selection.clone();
        let nonce = nonce.to_vec();
        self.call(move |w| {
            w.with_conn(|c| {
                let list = tss_selection(&selection)?;
                let data = Data::try_from(nonce.clone()).op("nonce")?;
                let ak = c.ak;
                let start = std::time::Instant::now();
                c.ctx
                    .execute_with_session(Some(AuthSession::Password), |ctx| {
                        ctx.quote(ak, data, SignatureScheme::Null, list)
                    })
                    .op("Quote")?;
                Ok(start.elapsed())
            })
        })
    }
}

impl Attester for TssAttester {
    fn facts(&self) -> Result<TpmFacts, TpmError> {
        self.call(|w| w.with_conn(|c| Ok(c.facts.clone())))
    }

    fn ek(&self) -> Result<EkData, TpmError> {
        self.call(|w| w.with_conn(|c| Ok(c.ek_data.clone())))
    }

    fn ak_public(&self) -> Result<Vec<u8>, TpmError> {
        self.call(|w| w.with_conn(|c| Ok(c.ak_public.clone())))
    }

    fn pcr_read(&self, selection: &PcrSelection) -> Result<PcrValues, TpmError> {
        crate::check_selection(selection)?;
        let selection = selection.clone();
        self.call(move |w| w.with_conn(|c| pcr_read(&mut c.ctx, &selection)))
    }

    fn quote(&self, nonce: &[u8], selection: &PcrSelection) -> Result<QuoteOutput, TpmError> {
        crate::check_selection(selection)?;
        if nonce.len() > 64 {
            return Err(TpmError::InvalidInput(format!(
                "nonce of {} bytes; at most 64",
                nonce.len()
            )));
        }
        let selection = selection.clone();
        let nonce = nonce.to_vec();
        self.call(move |w| w.with_conn(|c| c.quote(&nonce, &selection)))
    }

    fn activate_credential(
        &self,
        blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let blob = blob.to_vec();
        let secret = encrypted_secret.to_vec();
        self.call(move |w| w.with_conn(|c| c.activate(&blob, &secret)))
    }
}

/// A failure inside a job: a TSS error (maybe a transport failure worth a reconnect) or a
/// finished [`TpmError`].
#[derive(Debug)]
enum Fail {
    Tss(&'static str, tss_esapi::Error),
    Done(TpmError),
}

impl From<TpmError> for Fail {
    fn from(e: TpmError) -> Self {
        Self::Done(e)
    }
}

trait Op<T> {
    fn op(self, name: &'static str) -> Result<T, Fail>;
}

impl<T> Op<T> for Result<T, tss_esapi::Error> {
    fn op(self, name: &'static str) -> Result<T, Fail> {
        self.map_err(|e| Fail::Tss(name, e))
    }
}

struct Worker {
    config: TssConfig,
    conn: Option<Conn>,
}

impl Worker {
    fn finish(&self, f: Fail) -> TpmError {
        match f {
            Fail::Done(e) => e,
            Fail::Tss(op, e) => match classify(op, &e) {
                TpmError::NoDevice { detail, .. } => TpmError::NoDevice {
                    tcti: self.config.tcti.clone(),
                    detail,
                },
                other => other,
            },
        }
    }

    fn ensure(&mut self) -> Result<&mut Conn, TpmError> {
        if self.conn.is_none() {
            let conn = Conn::open(&self.config).map_err(|f| self.finish(f))?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or(TpmError::WorkerGone)
    }

    fn with_conn<T>(
        &mut self,
        mut f: impl FnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, TpmError> {
        for attempt in 0..2 {
            let conn = self.ensure()?;
            match f(conn) {
                Ok(v) => return Ok(v),
                Err(Fail::Tss(op, e))
                    if attempt == 0 && (is_transport(&e) || is_lost_objects(&e)) =>
                {
                    tracing::warn!(op, error = %e, "lost the TPM connection or its loaded keys (TPM restarted?); reconnecting");
                    // Drop the dead connection; its flushes fail harmlessly.
                    self.conn = None;
                }
                Err(other) => return Err(self.finish(other)),
            }
        }
        Err(TpmError::Tpm {
            op: "reconnect",
            detail: "the TPM connection failed twice".into(),
            rc: None,
        })
    }
}

/// A live connection: ESYS context with the EK and AK loaded.
struct Conn {
    ctx: Context,
    ek: KeyHandle,
    ak: KeyHandle,
    ek_user_with_auth: bool,
    ek_name_alg: HashingAlgorithm,
    ek_data: EkData,
    ak_public: Vec<u8>,
    facts: TpmFacts,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for h in [self.ak, self.ek] {
            if let Err(e) = self.ctx.flush_context(ObjectHandle::from(h)) {
                tracing::debug!(error = %e, "flushing a TPM object on close failed");
            }
        }
    }
}

/// Flushes a session on every path unless disarmed.
struct SessionGuard<'a> {
    ctx: &'a mut Context,
    session: AuthSession,
    armed: bool,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let handle = SessionHandle::from(self.session);
        if let Err(e) = self.ctx.flush_context(ObjectHandle::from(handle)) {
            tracing::debug!(error = %e, "flushing a TPM session failed");
        }
    }
}

/// Flushes a key on every path unless disarmed.
struct KeyGuard<'a> {
    ctx: &'a mut Context,
    key: Option<KeyHandle>,
}

impl KeyGuard<'_> {
    fn keep(mut self) -> Option<KeyHandle> {
        self.key.take()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            let _ = self.ctx.flush_context(ObjectHandle::from(k));
        }
    }
}

pub(crate) const TPMA_PERMANENT_OWNER_AUTH_SET: u32 = 1 << 0;
pub(crate) const TPMA_PERMANENT_ENDORSEMENT_AUTH_SET: u32 = 1 << 1;
pub(crate) const TPMA_PERMANENT_IN_LOCKOUT: u32 = 1 << 9;
pub(crate) const TPMA_STARTUP_CLEAR_EH_ENABLE: u32 = 1 << 2;
const RSA_EK_CERT_NV: u32 = 0x01c0_0002;
const ECC_EK_CERT_NV: u32 = 0x01c0_000a;

/// TPM properties from `tag` on (at most `count`).
pub(crate) fn property(
    ctx: &mut Context,
    tag: PropertyTag,
    count: u32,
) -> Result<Vec<(PropertyTag, u32)>, tss_esapi::Error> {
    let (data, _) = ctx.execute_without_session(|c| {
        c.get_capability(CapabilityType::TpmProperties, tag.into(), count)
    })?;
    Ok(match data {
        CapabilityData::TpmProperties(list) => {
            list.iter().map(|p| (p.property(), p.value())).collect()
        }
        _ => Vec::new(),
    })
}

/// The value of `tag` among `props`.
pub(crate) fn property_value(props: &[(PropertyTag, u32)], tag: PropertyTag) -> Option<u32> {
    props.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v)
}

/// A vendor string packed in a property, as text.
pub(crate) fn fourcc(v: u32) -> String {
    v.to_be_bytes()
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|b| char::from(*b))
        .collect()
}

fn hashing(h: HashAlg) -> HashingAlgorithm {
    match h {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    }
}

fn slot(index: u8) -> Result<PcrSlot, Fail> {
    PcrSlot::try_from(1u32 << index).op("PCR selection")
}

fn tss_selection(
    selection: &PcrSelection,
) -> Result<tss_esapi::structures::PcrSelectionList, Fail> {
    let mut b = PcrSelectionListBuilder::new();
    for bank in &selection.banks {
        let slots = bank
            .pcrs
            .iter()
            .map(|p| slot(*p))
            .collect::<Result<Vec<_>, _>>()?;
        b = b.with_selection(hashing(bank.hash), &slots);
    }
    b.build().op("PCR selection")
}

/// Reads PCRs, at most [`crate::MAX_PCRS_PER_READ`] per command.
fn pcr_read(ctx: &mut Context, selection: &PcrSelection) -> Result<PcrValues, Fail> {
    let mut out = PcrValues::new();
    for bank in &selection.banks {
        let mut pcrs = bank.pcrs.clone();
        pcrs.sort_unstable();
        pcrs.dedup();
        for chunk in pcrs.chunks(crate::MAX_PCRS_PER_READ) {
            let list = tss_selection(&PcrSelection {
                banks: vec![BankSelection {
                    hash: bank.hash,
                    pcrs: chunk.to_vec(),
                }],
            })?;
            let (_, read_sel, digests) = ctx
                .execute_without_session(|c| c.pcr_read(list))
                .op("PCR_Read")?;
            let returned: Vec<u8> = read_sel
                .get_selections()
                .iter()
                .filter(|s| s.hashing_algorithm() == hashing(bank.hash))
                .flat_map(|s| s.selected())
                .map(|s| u32::from(s).trailing_zeros() as u8)
                .collect();
            if returned.is_empty() {
                return Err(TpmError::BankNotAllocated(bank.hash.name().to_string()).into());
            }
            let mut returned = returned;
            returned.sort_unstable();
            if returned != chunk {
                return Err(TpmError::Tpm {
                    op: "PCR_Read",
                    detail: format!(
                        "asked for {bank} PCRs {chunk:?}, the TPM returned {returned:?}",
                        bank = bank.hash
                    ),
                    rc: None,
                }
                .into());
            }
            for (index, digest) in returned.iter().zip(digests.value()) {
                out.insert(bank.hash, *index, digest.value().to_vec())
                    .map_err(|e| TpmError::Tpm {
                        op: "PCR_Read",
                        detail: e.to_string(),
                        rc: None,
                    })?;
            }
        }
    }
    Ok(out)
}

fn marshal_public(p: tss_esapi::structures::Public) -> Result<Vec<u8>, Fail> {
    PublicBuffer::try_from(p)
        .and_then(|b| b.marshall())
        .op("marshal public area")
}

/// The object's public area as the TPM has it (`TPM2B_PUBLIC`), checked against its Name.
fn read_public_checked(
    ctx: &mut Context,
    key: KeyHandle,
    what: &'static str,
) -> Result<(Vec<u8>, Public), Fail> {
    let (public, name, _) = ctx
        .execute_without_session(|c| c.read_public(key))
        .op("ReadPublic")?;
    let bytes = marshal_public(public)?;
    let parsed = Public::from_tpm2b(&bytes).map_err(|e| TpmError::Tpm {
        op: "ReadPublic",
        detail: format!("{what} public area: {e}"),
        rc: None,
    })?;
    if parsed.name() != name.value() {
        return Err(TpmError::Tpm {
            op: "ReadPublic",
            detail: format!("{what}: the marshalled public area does not hash to the TPM's Name"),
            rc: None,
        }
        .into());
    }
    Ok((bytes, parsed))
}

fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> Fail {
    Fail::Done(TpmError::State {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

impl Conn {
    fn open(cfg: &TssConfig) -> Result<Self, Fail> {
        let conf = TctiNameConf::from_str(&cfg.tcti).map_err(|e| {
            TpmError::InvalidInput(format!("TCTI `{}` is not valid: {e}", cfg.tcti))
        })?;
        let mut ctx = Context::new(conf).map_err(|e| TpmError::NoDevice {
            tcti: cfg.tcti.clone(),
            detail: e.to_string(),
        })?;

        // 1. State checks with plain-language failures.
        let props = match property(&mut ctx, PropertyTag::Permanent, 2) {
            Err(e) if raw_rc(&e).and_then(tpm_code) == Some(rc::INITIALIZE) => {
                tracing::warn!("the TPM was not started; sending TPM2_Startup(CLEAR)");
                ctx.startup(StartupType::Clear).op("Startup")?;
                property(&mut ctx, PropertyTag::Permanent, 2).op("GetCapability")?
            }
            other => other.op("GetCapability")?,
        };
        let permanent = property_value(&props, PropertyTag::Permanent).unwrap_or(0);
        let startup_clear = property_value(&props, PropertyTag::StartupClear).unwrap_or(u32::MAX);
        if permanent & TPMA_PERMANENT_IN_LOCKOUT != 0 {
            return Err(TpmError::Lockout {
                detail: "TPMA_PERMANENT.inLockout is set".into(),
            }
            .into());
        }
        if startup_clear & TPMA_STARTUP_CLEAR_EH_ENABLE == 0 {
            return Err(TpmError::Disabled {
                detail: "TPMA_STARTUP_CLEAR.ehEnable is clear".into(),
            }
            .into());
        }
        if permanent & TPMA_PERMANENT_ENDORSEMENT_AUTH_SET != 0 && cfg.owner_secret.is_empty() {
            return Err(TpmError::WrongOwnerSecret {
                detail:
                    "the endorsement hierarchy has an auth value and TPM_OWNER_SECRET is not set"
                        .into(),
            }
            .into());
        }

        // 2. Transient objects left by a client that died (only ours are visible behind a
        //    resource manager; swtpm has none).
        flush_stale_transients(&mut ctx);

        // The secret applies to the hierarchies that have an auth value; a TPM whose ownership
        // was cleared has none, and a secret sent anyway would be refused.
        if !cfg.owner_secret.is_empty() {
            let auth = Auth::try_from(cfg.owner_secret.bytes().to_vec()).op("owner secret")?;
            if permanent & TPMA_PERMANENT_ENDORSEMENT_AUTH_SET != 0 {
                ctx.tr_set_auth(Hierarchy::Endorsement.into(), auth.clone())
                    .op("set endorsement auth")?;
            } else {
                tracing::info!(
                    "TPM_OWNER_SECRET is set but the endorsement hierarchy has no auth value; not using it there"
                );
            }
            if permanent & TPMA_PERMANENT_OWNER_AUTH_SET != 0 {
                ctx.tr_set_auth(Hierarchy::Owner.into(), auth)
                    .op("set owner auth")?;
            }
        }

        // 3. Facts.
        let facts = read_facts(&mut ctx, &cfg.tcti)?;

        // 4. EK from the TCG default template (RSA 2048 "L-1" or ECC P-256 "L-2").
        let (created, ek_algorithm) = create_ek(&mut ctx, cfg.ek_algorithm)?;
        let ek_guard = KeyGuard {
            ctx: &mut ctx,
            key: Some(created.key_handle),
        };
        let (ek_public, ek_parsed) = read_public_checked(ek_guard.ctx, created.key_handle, "EK")?;
        let certificate = read_nv_cert(ek_guard.ctx, ek_algorithm);
        let ek_user_with_auth = ek_parsed.has(nodetrust_tpm_wire::public::attr::USER_WITH_AUTH);
        let ek_name_alg = hashing(ek_parsed.name_alg);

        // 5. AK.
        let ak = load_or_create_ak(ek_guard.ctx, created.key_handle, cfg, ek_algorithm)?;
        let ak_guard = KeyGuard {
            ctx: ek_guard.ctx,
            key: Some(ak),
        };
        let (ak_public, ak_parsed) = read_public_checked(ak_guard.ctx, ak, "AK")?;
        let ak = ak_guard.keep().ok_or(TpmError::WorkerGone)?;
        let ek = ek_guard.keep().ok_or(TpmError::WorkerGone)?;
        tracing::info!(
            ek = %ek_parsed.describe(),
            ek_certificate = certificate.is_some(),
            ak = %ak_parsed.describe(),
            ak_name = %hex::encode(ak_parsed.name()),
            "TPM ready"
        );
        Ok(Self {
            ctx,
            ek,
            ak,
            ek_user_with_auth,
            ek_name_alg,
            ek_data: EkData {
                public: ek_public,
                certificate,
            },
            ak_public,
            facts,
        })
    }

    fn quote(&mut self, nonce: &[u8], selection: &PcrSelection) -> Result<QuoteOutput, Fail> {
        let list = tss_selection(selection)?;
        let data = Data::try_from(nonce.to_vec()).op("nonce")?;
        for _ in 0..QUOTE_ATTEMPTS {
            let ak = self.ak;
            let (attest, signature) = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.quote(ak, data.clone(), SignatureScheme::Null, list.clone())
                })
                .op("Quote")?;
            let attest = attest.marshall().op("marshal TPMS_ATTEST")?;
            let signature = signature.marshall().op("marshal TPMT_SIGNATURE")?;
            // Read after the quote and check the values against the quote's pcrDigest: a match
            // proves they are the quoted values (a separate read before the quote would add
            // nothing the digest does not already prove); an extend that slipped in makes them
            // differ, and the quote is taken again.
            let after = pcr_read(&mut self.ctx, selection)?;
            if pcrs_match_quote(&attest, &signature, &after)? {
                return Ok(QuoteOutput {
                    attest,
                    signature,
                    pcrs: after,
                });
            }
            tracing::debug!("a PCR changed while quoting; quoting again");
        }
        Err(TpmError::Tpm {
            op: "Quote",
            detail: format!("PCRs kept changing during {QUOTE_ATTEMPTS} quote attempts"),
            rc: None,
        }
        .into())
    }

    fn activate(&mut self, blob: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, Fail> {
        let id_object = IdObject::try_from(blob.to_vec()).map_err(|_| {
            TpmError::InvalidInput(format!(
                "credential blob of {} bytes is too long",
                blob.len()
            ))
        })?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec()).map_err(|_| {
            TpmError::InvalidInput(format!(
                "encrypted secret of {} bytes is too long",
                encrypted_secret.len()
            ))
        })?;
        let (ak, ek) = (self.ak, self.ek);
        let result = if self.ek_user_with_auth {
            self.ctx.execute_with_sessions(
                (
                    Some(AuthSession::Password),
                    Some(AuthSession::Password),
                    None,
                ),
                |c| c.activate_credential(ak, ek, id_object, secret),
            )
        } else {
            let session = ek_policy_session(&mut self.ctx, self.ek_name_alg)?;
            let guard = SessionGuard {
                ctx: &mut self.ctx,
                session,
                armed: true,
            };
            guard
                .ctx
                .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
                    c.activate_credential(ak, ek, id_object, secret)
                })
        };
        match result {
            Ok(d) => Ok(d.value().to_vec()),
            Err(e) if is_transport(&e) || is_lost_objects(&e) => {
                Err(Fail::Tss("ActivateCredential", e))
            }
            Err(e) => match raw_rc(&e).and_then(tpm_code) {
                Some(
                    rc::INTEGRITY
                    | rc::VALUE
                    | rc::SIZE
                    | rc::ECC_POINT
                    | rc::KEY
                    | rc::KEY_SIZE
                    | rc::POLICY_FAIL
                    | rc::FAILURE,
                ) => Err(TpmError::CredentialRejected {
                    detail: e.to_string(),
                }
                .into()),
                _ => Err(Fail::Tss("ActivateCredential", e)),
            },
        }
    }
}

/// A policy session satisfying PolicySecret(TPM_RH_ENDORSEMENT): what the TCG low-range EK
/// templates require (they clear userWithAuth). The caller flushes it.
fn ek_policy_session(ctx: &mut Context, name_alg: HashingAlgorithm) -> Result<AuthSession, Fail> {
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::Null,
            name_alg,
        )
        .op("StartAuthSession")?
        .ok_or(TpmError::Tpm {
            op: "StartAuthSession",
            detail: "no session returned".into(),
            rc: None,
        })?;
    let guard = SessionGuard {
        ctx,
        session,
        armed: true,
    };
    let (attrs, mask) = SessionAttributesBuilder::new()
        .with_continue_session(true)
        .build();
    guard
        .ctx
        .tr_sess_set_attributes(session, attrs, mask)
        .op("set session attributes")?;
    let policy = PolicySession::try_from(session).op("policy session")?;
    guard
        .ctx
        .execute_with_session(Some(AuthSession::Password), |c| {
            c.policy_secret(
                policy,
                tss_esapi::handles::AuthHandle::Endorsement,
                Default::default(),
                Default::default(),
                Default::default(),
                None,
            )
        })
        .op("PolicySecret(endorsement)")?;
    let mut guard = guard;
    guard.armed = false;
    Ok(session)
}

fn flush_stale_transients(ctx: &mut Context) {
    const TRANSIENT_FIRST: u32 = 0x8000_0000;
    let handles = match ctx
        .execute_without_session(|c| c.get_capability(CapabilityType::Handles, TRANSIENT_FIRST, 64))
    {
        Ok((CapabilityData::Handles(list), _)) => list.into_inner(),
        _ => return,
    };
    for h in handles {
        if !matches!(h, TpmHandle::Transient(_)) {
            continue;
        }
        match ctx.execute_without_session(|c| c.tr_from_tpm_public(h)) {
            Ok(obj) => {
                if ctx.flush_context(obj).is_ok() {
                    tracing::info!(handle = ?h, "flushed a transient object left loaded by an earlier client");
                }
            }
            Err(e) => {
                tracing::debug!(handle = ?h, error = %e, "cannot open a stale transient object")
            }
        }
    }
}

fn read_nv_cert(ctx: &mut Context, alg: EkAlgorithm) -> Option<Vec<u8>> {
    let (selection, index) = match alg {
        EkAlgorithm::Rsa2048 => (
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            RSA_EK_CERT_NV,
        ),
        EkAlgorithm::EccP256 => (
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            ECC_EK_CERT_NV,
        ),
    };
    match ek::retrieve_ek_pubcert(ctx, selection) {
        Ok(c) if !c.is_empty() => Some(trim_der(c)),
        Ok(_) => None,
        Err(e) => {
            tracing::info!(nv_index = format!("{index:#010x}"), error = %e, "no EK certificate in NV");
            None
        }
    }
}

/// Creates the EK from its default template: the configured one, else RSA with a fallback to
/// ECC on a TPM that has no RSA.
fn create_ek(
    ctx: &mut Context,
    wanted: Option<EkAlgorithm>,
) -> Result<(tss_esapi::structures::CreatePrimaryKeyResult, EkAlgorithm), Fail> {
    let mut tried = Vec::new();
    for alg in wanted.map_or(vec![EkAlgorithm::Rsa2048, EkAlgorithm::EccP256], |a| {
        vec![a]
    }) {
        let template = match alg {
            EkAlgorithm::Rsa2048 => {
                ek::create_ek_public_from_default_template(AsymmetricAlgorithm::Rsa, None)
            }
            EkAlgorithm::EccP256 => {
                ek::create_ek_public_from_default_template(AsymmetricAlgorithm::Ecc, None)
            }
        }
        .op("EK template")?;
        match ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
        }) {
            Ok(created) => return Ok((created, alg)),
            Err(e) => match classify("CreatePrimary(EK)", &e) {
                // Authorization, lockout, disabled, transport: no point trying another template.
                TpmError::Tpm { .. } if wanted.is_none() => {
                    tracing::info!(template = alg.name(), error = %e, "cannot create the EK from this template");
                    tried.push(e);
                }
                _ => return Err(Fail::Tss("CreatePrimary(EK)", e)),
            },
        }
    }
    match tried.pop() {
        Some(e) => Err(Fail::Tss("CreatePrimary(EK)", e)),
        None => Err(TpmError::Tpm {
            op: "CreatePrimary(EK)",
            detail: "no EK template to try".into(),
            rc: None,
        }
        .into()),
    }
}

/// NV certificate areas are often padded after the DER; keep the DER SEQUENCE only.
fn trim_der(mut c: Vec<u8>) -> Vec<u8> {
    let len = match c.get(..4) {
        Some([0x30, 0x82, hi, lo]) => Some(4 + (usize::from(*hi) << 8 | usize::from(*lo))),
        Some([0x30, 0x81, l, _]) => Some(3 + usize::from(*l)),
        _ => None,
    };
    if let Some(len) = len {
        if len <= c.len() {
            c.truncate(len);
        }
    }
    c
}

fn read_facts(ctx: &mut Context, tcti: &str) -> Result<TpmFacts, Fail> {
    let props = property(ctx, PropertyTag::Manufacturer, 8).op("GetCapability")?;
    let manufacturer = property_value(&props, PropertyTag::Manufacturer)
        .map(fourcc)
        .unwrap_or_default();
    let vendor: String = [
        PropertyTag::VendorString1,
        PropertyTag::VendorString2,
        PropertyTag::VendorString3,
        PropertyTag::VendorString4,
    ]
    .iter()
    .filter_map(|t| property_value(&props, *t))
    .map(fourcc)
    .collect::<String>()
    .trim()
    .to_string();
    let fw1 = property_value(&props, PropertyTag::FirmwareVersion1).unwrap_or(0);
    let fw2 = property_value(&props, PropertyTag::FirmwareVersion2).unwrap_or(0);
    let firmware_version = format!(
        "{}.{}.{}.{}",
        fw1 >> 16,
        fw1 & 0xffff,
        fw2 >> 16,
        fw2 & 0xffff
    );

    let (data, _) = ctx
        .execute_without_session(|c| c.get_capability(CapabilityType::AssignedPcr, 0, 16))
        .op("GetCapability(PCRs)")?;
    let mut pcr_banks = Vec::new();
    if let CapabilityData::AssignedPcr(list) = data {
        for s in list.get_selections() {
            if s.is_empty() {
                continue;
            }
            let id: u16 = s.hashing_algorithm().into();
            if let Some(h) = HashAlg::from_id(id) {
                pcr_banks.push(h);
            }
        }
    }
    let measured_launch = match pcr_banks
        .iter()
        .find(|h| **h == HashAlg::Sha256)
        .or(pcr_banks.first())
    {
        Some(bank) => {
            let v = pcr_read(
                ctx,
                &PcrSelection {
                    banks: vec![BankSelection {
                        hash: *bank,
                        pcrs: vec![17],
                    }],
                },
            )?;
            v.get(*bank, 17)
                .is_some_and(|v| v.iter().any(|b| *b != 0xff))
        }
        None => false,
    };
    let software = is_software_tcti(tcti) || (vendor.contains("SW") && vendor.contains("TPM"));
    Ok(TpmFacts {
        manufacturer,
        vendor,
        firmware_version,
        pcr_banks,
        measured_launch,
        software,
    })
}

fn ak_files(cfg: &TssConfig, ek: EkAlgorithm) -> (PathBuf, PathBuf) {
    let base = format!("ak-{}-{}", cfg.ak_algorithm.name(), ek.name());
    (
        cfg.state_dir.join(format!("{base}.pub")),
        cfg.state_dir.join(format!("{base}.priv")),
    )
}

fn load_or_create_ak(
    ctx: &mut Context,
    ek: KeyHandle,
    cfg: &TssConfig,
    ek_algorithm: EkAlgorithm,
) -> Result<KeyHandle, Fail> {
    let (pub_path, priv_path) = ak_files(cfg, ek_algorithm);
    if pub_path.exists() && priv_path.exists() {
        let public_bytes = std::fs::read(&pub_path).map_err(|e| state_err(&pub_path, e))?;
        let private_bytes = std::fs::read(&priv_path).map_err(|e| state_err(&priv_path, e))?;
        let public = PublicBuffer::unmarshall(&public_bytes)
            .and_then(tss_esapi::structures::Public::try_from)
            .map_err(|e| state_err(&pub_path, format!("not a TPM2B_PUBLIC: {e}")))?;
        let private = Private::try_from(private_bytes).map_err(|e| state_err(&priv_path, e))?;
        match ak::load_ak(ctx, ek, None, private, public) {
            Ok(h) => {
                tracing::info!(path = %pub_path.display(), "loaded the attestation key");
                return Ok(h);
            }
            Err(e) if is_transport(&e) => return Err(Fail::Tss("Load(AK)", e)),
            Err(e) => match classify("Load(AK)", &e) {
                err @ (TpmError::WrongOwnerSecret { .. }
                | TpmError::Lockout { .. }
                | TpmError::Disabled { .. }) => return Err(err.into()),
                _ => tracing::warn!(
                    error = %e,
                    "the saved attestation key does not load under this TPM's EK (TPM cleared or replaced?); \
                     creating a new one, and the node must register again"
                ),
            },
        }
    }
    if let Err(e) = std::fs::create_dir_all(&cfg.state_dir) {
        return Err(state_err(&cfg.state_dir, e));
    }
    let (key_alg, sign_alg) = match cfg.ak_algorithm {
        AkAlgorithm::Rsa2048 => (
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            SignatureSchemeAlgorithm::RsaSsa,
        ),
        AkAlgorithm::EccP256 => (
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            SignatureSchemeAlgorithm::EcDsa,
        ),
    };
    tracing::info!(
        algorithm = cfg.ak_algorithm.name(),
        "creating the attestation key (first start)"
    );
    let created = ak::create_ak_2(
        ctx,
        ek,
        HashingAlgorithm::Sha256,
        key_alg,
        sign_alg,
        None,
        None,
    )
    .op("Create(AK)")?;
    let public_bytes = marshal_public(created.out_public.clone())?;
    let private_bytes = created.out_private.value().to_vec();
    write_private_file(&priv_path, &private_bytes).map_err(|e| state_err(&priv_path, e))?;
    write_private_file(&pub_path, &public_bytes).map_err(|e| state_err(&pub_path, e))?;
    ak::load_ak(ctx, ek, None, created.out_private, created.out_public).op("Load(AK)")
}

/// Opens a persistent object (e.g. a manufacturer's EK at 0x81010001) for lower-level use.
pub fn open_persistent(ctx: &mut Context, handle: u32) -> Result<KeyHandle, tss_esapi::Error> {
    let h = PersistentTpmHandle::new(handle)?;
    ctx.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(h)))
        .map(KeyHandle::from)
}

/// `TPM2_ActivateCredential` with the AK `ak` and the EK `ek` on a caller's context: a password
/// session for the AK, and for the EK a password session when its template sets userWithAuth,
/// else a policy session with PolicySecret(TPM_RH_ENDORSEMENT). Every session is flushed.
pub fn activate_credential_with(
    ctx: &mut Context,
    ak: KeyHandle,
    ek: KeyHandle,
    blob: &[u8],
    encrypted_secret: &[u8],
) -> Result<Vec<u8>, tss_esapi::Error> {
    let (public, _, _) = ctx.execute_without_session(|c| c.read_public(ek))?;
    let user_with_auth = public.object_attributes().user_with_auth();
    let name_alg = public.name_hashing_algorithm();
    let id_object = IdObject::try_from(blob.to_vec())?;
    let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())?;
    if user_with_auth {
        return ctx
            .execute_with_sessions(
                (
                    Some(AuthSession::Password),
                    Some(AuthSession::Password),
                    None,
                ),
                |c| c.activate_credential(ak, ek, id_object, secret),
            )
            .map(|d| d.value().to_vec());
    }
    let session = match ek_policy_session(ctx, name_alg) {
        Ok(s) => s,
        Err(Fail::Tss(_, e)) => return Err(e),
        Err(Fail::Done(_)) => {
            return Err(tss_esapi::Error::WrapperError(
                tss_esapi::WrapperErrorKind::InternalError,
            ))
        }
    };
    let guard = SessionGuard {
        ctx,
        session,
        armed: true,
    };
    guard
        .ctx
        .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
            c.activate_credential(ak, ek, id_object, secret)
        })
        .map(|d| d.value().to_vec())
}
