//! The Trust Agent API (paths follow the OpenCIT Trust Agent v2 API).
//!
//! - `GET /version` (no auth) → [`VersionInfo`]
//! - `GET /v2/host` → [`HostInfo`]
//! - `POST /v2/tpm/quote` [`QuoteRequest`] → [`QuoteResponse`]
//! - `POST /v2/ima` [`ImaRequest`] → [`ImaEntries`] (more of the IMA log, without a quote)
//! - `GET /v2/aik` → [`AikInfo`]
//! - `GET /v2/ek` → [`EkInfo`]

use std::borrow::Cow;
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// When present, the answer carries the IMA runtime log from this entry index on
    /// ([`QuoteResponse::ima_log`]); absent, no IMA log is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ima_offset: Option<u64>,
    /// The SHA-256 of the measured-boot event log the verifier holds a trusted appraisal of.
    /// When the host's event log still has this digest, the agent may leave it out of its
    /// answer ([`QuoteResponse::event_log_sha256`]). Sent only to agents that said they can
    /// ([`QuoteResponse::event_log_sha256`] in an earlier answer).
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub known_event_log_sha256: Option<Vec<u8>>,
    /// The digest of the PCR values (a quote's `pcrDigest`) the verifier holds a trusted
    /// appraisal of. When the answer's quote has this digest, the agent may leave its PCR
    /// values out ([`QuoteResponse::pcrs`]): the signed digest stands for them. Sent only to
    /// agents that said they can ([`QuoteResponse::pcr_digest`] in an earlier answer).
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub known_pcr_digest: Option<Vec<u8>>,
    /// The Name of the AK the verifier pinned at registration (`nameAlg` and the digest of
    /// its public area). When it is the Name of the agent's AK, the agent may leave its AK
    /// out of the answer ([`QuoteResponse::aik`]). Sent only to agents that said they can
    /// ([`QuoteResponse::pcr_digest`] in an earlier answer: an agent that can leave out its
    /// PCR values can leave out its AK).
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub known_aik_name: Option<Vec<u8>>,
}

impl QuoteRequest {
    /// Whether the verifier holds the event log whose SHA-256 is `sha256`
    /// ([`Self::known_event_log_sha256`]): the answer may then leave it out.
    pub fn holds_event_log(&self, sha256: &[u8]) -> bool {
        self.known_event_log_sha256.as_deref() == Some(sha256)
    }

    /// Whether the verifier holds the PCR values whose digest is `pcr_digest`, the `pcrDigest`
    /// of the answer's quote ([`Self::known_pcr_digest`]): the answer may then leave them out.
    pub fn holds_pcrs(&self, pcr_digest: &[u8]) -> bool {
        self.known_pcr_digest.as_deref() == Some(pcr_digest)
    }

    /// Whether the verifier pinned the AK whose Name is `name`, the agent's
    /// ([`Self::known_aik_name`]): the answer may then leave it out.
    pub fn holds_aik(&self, name: &[u8]) -> bool {
        self.known_aik_name.as_deref() == Some(name)
    }
}

/// Most IMA entries the agent sends in one answer; the verifier asks again for the rest.
pub const MAX_IMA_ENTRIES: u32 = 16_384;
/// Most bytes of IMA log the agent sends in one answer (an entry larger than this alone is
/// still sent whole, as the only entry of its answer).
pub const MAX_IMA_BYTES: usize = 4 << 20;

/// `POST /v2/ima`: IMA log entries from `offset` on, without a quote (the rest of a log that
/// did not fit into the quote's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImaRequest {
    /// Index of the first entry wanted (0-based).
    pub offset: u64,
    /// Fewer entries than [`MAX_IMA_ENTRIES`], if the verifier wants fewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<u32>,
}

/// A run of consecutive IMA entries, as the kernel's `binary_runtime_measurements` holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImaEntries {
    /// Index of the first entry in `log` (the requested offset).
    pub start: u64,
    /// Entries in `log`.
    pub count: u64,
    /// The entries' bytes (binary format, whole entries only).
    #[serde(with = "crate::b64")]
    pub log: Vec<u8>,
    /// Whether the log holds entries after these (ask again from `start + count`).
    pub more: bool,
    /// When the agent read to the end of the log: how many entries it holds. Fewer than
    /// `start` means the log is shorter than the verifier thinks (truncated, or a new boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Why the agent stopped before the end: an entry it could not delimit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// PCR values: bank name (`sha256`) → PCR index as a string → hex value.
