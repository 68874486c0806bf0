//! Parsing TCG PC Client event logs: the SHA-1 format and the crypto-agile format.
//!
//! # Formats
//! - **SHA-1 format** (TPM 1.2 era, some Windows logs): a sequence of `TCG_PCR_EVENT`
//!   (`pcrIndex u32, eventType u32, digest[20], eventDataSize u32, event[]`).
//! - **Crypto-agile format**: the first structure is a `TCG_PCR_EVENT` of type `EV_NO_ACTION` whose
//!   data is the `TCG_EfiSpecIdEvent` (`"Spec ID Event03\0"`, the algorithms and their digest
//!   sizes, vendor data); every later event is a `TCG_PCR_EVENT2`
//!   (`pcrIndex u32, eventType u32, digests.count u32, {hashAlg u16, digest[size]}*,
//!   eventSize u32, event[]`). Digest sizes come from the Spec ID event, so an algorithm this crate
//!   cannot hash is still skipped correctly.
//!
//! The Spec ID structure is kept as event 0, so event numbers match `tpm2_eventlog`'s `EventNum`.
//!
//! # Bounds
//! Event data is at most [`MAX_EVENT_DATA`] bytes, a log at most [`MAX_EVENTS`] events, the Spec
//! ID event at most [`MAX_ALGORITHMS`] algorithms, and an event at most as many digests as the
//! Spec ID event declared algorithms. Parsing borrows from the input: no event data is copied.
//!
//! # Quirks accepted
//! - Trailing bytes that are all `0x00` or all `0xFF` after the last event (logs copied out of a
//!   fixed-size ACPI area) end the log; they are counted in [`EventLog::trailing_padding`].
//! - An `EV_NO_ACTION` event may name any PCR index; every other event must name PCR 0..=23.

use nodetrust_tpm_wire::alg::id;
use nodetrust_tpm_wire::HashAlg;

use crate::cursor::Cursor;
use crate::error::{ParseError, ParseErrorKind};
use crate::types;

/// Largest event data accepted, in bytes (16 MiB).
pub const MAX_EVENT_DATA: usize = 16 << 20;
/// Most events accepted in one log.
pub const MAX_EVENTS: usize = 1 << 20;
/// Most algorithms a Spec ID event may declare.
pub const MAX_ALGORITHMS: u32 = 16;
/// Highest PCR index plus one.
pub const PCR_COUNT: u32 = 24;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// Which of the two formats a log is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `TCG_PCR_EVENT` entries with one SHA-1 digest each.
    Sha1,
    /// Spec ID event then `TCG_PCR_EVENT2` entries with one digest per declared bank.
    CryptoAgile,
}

/// One algorithm of the Spec ID event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmSize {
    /// `TPM_ALG_ID`.
    pub id: u16,
    /// Digest size the log uses for it.
    pub size: u16,
}

impl AlgorithmSize {
    /// The hash this crate can compute for it, if any.
    pub fn hash(&self) -> Option<HashAlg> {
        HashAlg::from_id(self.id)
    }
}

/// The `TCG_EfiSpecIdEvent` of a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId<'a> {
    /// `platformClass` (0 client, 1 server).
    pub platform_class: u32,
    /// `specVersionMinor`.
    pub spec_version_minor: u8,
    /// `specVersionMajor`.
    pub spec_version_major: u8,
    /// `specErrata`.
    pub spec_errata: u8,
    /// `uintnSize` (1 for 32-bit UINTN, 2 for 64-bit).
    pub uintn_size: u8,
    /// Algorithms and their digest sizes, in log order.
    pub algorithms: Vec<AlgorithmSize>,
    /// `vendorInfo`.
    pub vendor_info: &'a [u8],
}

impl SpecId<'_> {
    /// Declared digest size of `alg`.
    pub fn digest_size(&self, alg: u16) -> Option<usize> {
        self.algorithms
            .iter()
            .find(|a| a.id == alg)
            .map(|a| usize::from(a.size))
    }
}

/// One digest of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest<'a> {
    /// `TPM_ALG_ID`.
    pub alg: u16,
    /// The digest bytes (the size the Spec ID event declared).
    pub bytes: &'a [u8],
}

impl Digest<'_> {
    /// The hash this crate knows for the algorithm.
    pub fn hash(&self) -> Option<HashAlg> {
        HashAlg::from_id(self.alg)
    }

    /// `sha256` or `alg 0x0012` for algorithms this crate does not hash.
    pub fn alg_name(&self) -> String {
        alg_name(self.alg)
    }
}

/// `sha256`, or `sm3_256`, or `alg 0x....`.
pub fn alg_name(alg: u16) -> String {
    match HashAlg::from_id(alg) {
        Some(h) => h.name().to_string(),
        None if alg == id::SM3_256 => "sm3_256".to_string(),
        None => format!("alg {alg:#06x}"),
    }
}

