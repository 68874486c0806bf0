//! The Linux IMA runtime measurement log: parse (ascii and binary), check, replay into PCR 10.
//!
//! # Formats
//! - **ascii** (`/sys/kernel/security/ima/ascii_runtime_measurements`): one entry per line,
//!   `PCR TEMPLATE-HASH TEMPLATE-NAME FIELDS...`.
//! - **binary** (`binary_runtime_measurements`, little-endian as the kernel writes it on x86 and
//!   arm64): `pcr u32, template_hash[20], name_len u32, name, [template_data_len u32],
//!   template_data`; the `ima` template has no length and a fixed layout.
//!
//! Templates `ima` (`d|n`), `ima-ng` (`d-ng|n-ng`) and `ima-sig` (`d-ng|n-ng|sig`) are decoded;
//! other templates in the binary log are kept with their raw template data (they replay, but
//! their fields are not named). In the ascii log only these three can be rebuilt.
//!
//! # Template hash
//! The kernel hashes the *template data*: for `ima-ng`/`ima-sig` the concatenation of
//! `u32 length || field` over the fields (`d-ng` is `"<alg>:\0" || digest`, `n-ng` is the path
//! with its NUL), for `ima` the 20-byte digest then the name zero-padded to 256 bytes. Both logs
//! show the SHA-1 template hash; an entry whose logged hash is not the hash of its data is a
//! [`ImaFinding`].
//!
//! # Replay (what is implemented)
//! Each entry extends its PCR (normally 10) in every bank:
//! - the SHA-1 bank with the logged SHA-1 template hash;
//! - other banks, by default ([`BankRule::Recompute`], Linux >= 5.1), with the template data
//!   hashed by that bank's algorithm, which is what the kernel extends;
//!   [`BankRule::PaddedSha1`] models older kernels, which extended the SHA-1 template hash
//!   zero-padded to the bank's size;
//! - a *violation* (logged template hash all zeros: a file opened for write while measured)
//!   extends all-ones (`0xFF...`) in every bank, as the kernel does.
//!
//! The log grows while a node runs, so replay is incremental: keep an [`ImaReplay`] and feed it
//! the new entries ([`replay_from`]), checked against the number already replayed.
//!
//! [`ImaLog::boot_aggregate_matches`] ties the log to the boot: its first entry hashes PCRs 0–7
//! (0–9 on TPM 2.0 since Linux 5.8) of the TPM.
//!
//! # Bounds
//! Binary entries: template name at most 255 bytes, template data at most
//! [`MAX_TEMPLATE_DATA`]; at most [`MAX_ENTRIES`] entries.

use std::collections::BTreeMap;

use nodetrust_tpm_wire::{HashAlg, PcrValues};

use crate::cursor::Cursor;
use crate::error::{ParseError, ParseErrorKind};

/// Largest template data of one binary entry (1 MiB; real entries are under a few KiB).
pub const MAX_TEMPLATE_DATA: usize = 1 << 20;
/// Most entries in one log.
pub const MAX_ENTRIES: usize = 1 << 24;
/// Longest template name.
const MAX_TEMPLATE_NAME: usize = 255;
/// The `ima` template pads names to this many bytes before hashing.
const IMA_NAME_PAD: usize = 256;

/// A template this module decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// `ima`: SHA-1 file digest and a name of at most 255 bytes.
    Ima,
    /// `ima-ng`: digest with algorithm, full path.
    ImaNg,
    /// `ima-ng` plus the file's signature (`security.ima`), possibly empty.
    ImaSig,
    /// Another template (binary log only), kept raw.
    Other(String),
}

