//! PCR selections (`TPML_PCR_SELECTION`) and sets of PCR values.
//!
//! [`PcrValues`] is how evidence carries PCRs: bank → index → value. It reads the formats an
//! operator has at hand: the YAML that `tpm2_pcrread` (and `tpm2_quote`) print, and our JSON
//! `{"sha256": {"0": "hex", ...}}`.

use std::collections::BTreeMap;

use crate::alg::HashAlg;
use crate::codec::{Reader, Writer};
use crate::error::WireError;

/// Highest PCR index plus one on PC Client TPMs.
pub const PCR_COUNT: u8 = 24;
/// Most banks a selection may list.
pub const MAX_BANKS: u32 = 16;
/// Largest `sizeofSelect`: 4 bytes = 32 PCRs (PC Client uses 3).
pub const MAX_SELECT_BYTES: u8 = 4;

/// One bank of a `TPML_PCR_SELECTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankSelection {
    /// The bank.
    pub hash: HashAlg,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u8>,
}

/// A `TPML_PCR_SELECTION`, in wire order (the order that defines the quote's pcrDigest).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrSelection {
    /// Banks in wire order.
    pub banks: Vec<BankSelection>,
}

impl PcrSelection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let count = r.u32("pcrSelect.count")?;
        if count > MAX_BANKS {
            return Err(WireError::TooLong {
                field: "pcrSelect.count",
                offset: r.position().saturating_sub(4),
                len: count as usize,
                max: MAX_BANKS as usize,
            });
        }
        let mut banks = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let hash = HashAlg::parse(r.u16("pcrSelect.hash")?, "pcrSelect.hash")?;
            let size = r.u8("pcrSelect.sizeofSelect")?;
            if size > MAX_SELECT_BYTES {
                return Err(WireError::TooLong {
                    field: "pcrSelect.sizeofSelect",
                    offset: r.position().saturating_sub(1),
                    len: usize::from(size),
                    max: usize::from(MAX_SELECT_BYTES),
                });
            }
            let bits = r.take(usize::from(size), "pcrSelect.pcrSelect")?;
            let mut pcrs = Vec::new();
            for (byte_index, byte) in (0u8..).zip(bits.iter()) {
                for bit in 0..8u8 {
                    if byte & (1 << bit) != 0 {
                        pcrs.push(byte_index * 8 + bit);
                    }
                }
            }
            banks.push(BankSelection { hash, pcrs });
        }
        Ok(Self { banks })
    }

    /// Marshals as a `TPML_PCR_SELECTION`, with bitmaps of at least 3 bytes (the PC Client
    /// size) and more when a PCR above 23 is selected.
    pub fn write(&self, w: &mut Writer) {
        w.u32(self.banks.len() as u32);
        for b in &self.banks {
            let highest = b.pcrs.iter().copied().max().unwrap_or(0);
            let size = (usize::from(highest) / 8 + 1).max(3);
            let mut bits = vec![0u8; size];
            for p in &b.pcrs {
                if let Some(byte) = bits.get_mut(usize::from(*p / 8)) {
                    *byte |= 1 << (p % 8);
                }
            }
            w.u16(b.hash.id()).bytes(&[size as u8]).bytes(&bits);
        }
    }

    /// Whether no PCR is selected.
    pub fn is_empty(&self) -> bool {
        self.banks.iter().all(|b| b.pcrs.is_empty())
    }

    /// `sha256:0,1,2+sha1:0`, as tpm2-tools write selections.
    pub fn describe(&self) -> String {
        self.banks
            .iter()
            .map(|b| {
                let list: Vec<String> = b.pcrs.iter().map(u8::to_string).collect();
                format!("{}:{}", b.hash, list.join(","))
            })
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Why a set of PCR values could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcrValuesError {
    /// Input was neither the YAML nor the JSON form.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line (0 for JSON).
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// A bank name we do not know.
    #[error("unknown PCR bank {0:?}")]
    UnknownBank(String),
    /// A PCR index outside 0..=23.
    #[error("PCR index {0:?} is not between 0 and 23")]
    BadIndex(String),
    /// A value whose length is not the bank's digest size.
    #[error("{bank} PCR {index}: value has {len} bytes, the bank's digest has {expected}")]
    BadLength {
        /// Bank.
        bank: HashAlg,
        /// PCR.
        index: u8,
        /// Bytes found.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
}

/// PCR values by bank and index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrValues {
    banks: BTreeMap<HashAlg, BTreeMap<u8, Vec<u8>>>,
}

impl PcrValues {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets one value, checking the index and length.
    pub fn insert(
        &mut self,
        bank: HashAlg,
        index: u8,
        value: Vec<u8>,
    ) -> Result<(), PcrValuesError> {
        if index >= PCR_COUNT {
            return Err(PcrValuesError::BadIndex(index.to_string()));
        }
        if value.len() != bank.size() {
            return Err(PcrValuesError::BadLength {
                bank,
                index,
                len: value.len(),
                expected: bank.size(),
            });
        }
        self.banks.entry(bank).or_default().insert(index, value);
        Ok(())
    }

    /// One value.
    pub fn get(&self, bank: HashAlg, index: u8) -> Option<&[u8]> {
        self.banks
            .get(&bank)
            .and_then(|b| b.get(&index))
            .map(Vec::as_slice)
    }

    /// Banks present.
    pub fn banks(&self) -> impl Iterator<Item = HashAlg> + '_ {
        self.banks.keys().copied()
    }

    /// Values of one bank, by index.
    pub fn bank(&self, bank: HashAlg) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        self.banks
            .get(&bank)
            .into_iter()
            .flat_map(|b| b.iter().map(|(i, v)| (*i, v.as_slice())))
    }

    /// Every value: (bank, index, value).
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u8, &[u8])> + '_ {
        self.banks
            .iter()
            .flat_map(|(h, b)| b.iter().map(move |(i, v)| (*h, *i, v.as_slice())))
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.banks.values().map(BTreeMap::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON object form: `{"sha256": {"0": "hex", ...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (bank, values) in &self.banks {
            let mut m = serde_json::Map::new();
            for (i, v) in values {
                m.insert(i.to_string(), serde_json::Value::String(encode_hex(v)));
            }
            out.insert(bank.name().to_string(), serde_json::Value::Object(m));
        }
        serde_json::Value::Object(out)
    }

    /// The JSON object form of [`Self::to_json`], serialized as it is read, without building a
    /// `serde_json::Value` of it first (the server writes it at every attestation).
    pub fn json(&self) -> PcrJson<'_> {
        PcrJson(self)
    }

    /// Reads the JSON object form.
    pub fn from_json_value(v: &serde_json::Value) -> Result<Self, PcrValuesError> {
        let obj = v
            .as_object()
            .ok_or_else(|| syntax("expected an object of banks"))?;
        let mut out = Self::new();
        for (bank_name, values) in obj {
            let values = values
                .as_object()
                .ok_or_else(|| syntax("expected an object of PCR values"))?;
            if values.is_empty() {
                // A bank with no values adds nothing, whatever its name.
                continue;
            }
            let alg = bank_alg(bank_name)?;
            for (index, value) in values {
                let hex_str = value
                    .as_str()
                    .ok_or_else(|| syntax("expected a hex string"))?;
                out.insert_hex(alg, index, hex_str)?;
            }
        }
        Ok(out)
    }

    /// Adds one value given as text, as an agent sends it: bank name, decimal index, hex.
    fn insert_text(&mut self, bank: &str, index: &str, hex: &str) -> Result<(), PcrValuesError> {
        self.insert_hex(bank_alg(bank)?, index, hex)
    }

    fn insert_hex(&mut self, alg: HashAlg, index: &str, hex: &str) -> Result<(), PcrValuesError> {
        let i = parse_index(index)?;
        let bytes = decode_hex(hex).ok_or_else(|| syntax(&format!("PCR {index}: not hex")))?;
        self.insert(alg, i, bytes)
    }

    /// Reads either the JSON form or the `tpm2_pcrread` / `tpm2_quote` YAML form.
    ///
    /// In YAML, a line `sha256:` opens a bank and lines `  4 : 0x...` add values to it; any other
    /// `key:` line closes the bank, so `tpm2_quote`'s whole output can be given as it is.
    pub fn parse(text: &str) -> Result<Self, PcrValuesError> {
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            let v: serde_json::Value =
                serde_json::from_str(trimmed).map_err(|e| PcrValuesError::Syntax {
                    line: e.line(),
                    message: e.to_string(),
                })?;
            return Self::from_json_value(&v);
        }
        let mut out = Self::new();
        let mut current: Option<HashAlg> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(PcrValuesError::Syntax {
                    line: n + 1,
                    message: format!("expected `key: value`, found {line:?}"),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                current = HashAlg::from_name(key);
                continue;
            }
            match (current, key.parse::<u8>()) {
                (Some(bank), Ok(i)) => {
                    let hex_str = value
                        .strip_prefix("0x")
                        .or_else(|| value.strip_prefix("0X"))
                        .unwrap_or(value);
                    let bytes = decode_hex(hex_str).ok_or_else(|| PcrValuesError::Syntax {
                        line: n + 1,
                        message: format!("PCR {i}: {value:?} is not hex"),
                    })?;
                    out.insert(bank, i, bytes)?;
                }
                _ => current = None,
            }
        }
        if out.is_empty() {
            return Err(PcrValuesError::Syntax {
                line: 0,
                message: "no PCR values found".to_string(),
            });
        }
        Ok(out)
    }
}

fn parse_index(s: &str) -> Result<u8, PcrValuesError> {
    s.trim()
        .parse::<u8>()
        .ok()
        .filter(|i| *i < PCR_COUNT)
        .ok_or_else(|| PcrValuesError::BadIndex(s.to_string()))
}

fn bank_alg(bank: &str) -> Result<HashAlg, PcrValuesError> {
    HashAlg::from_name(bank).ok_or_else(|| PcrValuesError::UnknownBank(bank.to_string()))
}

/// A value of at most 64 bytes from hex (either case); `None` when longer, of odd length or
/// not hex. Decoded into a buffer of the right size at once (`hex::decode` collects byte by
/// byte; this runs for every PCR of every quote).
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() > 2 * 64 || !s.len().is_multiple_of(2) {
        return None;
    }
    let mut out = vec![0u8; s.len() / 2];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// [`PcrValues`] in its JSON object form, `{"sha256": {"0": "hex", ...}}`, the same object as
/// [`PcrValues::to_json`]: banks by algorithm, a bank's values by index (a number, where a
/// `serde_json::Map` may order its keys as text).
#[derive(Debug, Clone, Copy)]
pub struct PcrJson<'a>(&'a PcrValues);

impl serde::Serialize for PcrJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut banks = serializer.serialize_map(Some(self.0.banks.len()))?;
        for (bank, values) in &self.0.banks {
            banks.serialize_entry(bank.name(), &BankJson(values))?;
        }
        banks.end()
    }
}

/// One bank's values, index (as a string key) → lowercase hex.
struct BankJson<'a>(&'a BTreeMap<u8, Vec<u8>>);

impl serde::Serialize for BankJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut values = serializer.serialize_map(Some(self.0.len()))?;
        for (index, value) in self.0 {
            // Digests are at most 64 bytes (SHA-512); a longer value is written as a string of
            // its own.
            let mut buf = [0u8; 128];
            let text = buf.get_mut(..value.len() * 2).and_then(|out| {
                hex::encode_to_slice(value, out).ok()?;
                std::str::from_utf8(out).ok()
            });
            match text {
                Some(text) => values.serialize_entry(index, text)?,
                None => values.serialize_entry(index, &encode_hex(value))?,
            }
        }
        values.end()
    }
}

/// Lowercase hex, written into a buffer of the right size at once (`hex::encode` builds its
/// string a character at a time).
fn encode_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}

fn syntax(message: &str) -> PcrValuesError {
    PcrValuesError::Syntax {
        line: 0,
        message: message.to_string(),
    }
}

/// The agent's wire form, bank name → decimal index → hex value, read without a detour
/// through JSON; the same checks as [`PcrValues::from_json_value`].
impl<B, I, V> TryFrom<&BTreeMap<B, BTreeMap<I, V>>> for PcrValues
where
    B: AsRef<str>,
    I: AsRef<str>,
    V: AsRef<str>,
{
    type Error = PcrValuesError;

    fn try_from(map: &BTreeMap<B, BTreeMap<I, V>>) -> Result<Self, PcrValuesError> {
        let mut out = Self::new();
        for (bank, values) in map {
            for (index, hex) in values {
                out.insert_text(bank.as_ref(), index.as_ref(), hex.as_ref())?;
            }
        }
        Ok(out)
    }
}