/// Digests stored inline when there are at most [`DigestList::INLINE`] (every real log), so
/// parsing allocates nothing per event; more spill to the heap. Dereferences to a slice.
#[derive(Clone)]
pub struct DigestList<'a> {
    inline: [Digest<'a>; DigestList::INLINE],
    /// A `usize`, not a `u8`: a byte store read back by a wider load stalls store forwarding.
    len: usize,
    spill: Vec<Digest<'a>>,
}

impl<'a> DigestList<'a> {
    /// Digests kept without allocation.
    pub const INLINE: usize = 5;
    const EMPTY: Digest<'static> = Digest { alg: 0, bytes: &[] };
    const EMPTY_INLINE: [Digest<'static>; DigestList::INLINE] =
        [DigestList::EMPTY; DigestList::INLINE];

    /// No digests.
    pub fn new() -> Self {
        Self {
            inline: Self::EMPTY_INLINE,
            len: 0,
            spill: Vec::new(),
        }
    }

    /// Appends a digest.
    pub fn push(&mut self, d: Digest<'a>) {
        if self.spill.is_empty() {
            if let Some(slot) = self.inline.get_mut(self.len) {
                *slot = d;
                self.len += 1;
                return;
            }
            self.spill.extend_from_slice(&self.inline);
        }
        self.spill.push(d);
    }
}

impl Default for DigestList<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> std::ops::Deref for DigestList<'a> {
    type Target = [Digest<'a>];
    fn deref(&self) -> &[Digest<'a>] {
        if self.spill.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.spill
        }
    }
}

impl<'s, 'a> IntoIterator for &'s DigestList<'a> {
    type Item = &'s Digest<'a>;
    type IntoIter = std::slice::Iter<'s, Digest<'a>>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for DigestList<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for DigestList<'_> {}

impl std::fmt::Debug for DigestList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> FromIterator<Digest<'a>> for DigestList<'a> {
    fn from_iter<I: IntoIterator<Item = Digest<'a>>>(iter: I) -> Self {
        let mut out = Self::new();
        for d in iter {
            out.push(d);
        }
        out
    }
}

/// One event of a log, borrowing its bytes from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// Position in the log (0 is the first structure).
    pub number: usize,
    /// Byte offset of the event's first byte in the input.
    pub offset: usize,
    /// `pcrIndex`.
    pub pcr: u32,
    /// `eventType`: attacker-chosen, a label only.
    pub event_type: u32,
    /// Digests, in log order.
    pub digests: DigestList<'a>,
    /// The event data.
    pub data: &'a [u8],
}

impl<'a> Event<'a> {
    /// The digest for `alg`, if the event carries one.
    pub fn digest(&self, alg: HashAlg) -> Option<&'a [u8]> {
        self.digests
            .iter()
            .find(|d| d.alg == alg.id())
            .map(|d| d.bytes)
    }

    /// Whether the event is extended into its PCR (every type except `EV_NO_ACTION`).
    pub fn extends(&self) -> bool {
        self.event_type != types::EV_NO_ACTION
    }

    /// The locality of an `EV_NO_ACTION` StartupLocality event.
    pub fn startup_locality(&self) -> Option<u8> {
        if self.event_type != types::EV_NO_ACTION {
            return None;
        }
        let (sig, rest) = self
            .data
            .split_at_checked(STARTUP_LOCALITY_SIGNATURE.len())?;
        if sig != STARTUP_LOCALITY_SIGNATURE {
            return None;
        }
        rest.first().copied()
    }

    /// The type's name (`EV_IPL`, `EV_UNKNOWN(0x...)`).
    pub fn type_label(&self) -> String {
        types::label(self.event_type)
    }
}

/// A parsed log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog<'a> {
    /// The format.
    pub format: LogFormat,
    /// The Spec ID event (crypto-agile logs only).
    pub spec_id: Option<SpecId<'a>>,
    /// Every event, including the Spec ID structure as event 0 of a crypto-agile log.
    pub events: Vec<Event<'a>>,
    /// All-zero or all-0xFF bytes after the last event.
    pub trailing_padding: usize,
    /// Size of the input in bytes.
    pub size: usize,
}

