//! Writing logs: the inverse of [`crate::tcg`], for tests, simulators and fuzzing seeds.
//!
//! [`LogBuilder`] writes a crypto-agile log (Spec ID event, then `TCG_PCR_EVENT2`s) or a SHA-1
//! format log. Digests are the hash of the event data unless given explicitly, which is how
//! firmware measures most events; a test extends the same digests into a TPM and compares.

use nodetrust_tpm_wire::HashAlg;

use crate::types;

/// Builds an event log.
#[derive(Debug, Clone)]
pub struct LogBuilder {
    banks: Vec<HashAlg>,
    agile: bool,
    out: Vec<u8>,
    events: Vec<BuiltEvent>,
}

/// One event written, with the digests extended for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltEvent {
    /// PCR index.
    pub pcr: u32,
    /// Event type.
    pub event_type: u32,
    /// (bank, digest) pairs.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    /// Event data.
    pub data: Vec<u8>,
}

impl LogBuilder {
    /// A crypto-agile log with these banks (in this order in every event).
    pub fn crypto_agile(banks: &[HashAlg]) -> Self {
        let mut spec = Vec::new();
        spec.extend_from_slice(b"Spec ID Event03\0");
        spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass
        spec.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintnSize
        spec.extend_from_slice(&(banks.len() as u32).to_le_bytes());
        for b in banks {
            spec.extend_from_slice(&b.id().to_le_bytes());
            spec.extend_from_slice(&(b.size() as u16).to_le_bytes());
        }
        spec.push(0); // vendorInfoSize
        let mut out = Vec::new();
        write_sha1_event(&mut out, 0, types::EV_NO_ACTION, &[0u8; 20], &spec);
        Self {
            banks: banks.to_vec(),
            agile: true,
            out,
            events: Vec::new(),
        }
    }

    /// A SHA-1 format log.
    pub fn sha1() -> Self {
        Self {
            banks: vec![HashAlg::Sha1],
            agile: false,
            out: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Adds an event whose digests are the hash of `data` in every bank.
    pub fn event(&mut self, pcr: u32, event_type: u32, data: &[u8]) -> &mut Self {
        let digests: Vec<(HashAlg, Vec<u8>)> =
            self.banks.iter().map(|b| (*b, b.digest(data))).collect();
        self.event_with_digests(pcr, event_type, digests, data)
    }

    /// Adds an event whose digests are the hash of `measured` (e.g. a PE image) and whose data
    /// is `data` (e.g. the image load event).
    pub fn measured(
        &mut self,
        pcr: u32,
        event_type: u32,
        measured: &[u8],
        data: &[u8],
    ) -> &mut Self {
        let digests: Vec<(HashAlg, Vec<u8>)> = self
            .banks
            .iter()
            .map(|b| (*b, b.digest(measured)))
            .collect();
        self.event_with_digests(pcr, event_type, digests, data)
    }

    /// Adds an event with explicit digests (written in the given order).
    pub fn event_with_digests(
        &mut self,
        pcr: u32,
        event_type: u32,
        digests: Vec<(HashAlg, Vec<u8>)>,
        data: &[u8],
    ) -> &mut Self {
        if self.agile {
            self.out.extend_from_slice(&pcr.to_le_bytes());
            self.out.extend_from_slice(&event_type.to_le_bytes());
            self.out
                .extend_from_slice(&(digests.len() as u32).to_le_bytes());
            for (alg, d) in &digests {
                self.out.extend_from_slice(&alg.id().to_le_bytes());
                self.out.extend_from_slice(d);
            }
            self.out
                .extend_from_slice(&(data.len() as u32).to_le_bytes());
            self.out.extend_from_slice(data);
        } else {
            let d = digests
                .iter()
                .find(|(a, _)| *a == HashAlg::Sha1)
                .map(|(_, d)| d.clone())
                .unwrap_or_default();
            write_sha1_event(&mut self.out, pcr, event_type, &d, data);
        }
        self.events.push(BuiltEvent {
            pcr,
            event_type,
            digests,
            data: data.to_vec(),
        });
        self
    }

    /// Adds an `EV_NO_ACTION` StartupLocality event (PCR 0).
    pub fn startup_locality(&mut self, locality: u8) -> &mut Self {
        let mut data = b"StartupLocality\0".to_vec();
        data.push(locality);
        let digests = self
            .banks
            .iter()
            .map(|b| (*b, vec![0u8; b.size()]))
            .collect();
        self.event_with_digests(0, types::EV_NO_ACTION, digests, &data)
    }

    /// Events added so far (not the Spec ID event).
    pub fn events(&self) -> &[BuiltEvent] {
        &self.events
    }

    /// The log bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.out.clone()
    }
}

fn write_sha1_event(out: &mut Vec<u8>, pcr: u32, event_type: u32, digest: &[u8], data: &[u8]) {
    out.extend_from_slice(&pcr.to_le_bytes());
    out.extend_from_slice(&event_type.to_le_bytes());
    let mut d = [0u8; 20];
    for (dst, src) in d.iter_mut().zip(digest) {
        *dst = *src;
    }
    out.extend_from_slice(&d);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

/// `UEFI_IMAGE_LOAD_EVENT` for a file path (`\EFI\ubuntu\grubx64.efi`) on a GPT partition.
pub fn image_load_event(path: &str, length: u64) -> Vec<u8> {
    let mut dp = Vec::new();
    // HD(1,GPT,...) then FilePath then End.
    let mut hd = Vec::new();
    hd.extend_from_slice(&1u32.to_le_bytes());
    hd.extend_from_slice(&0x800u64.to_le_bytes());
    hd.extend_from_slice(&0x100000u64.to_le_bytes());
    hd.extend_from_slice(&[0x11; 16]);
    hd.extend_from_slice(&[2, 2]);
    push_node(&mut dp, 4, 1, &hd);
    let mut fp: Vec<u8> = path.encode_utf16().flat_map(u16::to_le_bytes).collect();
    fp.extend_from_slice(&[0, 0]);
    push_node(&mut dp, 4, 4, &fp);
    push_node(&mut dp, 0x7f, 0xff, &[]);
    let mut out = Vec::new();
    out.extend_from_slice(&0x7000_0000u64.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(dp.len() as u64).to_le_bytes());
    out.extend_from_slice(&dp);
    out
}

fn push_node(out: &mut Vec<u8>, kind: u8, sub: u8, body: &[u8]) {
    out.push(kind);
    out.push(sub);
    out.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
    out.extend_from_slice(body);
}

/// `UEFI_VARIABLE_DATA` for a variable.
pub fn variable_data(guid: crate::uefi::Guid, name: &str, data: &[u8]) -> Vec<u8> {
    let name16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut out = Vec::new();
    out.extend_from_slice(&guid.0);
    out.extend_from_slice(&((name16.len() / 2) as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&name16);
    out.extend_from_slice(data);
    out
}