impl Template {
    fn from_name(n: &str) -> Self {
        match n {
            "ima" => Self::Ima,
            "ima-ng" => Self::ImaNg,
            "ima-sig" => Self::ImaSig,
            other => Self::Other(other.to_string()),
        }
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Ima => "ima",
            Self::ImaNg => "ima-ng",
            Self::ImaSig => "ima-sig",
            Self::Other(n) => n,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaEntry {
    /// Entry number (0-based).
    pub number: usize,
    /// PCR extended.
    pub pcr: u32,
    /// Logged template hash (SHA-1, or SHA-256 in ascii logs that print it).
    pub template_hash: Vec<u8>,
    /// Template.
    pub template: Template,
    /// The template data the kernel hashed.
    pub template_data: Vec<u8>,
    /// File digest algorithm (`sha256`; `sha1` for the `ima` template).
    pub file_alg: String,
    /// File digest.
    pub file_digest: Vec<u8>,
    /// Path (or `boot_aggregate`).
    pub path: String,
    /// `ima-sig` signature, if any.
    pub signature: Option<Vec<u8>>,
}

impl ImaEntry {
    /// A violation: the kernel logs a zero template hash and extends all-ones.
    pub fn is_violation(&self) -> bool {
        self.template_hash.iter().all(|b| *b == 0)
    }

    /// The digest this entry extends into bank `alg` under `rule`.
    pub fn extend_digest(&self, alg: HashAlg, rule: BankRule) -> Vec<u8> {
        if self.is_violation() {
            return vec![0xFF; alg.size()];
        }
        // The logged hash is the SHA-1 bank's own, or the SHA-256 bank's when an ascii log
        // prints a 32-byte template hash.
        let logged_is_bank = match alg {
            HashAlg::Sha1 => self.template_hash.len() == 20,
            HashAlg::Sha256 => self.template_hash.len() == 32,
            _ => false,
        };
        if logged_is_bank {
            return self.template_hash.clone();
        }
        match rule {
            BankRule::Recompute => alg.digest(&self.template_data),
            BankRule::PaddedSha1 => {
                let mut d = if self.template_hash.len() == 20 {
                    self.template_hash.clone()
                } else {
                    HashAlg::Sha1.digest(&self.template_data)
                };
                d.resize(alg.size(), 0);
                d
            }
        }
    }
}

/// How banks other than SHA-1 are extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BankRule {
    /// Linux >= 5.1: the template data hashed with the bank's algorithm.
    #[default]
    Recompute,
    /// Older kernels: the SHA-1 template hash, zero-padded.
    PaddedSha1,
}

/// An entry whose logged template hash is not the hash of its template data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaFinding {
    /// Entry number.
    pub entry: usize,
    /// Its path.
    pub path: String,
}

impl std::fmt::Display for ImaFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "entry {} ({}): the template hash is not the hash of the template data",
            self.entry, self.path
        )
    }
}

/// A parsed IMA log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImaLog {
    /// Entries in log order.
    pub entries: Vec<ImaEntry>,
}

impl ImaLog {
    /// Parses either format: text starting with a PCR number is ascii, anything else binary.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let ascii = bytes.first().is_some_and(u8::is_ascii_digit)
            && bytes.iter().take(4096).all(|b| {
                b.is_ascii_graphic() || *b == b' ' || *b == b'\n' || *b == b'\t' || *b == b'\r'
            });
        if ascii {
            let text = std::str::from_utf8(bytes).map_err(|e| ParseError {
                event: 0,
                offset: e.valid_up_to(),
                kind: ParseErrorKind::Malformed("not UTF-8"),
            })?;
            Self::parse_ascii(text)
        } else {
            Self::parse_binary(bytes)
        }
    }

    /// Parses `ascii_runtime_measurements`. Errors name the entry and the byte offset of its line.
    pub fn parse_ascii(text: &str) -> Result<Self, ParseError> {
        let mut entries = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let start = offset;
            offset += line.len();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.trim().is_empty() {
                continue;
            }
            let number = entries.len();
            if number >= MAX_ENTRIES {
                return Err(ParseError {
                    event: number,
                    offset: start,
                    kind: ParseErrorKind::TooManyEvents { max: MAX_ENTRIES },
                });
            }
            let err = |m: &'static str| ParseError {
                event: number,
                offset: start,
                kind: ParseErrorKind::Malformed(m),
            };
            entries.push(parse_ascii_line(number, line).map_err(err)?);
        }
        Ok(Self { entries })
    }

    /// Parses `binary_runtime_measurements`.
    pub fn parse_binary(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut c = Cursor::new(bytes);
        let mut entries = Vec::new();
        while c.remaining() > 0 {
            let number = entries.len();
            c.event = number;
            if number >= MAX_ENTRIES {
                return Err(c.error(
                    c.position(),
                    ParseErrorKind::TooManyEvents { max: MAX_ENTRIES },
                ));
            }
            entries.push(read_binary_entry(&mut c, number)?);
        }
        Ok(Self { entries })
    }

    /// Entries whose template hash is not the hash of their data (violations excepted).
    pub fn check(&self) -> Vec<ImaFinding> {
        self.entries
            .iter()
            .filter(|e| !e.is_violation())
            .filter(|e| {
                let alg = if e.template_hash.len() == 32 {
                    HashAlg::Sha256
                } else {
                    HashAlg::Sha1
                };
                alg.digest(&e.template_data) != e.template_hash
            })
            .map(|e| ImaFinding {
                entry: e.number,
                path: e.path.clone(),
            })
            .collect()
    }
}