impl<'a> EventLog<'a> {
    /// Parses a log in either format.
    ///
    /// # Errors
    /// A [`ParseError`] naming the event and byte offset of the first bad field.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.is_empty() {
            return Err(ParseError {
                event: 0,
                offset: 0,
                kind: ParseErrorKind::Empty,
            });
        }
        let mut c = Cursor::new(bytes);
        let (first, spec_id) = read_first_event(&mut c)?;
        let format = if spec_id.is_some() {
            LogFormat::CryptoAgile
        } else {
            LogFormat::Sha1
        };
        // A rough capacity: avoid regrowing for typical logs without trusting any length.
        let mut events = Vec::with_capacity((bytes.len() / 96).clamp(1, 4096));
        events.push(first);
        // Where a run of 0x00 or 0xFF bytes reaching the end of the input starts (computed once,
        // so a log of many all-zero events is not rescanned per event).
        let tail = |fill: u8| bytes.iter().rposition(|b| *b != fill).map_or(0, |i| i + 1);
        let padding_from = tail(0).min(tail(0xFF));
        let mut trailing_padding = 0;
        while c.remaining() > 0 {
            if c.position() >= padding_from {
                trailing_padding = c.remaining();
                break;
            }
            if events.len() >= MAX_EVENTS {
                return Err(c.error(
                    c.position(),
                    ParseErrorKind::TooManyEvents { max: MAX_EVENTS },
                ));
            }
            c.event = events.len();
            let (offset, pcr, event_type) = read_header(&mut c)?;
            let Some(spec) = &spec_id else {
                // SHA-1 format: one digest, so the event is built whole and moved in.
                let digest = c.take(20, "digest")?;
                let data = c.sized_u32("eventDataSize", MAX_EVENT_DATA)?;
                let mut digests = DigestList::new();
                digests.push(Digest {
                    alg: id::SHA1,
                    bytes: digest,
                });
                events.push(Event {
                    number: c.event,
                    offset,
                    pcr,
                    event_type,
                    digests,
                    data,
                });
                continue;
            };
            // Crypto-agile: filled in place. Building the event on the stack and moving it in
            // copied its ~190 bytes twice, reading back the digests' narrow stores.
            events.push(Event {
                number: c.event,
                offset,
                pcr,
                event_type,
                digests: DigestList::new(),
                data: &[],
            });
            // Always `Some`: the event was just pushed.
            if let Some(ev) = events.last_mut() {
                read_event2_body(&mut c, spec, ev)?;
            }
        }
        Ok(Self {
            format,
            spec_id,
            events,
            trailing_padding,
            size: bytes.len(),
        })
    }

    /// The banks the log carries digests for, in Spec ID order (SHA-1 only for the SHA-1 format).
    pub fn algorithms(&self) -> Vec<AlgorithmSize> {
        match &self.spec_id {
            Some(s) => s.algorithms.clone(),
            None => vec![AlgorithmSize {
                id: id::SHA1,
                size: 20,
            }],
        }
    }

    /// The events that are not the Spec ID structure.
    pub fn measurements(&self) -> impl Iterator<Item = &Event<'a>> + '_ {
        let skip = usize::from(self.spec_id.is_some());
        self.events.iter().skip(skip)
    }
}

fn check_pcr(c: &Cursor<'_>, offset: usize, pcr: u32, event_type: u32) -> Result<(), ParseError> {
    if pcr >= PCR_COUNT && event_type != types::EV_NO_ACTION {
        return Err(c.error(offset, ParseErrorKind::BadPcrIndex(pcr)));
    }
    Ok(())
}

/// Reads `pcrIndex` and `eventType`, common to both formats: the event's offset, PCR and type.
fn read_header(c: &mut Cursor<'_>) -> Result<(usize, u32, u32), ParseError> {
    let offset = c.position();
    let pcr = c.u32("pcrIndex")?;
    let event_type = c.u32("eventType")?;
    check_pcr(c, offset, pcr, event_type)?;
    Ok((offset, pcr, event_type))
}

/// Reads the rest of a `TCG_PCR_EVENT2` (digests, `eventSize`, event) into `ev`.
fn read_event2_body<'a>(
    c: &mut Cursor<'a>,
    spec: &SpecId<'_>,
    ev: &mut Event<'a>,
) -> Result<(), ParseError> {
    let count_offset = c.position();
    let count = c.u32("digests.count")?;
    let max = spec.algorithms.len() as u64;
    if u64::from(count) > max {
        return Err(c.error(
            count_offset,
            ParseErrorKind::TooLong {
                field: "digests.count",
                len: u64::from(count),
                max,
            },
        ));
    }
    // Bit i set: the digest of the Spec ID event's algorithm i was read (at most 16 of them).
    let mut seen: u32 = 0;
    for _ in 0..count {
        let alg_offset = c.position();
        let alg = c.u16("digest.hashAlg")?;
        let (index, declared) = spec
            .algorithms
            .iter()
            .enumerate()
            .find(|(_, a)| a.id == alg)
            .ok_or_else(|| c.error(alg_offset, ParseErrorKind::UndeclaredAlgorithm { alg }))?;
        let bit = 1u32.checked_shl(index as u32).unwrap_or(0);
        if seen & bit != 0 {
            return Err(c.error(
                alg_offset,
                ParseErrorKind::Malformed("the same algorithm twice in one event"),
            ));
        }
        seen |= bit;
        let bytes = c.take(usize::from(declared.size), "digest")?;
        ev.digests.push(Digest { alg, bytes });
    }
    ev.data = c.sized_u32("eventSize", MAX_EVENT_DATA)?;
    Ok(())
}