pub type PcrMap = BTreeMap<String, BTreeMap<String, String>>;

/// The PCR values of an answer ([`QuoteResponse::pcrs`]): a [`PcrMap`] on the wire, read into
/// one only when asked ([`Pcrs::map`]). A verifier that has appraised the same signed quote
/// before reuses that appraisal (the quote's signed PCR digest is the same) and never reads
/// the values: received, they are kept as the JSON text they came in, a JSON object checked as
/// no more than that until they are read.
#[derive(Debug, Clone)]
pub struct Pcrs(PcrsForm);

#[derive(Debug, Clone)]
enum PcrsForm {
    /// As received.
    Text(Box<serde_json::value::RawValue>),
    /// As built by an agent.
    Map(PcrMap),
}

impl Pcrs {
    /// The values as a map: parsed from the text they came in, or the map they were built from.
    pub fn map(&self) -> Result<Cow<'_, PcrMap>, String> {
        match &self.0 {
            PcrsForm::Text(text) => serde_json::from_str(text.get())
                .map(Cow::Owned)
                .map_err(|e| e.to_string()),
            PcrsForm::Map(map) => Ok(Cow::Borrowed(map)),
        }
    }

    /// The values of a JSON object of banks (`{"sha256": {"0": "hex"}}`, as
    /// `PcrValues::to_json` writes it).
    pub fn from_value(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value::<PcrMap>(value).map(Self::from)
    }
}

impl From<PcrMap> for Pcrs {
    fn from(map: PcrMap) -> Self {
        Self(PcrsForm::Map(map))
    }
}

/// The same values, or the same error reading them.
impl PartialEq for Pcrs {
    fn eq(&self, other: &Self) -> bool {
        self.map() == other.map()
    }
}

impl Eq for Pcrs {}

impl Serialize for Pcrs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            PcrsForm::Text(text) => text.serialize(serializer),
            PcrsForm::Map(map) => map.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Pcrs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        if !text.get().starts_with('{') {
            return Err(serde::de::Error::custom(
                "PCR values: expected a JSON object, bank name to values",
            ));
        }
        Ok(Self(PcrsForm::Text(text)))
    }
}