/// `boot_aggregate`: the hash, in bank `alg`, of PCRs 0 to `through` concatenated (7 before
/// Linux 5.8 and for TPM 1.2; 9 since 5.8 on TPM 2.0). `None` when a value is missing.
pub fn boot_aggregate(pcrs: &PcrValues, alg: HashAlg, through: u8) -> Option<Vec<u8>> {
    let mut h = alg.hasher();
    for i in 0..=through {
        h.update(pcrs.get(alg, i)?);
    }
    Some(h.finish())
}

impl ImaLog {
    /// Whether the log's `boot_aggregate` entry matches `pcrs` (the quoted boot PCRs), trying
    /// PCRs 0–7 and 0–9. `None` when there is no such entry or the bank's values are missing.
    pub fn boot_aggregate_matches(&self, pcrs: &PcrValues) -> Option<bool> {
        let e = self.entries.iter().find(|e| e.path == "boot_aggregate")?;
        let alg = HashAlg::from_name(&e.file_alg)?;
        let candidates: Vec<Vec<u8>> = [7u8, 9]
            .iter()
            .filter_map(|t| boot_aggregate(pcrs, alg, *t))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates.contains(&e.file_digest))
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() > 2 * 64 * 1024 {
        return None;
    }
    hex::decode(s).ok()
}

fn field(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

fn d_ng(alg: &str, digest: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(alg.len() + 2 + digest.len());
    d.extend_from_slice(alg.as_bytes());
    d.extend_from_slice(b":\0");
    d.extend_from_slice(digest);
    d
}

/// Template data of an `ima` entry: digest, then the name padded to 256 bytes.
fn ima_template_data(digest: &[u8], name: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(digest.len() + IMA_NAME_PAD);
    d.extend_from_slice(digest);
    let name = name.get(..IMA_NAME_PAD - 1).unwrap_or(name);
    d.extend_from_slice(name);
    d.resize(digest.len() + IMA_NAME_PAD, 0);
    d
}

fn parse_ascii_line(number: usize, line: &str) -> Result<ImaEntry, &'static str> {
    let mut parts = line.splitn(4, ' ');
    let pcr = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or("PCR is not a number")?;
    let hash_text = parts.next().ok_or("no template hash")?;
    let hash_text = hash_text.split_once(':').map_or(hash_text, |(_, h)| h);
    let template_hash = parse_hex(hash_text)
        .filter(|h| h.len() == 20 || h.len() == 32)
        .ok_or("template hash is not 20 or 32 bytes of hex")?;
    let template = Template::from_name(parts.next().ok_or("no template name")?);
    let rest = parts.next().ok_or("no template fields")?;
    let (digest_text, rest) = rest.split_once(' ').ok_or("no path")?;
    match template {
        Template::Ima => {
            let file_digest = parse_hex(digest_text)
                .filter(|d| d.len() == 20)
                .ok_or("ima file digest is not 20 bytes of hex")?;
            let path = rest.to_string();
            let template_data = ima_template_data(&file_digest, path.as_bytes());
            Ok(ImaEntry {
                number,
                pcr,
                template_hash,
                template,
                template_data,
                file_alg: "sha1".to_string(),
                file_digest,
                path,
                signature: None,
            })
        }
        Template::ImaNg | Template::ImaSig => {
            let (alg, hex_digest) = digest_text
                .split_once(':')
                .ok_or("file digest has no algorithm")?;
            if alg.is_empty()
                || alg.len() > 64
                || !alg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err("bad file digest algorithm");
            }
            let file_digest = parse_hex(hex_digest)
                .filter(|d| !d.is_empty() && d.len() <= 64)
                .ok_or("file digest is not hex")?;
            let (path, signature) = if template == Template::ImaSig {
                // The signature, when present, is the last space-separated field, in hex,
                // starting with the IMA signature type byte 0x03 (or 0x04/0x06 for newer forms).
                match rest.rsplit_once(' ') {
                    Some((p, sig))
                        if !sig.is_empty()
                            && sig.len() % 2 == 0
                            && sig.bytes().all(|b| b.is_ascii_hexdigit())
                            && sig.starts_with('0') =>
                    {
                        (
                            p.to_string(),
                            Some(parse_hex(sig).ok_or("signature is not hex")?),
                        )
                    }
                    _ => (rest.trim_end().to_string(), None),
                }
            } else {
                (rest.to_string(), None)
            };
            let mut template_data = Vec::new();
            field(&mut template_data, &d_ng(alg, &file_digest));
            let mut name = path.as_bytes().to_vec();
            name.push(0);
            field(&mut template_data, &name);
            if template == Template::ImaSig {
                field(&mut template_data, signature.as_deref().unwrap_or_default());
            }
            Ok(ImaEntry {
                number,
                pcr,
                template_hash,
                template,
                template_data,
                file_alg: alg.to_string(),
                file_digest,
                path,
                signature,
            })
        }
        Template::Other(_) => {
            Err("template not supported in the ascii log (ima, ima-ng, ima-sig are)")
        }
    }
}

