//! The Trust Agent API (paths follow the OpenCIT Trust Agent v2 API).
//!
//! - `GET /version` (no auth) → [`VersionInfo`]
//! - `GET /v2/host` → [`HostInfo`]
//! - `POST /v2/tpm/quote` [`QuoteRequest`] → [`QuoteResponse`]
//! - `GET /v2/aik` → [`AikInfo`]
//! - `GET /v2/ek` → [`EkInfo`]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest nonce the agent accepts, in bytes (`TPM2B_DATA` of a SHA-512 TPM).
pub const MAX_NONCE: usize = 64;
/// Largest request body the agent reads, in bytes.
pub const MAX_REQUEST_BODY: usize = 4096;

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Program name.
    pub name: String,
    /// Semantic version.
    pub version: String,
}

/// `GET /v2/host`: facts about the machine the agent runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    /// Host name (the Kubernetes node name).
    pub host_name: String,
    /// Hardware UUID (DMI product_uuid; the node's systemUUID).
    pub hardware_uuid: String,
    /// OS name (`/etc/os-release` NAME).
    pub os_name: String,
    /// OS version (`/etc/os-release` VERSION_ID).
    pub os_version: String,
    /// Kernel release.
    pub kernel_version: String,
    /// Always `2.0`.
    pub tpm_version: String,
    /// TPM manufacturer (four-letter vendor id, e.g. `IBM`, `INTC`).
    pub tpm_manufacturer: String,
    /// TPM firmware version.
    pub tpm_firmware_version: String,
    /// PCR banks the TPM has allocated (`SHA1`, `SHA256`, ...).
    pub pcr_banks: Vec<String>,
    /// Whether a measured launch (tboot / TXT) happened: PCR 17 is not all-ones.
    pub measured_launch: bool,
    /// Secure Boot state from EFI variables, when known.
    pub secure_boot: Option<bool>,
    /// Whether the TPM is a software TPM (never to be trusted in production).
    pub software_tpm: bool,
    /// The agent's version.
    pub agent_version: String,
}

/// `POST /v2/tpm/quote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// The verifier's nonce, at most [`MAX_NONCE`] bytes.
    #[serde(with = "crate::b64")]
    pub nonce: Vec<u8>,
    /// PCR indices, 0-23.
    pub pcrs: Vec<u8>,
    /// Bank names (`SHA1`, `SHA256`, `SHA384`, `SHA512`; case-insensitive).
    pub pcrbanks: Vec<String>,
}

/// PCR values: bank name (`sha256`) → PCR index as a string → hex value.
pub type PcrMap = BTreeMap<String, BTreeMap<String, String>>;

/// The answer to a quote request: all a verifier needs, raw as the TPM produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteResponse {
    /// `TPMS_ATTEST` bytes (the signed message).
    #[serde(with = "crate::b64")]
    pub quote: Vec<u8>,
    /// `TPMT_SIGNATURE` bytes.
    #[serde(with = "crate::b64")]
    pub signature: Vec<u8>,
    /// The AK's `TPM2B_PUBLIC` (informational: the verifier uses the AK pinned at registration).
    #[serde(with = "crate::b64")]
    pub aik: Vec<u8>,
    /// PCR values read with the quote.
    pub pcrs: PcrMap,
    /// Measured-boot event log (TCG binary), when the host has one.
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_log: Option<Vec<u8>>,
    /// IMA runtime measurement log (binary), when the host has one.
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ima_log: Option<Vec<u8>>,
}

/// `GET /v2/aik`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AikInfo {
    /// `TPM2B_PUBLIC`.
    #[serde(with = "crate::b64")]
    pub aik: Vec<u8>,
    /// SubjectPublicKeyInfo PEM.
    pub pem: String,
    /// The AK's Name, hex.
    pub name: String,
}

/// `GET /v2/ek`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EkInfo {
    /// `TPM2B_PUBLIC` of the EK.
    #[serde(with = "crate::b64")]
    pub ek_public: Vec<u8>,
    /// DER EK certificate from NV, when present.
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ek_certificate: Option<Vec<u8>>,
    /// SubjectPublicKeyInfo PEM.
    pub pem: String,
}