/// The answer to a quote request: all a verifier needs, raw as the TPM produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteResponse {
    /// `TPMS_ATTEST` bytes (the signed message).
    #[serde(with = "crate::b64")]
    pub quote: Vec<u8>,
    /// `TPMT_SIGNATURE` bytes.
    #[serde(with = "crate::b64")]
    pub signature: Vec<u8>,
    /// The AK's `TPM2B_PUBLIC` (informational: the verifier uses the AK pinned at registration,
    /// and reads this one only to say why a quote failed). Absent when the request named its
    /// Name ([`QuoteRequest::known_aik_name`]).
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub aik: Option<Vec<u8>>,
    /// PCR values read with the quote. Absent when the request named the quote's digest of
    /// them ([`QuoteRequest::known_pcr_digest`]): the verifier holds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcrs: Option<Pcrs>,
    /// The `pcrDigest` of `quote`, whether or not `pcrs` carries the values. An agent that
    /// sends it can leave out values the verifier holds ([`QuoteRequest::known_pcr_digest`]).
    /// The verifier reads the digest from the signed quote: this only says that the agent can.
    /// Absent from older agents.
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pcr_digest: Option<Vec<u8>>,
    /// Measured-boot event log (TCG binary), when the host has one.
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_log: Option<Vec<u8>>,
    /// The SHA-256 of the host's event log, whether or not `event_log` carries it. An agent
    /// that sends it can leave out a log the verifier holds
    /// ([`QuoteRequest::known_event_log_sha256`]): `event_log` is then absent and this names
    /// the log. Absent when the host has no event log (or from an older agent).
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_log_sha256: Option<Vec<u8>>,
    /// IMA runtime log entries from the request's `ima_offset` (at most [`MAX_IMA_ENTRIES`]);
    /// absent when none was asked for or the host has no IMA log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ima_log: Option<ImaEntries>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str, &str)]) -> PcrMap {
        let mut map = PcrMap::new();
        for (bank, index, value) in pairs {
            map.entry(bank.to_string())
                .or_default()
                .insert(index.to_string(), value.to_string());
        }
        map
    }

    #[test]
    fn pcr_values_are_read_when_asked_and_written_as_they_came() {
        let built = map(&[
            ("sha256", "0", "00ff"),
            ("sha256", "10", "ab"),
            ("sha1", "4", "cd"),
        ]);
        let text = serde_json::to_string(&Pcrs::from(built.clone())).unwrap();
        assert_eq!(text, serde_json::to_string(&built).unwrap());
        // Received: kept as its text (spacing and all) until read.
        let spaced = text.replace(':', " : ");
        let received: Pcrs = serde_json::from_str(&format!(" {spaced} ")).unwrap();
        assert_eq!(serde_json::to_string(&received).unwrap(), spaced);
        assert_eq!(received.map().unwrap().as_ref(), &built);
        assert_eq!(received, Pcrs::from(built.clone()));
        assert_ne!(received, Pcrs::from(map(&[("sha256", "0", "00ff")])));
        // Within an answer, and from a `serde_json::Value` as well.
        let answer = serde_json::json!({
            "quote": "", "signature": "", "aik": "", "pcrs": serde_json::from_str::<serde_json::Value>(&text).unwrap()
        });
        let read: QuoteResponse = serde_json::from_value(answer.clone()).unwrap();
        assert_eq!(read.pcrs.unwrap().map().unwrap().as_ref(), &built);
        let read: QuoteResponse = serde_json::from_str(&answer.to_string()).unwrap();
        assert_eq!(read.pcrs.unwrap().map().unwrap().as_ref(), &built);
    }

    #[test]
    fn pcr_values_and_the_ak_are_left_out_only_for_what_the_request_names() {
        let request: QuoteRequest = serde_json::from_value(serde_json::json!({
            "nonce": "AQI=", "pcrs": [0], "pcrbanks": ["SHA256"], "known_pcr_digest": "q80="
        }))
        .unwrap();
        assert_eq!(request.known_pcr_digest.as_deref(), Some(&[0xab, 0xcd][..]));
        assert!(request.holds_pcrs(&[0xab, 0xcd]));
        assert!(!request.holds_pcrs(&[0xab]));
        assert!(!request.holds_event_log(&[0xab, 0xcd]));
        assert!(!request.holds_aik(&[0xab, 0xcd]));
        let named: QuoteRequest = serde_json::from_value(serde_json::json!({
            "nonce": "AQI=", "pcrs": [0], "pcrbanks": ["SHA256"], "known_aik_name": "AAuq"
        }))
        .unwrap();
        assert!(named.holds_aik(&[0x00, 0x0b, 0xaa]));
        assert!(!named.holds_aik(&[0x00, 0x0b]));
        // An older verifier's request names none; written back, it carries no such field.
        let older: QuoteRequest = serde_json::from_value(serde_json::json!({
            "nonce": "AQI=", "pcrs": [0], "pcrbanks": ["SHA256"]
        }))
        .unwrap();
        assert!(!older.holds_pcrs(&[]));
        let written = serde_json::to_string(&older).unwrap();
        assert!(!written.contains("known_pcr_digest"), "{written}");
        assert!(!written.contains("known_aik_name"), "{written}");
        // An answer without its values and its AK: absent, or null.
        for absent in [None, Some(serde_json::Value::Null)] {
            let mut answer = serde_json::json!({
                "quote": "", "signature": "", "pcr_digest": "q80="
            });
            if let Some(v) = absent {
                answer["pcrs"] = v.clone();
                answer["aik"] = v;
            }
            let read: QuoteResponse = serde_json::from_value(answer).unwrap();
            assert_eq!((&read.pcrs, &read.aik), (&None, &None));
            assert_eq!(read.pcr_digest.as_deref(), Some(&[0xab, 0xcd][..]));
            let written = serde_json::to_string(&read).unwrap();
            assert!(
                !written.contains("pcrs") && !written.contains("aik"),
                "{written}"
            );
        }
    }

    #[test]
    fn pcr_values_that_are_no_object_are_refused_and_a_wrong_object_fails_when_read() {
        for not_an_object in ["5", "\"sha256\"", "[]", "null"] {
            let e = serde_json::from_str::<Pcrs>(not_an_object).unwrap_err();
            assert!(e.to_string().contains("expected a JSON object"), "{e}");
        }
        for wrong in [
            r#"{"sha256": 5}"#,
            r#"{"sha256": {"0": 1}}"#,
            r#"{"sha256": ["00"]}"#,
        ] {
            let received: Pcrs = serde_json::from_str(wrong).unwrap();
            assert!(received.map().is_err(), "{wrong}");
            assert_eq!(received, received.clone());
            assert_ne!(received, Pcrs::from(PcrMap::new()));
        }
    }
}
