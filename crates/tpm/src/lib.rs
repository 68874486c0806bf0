//! The Trust Agent's TPM port.
//!
//! Everything the agent asks of a TPM goes through the blocking [`Attester`] trait, so the HTTP
//! API and the registration client are tested without a TPM, and a fleet simulator can stand up
//! thousands of fake hosts.
//!
//! # Layout
//! - [`Attester`] — the port (EK, AK, quote, PCR read, credential activation, TPM facts).
//! - [`error`] — [`TpmError`], one plain-language variant per failure an operator can fix.
//! - [`tss`] — [`TssAttester`], the tss-esapi implementation. This crate is the only one that links
//!   libtss2; every TPM command runs on one dedicated thread fed through a channel.
//! - [`software`] — [`SoftwareAttester`], a TPM made of software keys. Its evidence is real
//!   (`TPMS_ATTEST` bytes, signatures, credential activation) and **never trustworthy**.
//! - [`auth`] — how `TPM_OWNER_SECRET` is read.
//! - [`probe`] — a read-only look at the TPM's state (lockout, endorsement hierarchy) for
//!   `nodetrust-agent check`.
//!
//! # Features
//! - `tss` (default): the tss-esapi attester. A simulator that only needs [`SoftwareAttester`]
//!   turns default features off and does not link libtss2.
#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
#[cfg(feature = "tss")]
pub mod probe;
pub mod software;
#[cfg(feature = "tss")]
pub mod tss;

pub use error::TpmError;
pub use nodetrust_tpm_wire::{HashAlg, PcrSelection, PcrValues};
pub use software::SoftwareAttester;
#[cfg(feature = "tss")]
pub use tss::{EkAlgorithm, TssAttester, TssConfig};

/// Most PCRs one `TPM2_PCR_Read` returns (a `TPML_DIGEST` holds at most 8 digests).
pub const MAX_PCRS_PER_READ: usize = 8;

/// How often a quote is retaken when a PCR changed between the reads around it.
pub const QUOTE_ATTEMPTS: usize = 5;

/// The algorithm of the attestation key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AkAlgorithm {
    /// RSA-2048 with RSASSA-PKCS1-v1_5 and SHA-256: what every verifier and TPM supports.
    #[default]
    Rsa2048,
    /// ECC NIST P-256 with ECDSA and SHA-256: much faster to create and to sign with.
    EccP256,
}

impl AkAlgorithm {
    /// The configuration name: `rsa2048` or `ecc-p256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "rsa2048",
            Self::EccP256 => "ecc-p256",
        }
    }

    /// Parses a configuration name (`rsa`, `rsa2048`, `ecc`, `ecc-p256`, `ecdsa`).
    pub fn from_name(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rsa" | "rsa2048" | "rsa-2048" | "rsassa" => Some(Self::Rsa2048),
            "ecc" | "ecc-p256" | "eccp256" | "p256" | "ecdsa" => Some(Self::EccP256),
            _ => None,
        }
    }
}

/// The endorsement key, as a verifier needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkData {
    /// `TPM2B_PUBLIC`.
    pub public: Vec<u8>,
    /// DER certificate from NV, when the manufacturer stored one.
    pub certificate: Option<Vec<u8>>,
}

/// A quote with the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteOutput {
    /// The exact `TPMS_ATTEST` bytes the TPM signed.
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// PCR values read around the quote; they hash to its pcrDigest.
    pub pcrs: PcrValues,
}

impl QuoteOutput {
    /// The quote's `pcrDigest` (the digest of the PCR values it covers), read from
    /// [`Self::attest`]; `None` when those bytes are no quote.
    pub fn pcr_digest(&self) -> Option<Vec<u8>> {
        nodetrust_tpm_wire::Attest::parse_quote(&self.attest)
            .ok()
            .map(|a| a.pcr_digest)
    }
}

/// Facts about the TPM for `GET /v2/host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmFacts {
    /// Manufacturer id (`IBM`, `INTC`, `MSFT`...).
    pub manufacturer: String,
    /// Vendor string (`SW   TPM` for swtpm).
    pub vendor: String,
    /// Firmware version, `a.b.c.d`.
    pub firmware_version: String,
    /// Allocated PCR banks.
    pub pcr_banks: Vec<HashAlg>,
    /// PCR 17 is not all-ones: a DRTM (tboot / TXT) measured launch happened.
    pub measured_launch: bool,
    /// A software TPM (swtpm, simulator, [`SoftwareAttester`]): never to be trusted.
    pub software: bool,
}

/// The TPM operations the agent needs. Blocking: call from a blocking context (a dedicated
/// thread or `spawn_blocking`), never directly on an async executor.
pub trait Attester: Send + Sync + std::fmt::Debug {
    /// Facts about the TPM.
    fn facts(&self) -> Result<TpmFacts, TpmError>;
    /// The endorsement key (public area and certificate).
    fn ek(&self) -> Result<EkData, TpmError>;
    /// The attestation key's `TPM2B_PUBLIC`.
    fn ak_public(&self) -> Result<Vec<u8>, TpmError>;
    /// Reads PCR values.
    fn pcr_read(&self, selection: &PcrSelection) -> Result<PcrValues, TpmError>;
    /// Quotes `selection` with `nonce` as qualifying data; the PCR values returned are the ones
    /// the quote covers: read with the quote and checked against its pcrDigest, the quote retaken
    /// (up to [`QUOTE_ATTEMPTS`] times) when an extend slipped in between.
    fn quote(&self, nonce: &[u8], selection: &PcrSelection) -> Result<QuoteOutput, TpmError>;
    /// `TPM2_ActivateCredential` of a challenge made for this TPM's EK and AK: returns the secret.
    /// `blob` is the `TPM2B_ID_OBJECT` contents, `encrypted_secret` the `TPM2B_ENCRYPTED_SECRET`
    /// contents.
    fn activate_credential(
        &self,
        blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError>;
}

/// Checks a selection an outside caller made: banks known and distinct, PCRs 0-23.
pub fn check_selection(selection: &PcrSelection) -> Result<(), TpmError> {
    if selection.is_empty() {
        return Err(TpmError::InvalidInput("no PCR selected".into()));
    }
    for bank in &selection.banks {
        if let Some(p) = bank
            .pcrs
            .iter()
            .find(|p| **p >= nodetrust_tpm_wire::pcr::PCR_COUNT)
        {
            return Err(TpmError::InvalidInput(format!(
                "PCR index {p} is not between 0 and 23"
            )));
        }
    }
    Ok(())
}

/// Whether PCR values hash to the quote's pcrDigest (with the signature's hash).
#[cfg(feature = "tss")]
pub(crate) fn pcrs_match_quote(
    attest: &[u8],
    signature: &[u8],
    pcrs: &PcrValues,
) -> Result<bool, TpmError> {
    let parsed = nodetrust_tpm_wire::Attest::parse_quote(attest).map_err(|e| TpmError::Tpm {
        op: "Quote",
        detail: format!("the TPM returned an unreadable quote: {e}"),
        rc: None,
    })?;
    let sig = nodetrust_tpm_wire::Signature::parse(signature).map_err(|e| TpmError::Tpm {
        op: "Quote",
        detail: format!("the TPM returned an unreadable signature: {e}"),
        rc: None,
    })?;
    match nodetrust_tpm_wire::verify::pcr_digest(&parsed.pcr_select, pcrs, sig.hash()) {
        Ok((digest, _)) => Ok(digest == parsed.pcr_digest),
        Err(_) => Ok(false),
    }
}