fn read_binary_entry(c: &mut Cursor<'_>, number: usize) -> Result<ImaEntry, ParseError> {
    let pcr = c.u32("pcr")?;
    let template_hash = c.take(20, "template_hash")?.to_vec();
    let name = c.sized_u32("template_name", MAX_TEMPLATE_NAME)?;
    let name = std::str::from_utf8(name).map_err(|_| {
        c.error(
            c.position(),
            ParseErrorKind::Malformed("template name is not UTF-8"),
        )
    })?;
    let template = Template::from_name(name);
    if template == Template::Ima {
        let digest = c.take(20, "ima digest")?.to_vec();
        let path = c.sized_u32("ima name", MAX_TEMPLATE_NAME)?;
        let template_data = ima_template_data(&digest, path);
        return Ok(ImaEntry {
            number,
            pcr,
            template_hash,
            template,
            template_data,
            file_alg: "sha1".to_string(),
            file_digest: digest,
            path: String::from_utf8_lossy(path).into_owned(),
            signature: None,
        });
    }
    let data_offset = c.position();
    let data = c.sized_u32("template_data", MAX_TEMPLATE_DATA)?;
    let mut f = Cursor::new(data);
    let mut fields = Vec::new();
    while f.remaining() > 0 {
        let v = f
            .sized_u32("template field", MAX_TEMPLATE_DATA)
            .map_err(|e| ParseError {
                event: number,
                offset: data_offset + 4 + e.offset,
                kind: e.kind,
            })?;
        fields.push(v);
    }
    let (mut file_alg, mut file_digest, mut path, mut signature) =
        (String::new(), Vec::new(), String::new(), None);
    if matches!(template, Template::ImaNg | Template::ImaSig) {
        let bad = |m| ParseError {
            event: number,
            offset: data_offset,
            kind: ParseErrorKind::Malformed(m),
        };
        let expected = if template == Template::ImaSig { 3 } else { 2 };
        if fields.len() != expected {
            return Err(bad("wrong number of template fields"));
        }
        let d = fields.first().copied().unwrap_or_default();
        let sep = d
            .windows(2)
            .position(|w| w == b":\0")
            .ok_or_else(|| bad("d-ng field has no algorithm"))?;
        file_alg = String::from_utf8_lossy(d.get(..sep).unwrap_or_default()).into_owned();
        file_digest = d.get(sep + 2..).unwrap_or_default().to_vec();
        let n = fields.get(1).copied().unwrap_or_default();
        path = String::from_utf8_lossy(n.strip_suffix(&[0]).unwrap_or(n)).into_owned();
        if template == Template::ImaSig {
            signature = fields.get(2).filter(|s| !s.is_empty()).map(|s| s.to_vec());
        }
    }
    Ok(ImaEntry {
        number,
        pcr,
        template_hash,
        template,
        template_data: data.to_vec(),
        file_alg,
        file_digest,
        path,
        signature,
    })
}