/// Reads the first structure: a Spec ID event (crypto-agile log) or the first SHA-1 event.
///
/// The Spec ID event ends where its vendor data ends. Some logs under-count `eventDataSize`
/// (tpm2-tools' `specid-vendordata.bin` fixture says 37 for a 41-byte structure) and
/// `tpm2_eventlog` reads them this way too, so the structure, not the size field, is followed.
fn read_first_event<'a>(c: &mut Cursor<'a>) -> Result<(Event<'a>, Option<SpecId<'a>>), ParseError> {
    let (offset, pcr, event_type) = read_header(c)?;
    let digest = c.take(20, "digest")?;
    let size_offset = c.position();
    let declared = c.u32("eventDataSize")?;
    let data_start = c.position();
    let is_spec_id = event_type == types::EV_NO_ACTION && c.rest().starts_with(SPEC_ID_SIGNATURE);
    let (data, spec_id) = if is_spec_id {
        if pcr != 0 {
            return Err(c.error(offset, ParseErrorKind::BadSpecId("PCR index is not 0")));
        }
        if digest.iter().any(|b| *b != 0) {
            return Err(c.error(offset + 8, ParseErrorKind::BadSpecId("digest is not zero")));
        }
        if (declared as usize) < 33 {
            return Err(c.error(
                size_offset,
                ParseErrorKind::BadSpecId("eventDataSize is too small"),
            ));
        }
        let spec = read_spec_id(c)?;
        let data = bytes_between(c, data_start);
        (data, Some(spec))
    } else {
        if declared as usize > MAX_EVENT_DATA {
            return Err(c.error(
                size_offset,
                ParseErrorKind::TooLong {
                    field: "eventDataSize",
                    len: u64::from(declared),
                    max: MAX_EVENT_DATA as u64,
                },
            ));
        }
        (c.take(declared as usize, "eventDataSize")?, None)
    };
    let event = Event {
        number: 0,
        offset,
        pcr,
        event_type,
        digests: std::iter::once(Digest {
            alg: id::SHA1,
            bytes: digest,
        })
        .collect(),
        data,
    };
    Ok((event, spec_id))
}

fn bytes_between<'a>(c: &Cursor<'a>, start: usize) -> &'a [u8] {
    c.consumed_since(start)
}

fn read_spec_id<'a>(c: &mut Cursor<'a>) -> Result<SpecId<'a>, ParseError> {
    c.take(16, "signature")?;
    let platform_class = c.u32("platformClass")?;
    let spec_version_minor = c.u8("specVersionMinor")?;
    let spec_version_major = c.u8("specVersionMajor")?;
    let spec_errata = c.u8("specErrata")?;
    let uintn_size = c.u8("uintnSize")?;
    let count_pos = c.position();
    let count = c.u32("numberOfAlgorithms")?;
    if count == 0 {
        return Err(c.error(count_pos, ParseErrorKind::BadSpecId("no algorithms")));
    }
    if count > MAX_ALGORITHMS {
        return Err(c.error(
            count_pos,
            ParseErrorKind::TooLong {
                field: "numberOfAlgorithms",
                len: u64::from(count),
                max: u64::from(MAX_ALGORITHMS),
            },
        ));
    }
    let mut algorithms: Vec<AlgorithmSize> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let pos = c.position();
        let alg = c.u16("algorithmId")?;
        let size = c.u16("digestSize")?;
        if algorithms.iter().any(|a| a.id == alg) {
            return Err(c.error(
                pos,
                ParseErrorKind::BadSpecId("an algorithm is listed twice"),
            ));
        }
        if let Some(h) = HashAlg::from_id(alg) {
            if usize::from(size) != h.size() {
                return Err(c.error(
                    pos,
                    ParseErrorKind::BadSpecId("digest size does not match the algorithm"),
                ));
            }
        }
        if size == 0 || size > 128 {
            return Err(c.error(
                pos,
                ParseErrorKind::BadSpecId("digest size is 0 or above 128"),
            ));
        }
        algorithms.push(AlgorithmSize { id: alg, size });
    }
    let vendor_len = c.u8("vendorInfoSize")?;
    let vendor_info = c.take(usize::from(vendor_len), "vendorInfo")?;
    Ok(SpecId {
        platform_class,
        spec_version_minor,
        spec_version_major,
        spec_errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}