/// Writes entries in the binary format (for tests and simulators).
pub fn to_binary(entries: &[ImaEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.pcr.to_le_bytes());
        let mut h = e.template_hash.clone();
        h.resize(20, 0);
        out.extend_from_slice(&h);
        field(&mut out, e.template.name().as_bytes());
        if e.template == Template::Ima {
            out.extend_from_slice(&e.file_digest);
            field(&mut out, e.path.as_bytes());
        } else {
            field(&mut out, &e.template_data);
        }
    }
    out
}

/// PCR values after replaying IMA entries; keep it to continue when the log grows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaReplay {
    rule: BankRule,
    banks: Vec<HashAlg>,
    values: BTreeMap<(HashAlg, u32), Vec<u8>>,
    replayed: usize,
    violations: usize,
}

/// Why an incremental replay could not continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImaReplayError {
    /// The entries do not start where the state stopped.
    #[error("the replay state covers {have} entries but the new entries start at {start}")]
    Gap {
        /// Entries already replayed.
        have: usize,
        /// Where the given entries start.
        start: usize,
    },
    /// A PCR index above 23.
    #[error("entry {entry}: PCR {pcr} is not between 0 and 23")]
    BadPcr {
        /// Entry number.
        entry: usize,
        /// PCR.
        pcr: u32,
    },
}

impl ImaReplay {
    /// Nothing replayed yet (PCRs at zero) for these banks.
    pub fn new(banks: &[HashAlg], rule: BankRule) -> Self {
        Self {
            rule,
            banks: banks.to_vec(),
            values: BTreeMap::new(),
            replayed: 0,
            violations: 0,
        }
    }

    /// Entries replayed so far.
    pub fn entries_replayed(&self) -> usize {
        self.replayed
    }

    /// Violations (all-ones extends) seen so far.
    pub fn violations(&self) -> usize {
        self.violations
    }

    /// Extends `entries`, which must be the next ones after those already replayed.
    pub fn extend(&mut self, entries: &[ImaEntry]) -> Result<(), ImaReplayError> {
        for e in entries {
            if e.pcr >= 24 {
                return Err(ImaReplayError::BadPcr {
                    entry: e.number,
                    pcr: e.pcr,
                });
            }
            if e.is_violation() {
                self.violations += 1;
            }
            for alg in &self.banks {
                let d = e.extend_digest(*alg, self.rule);
                let cur = self
                    .values
                    .entry((*alg, e.pcr))
                    .or_insert_with(|| vec![0u8; alg.size()]);
                *cur = alg.extend(cur, &d);
            }
            self.replayed += 1;
        }
        Ok(())
    }

    /// One value.
    pub fn value(&self, alg: HashAlg, pcr: u32) -> Option<&[u8]> {
        self.values.get(&(alg, pcr)).map(Vec::as_slice)
    }

    /// Every PCR the entries extended, by bank.
    pub fn values(&self) -> PcrValues {
        let mut out = PcrValues::new();
        for ((alg, pcr), v) in &self.values {
            if let Ok(i) = u8::try_from(*pcr) {
                // Index and length are right by construction.
                let _ = out.insert(*alg, i, v.clone());
            }
        }
        out
    }
}

/// Continues `state` with `log.entries[entries_start..]`; `entries_start` must equal the number
/// of entries `state` has replayed (the agent sends the log from that offset, or whole).
pub fn replay_from(
    mut state: ImaReplay,
    log: &ImaLog,
    entries_start: usize,
) -> Result<ImaReplay, ImaReplayError> {
    if entries_start != state.replayed {
        return Err(ImaReplayError::Gap {
            have: state.replayed,
            start: entries_start,
        });
    }
    let new = log
        .entries
        .get(entries_start..)
        .ok_or(ImaReplayError::Gap {
            have: state.replayed,
            start: entries_start,
        })?;
    state.extend(new)?;
    Ok(state)
}
