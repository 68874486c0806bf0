//! Appraisal straight from the log's bytes: [`RuntimeAppraisal::appraise_log`].
//!
//! Entries are read in place (binary) or decoded onto the stack (ascii): nothing is allocated
//! per entry. The path, digest and template data are slices of the log (an ascii entry's
//! template data is rebuilt in one buffer reused for every entry), and the hashes are the
//! block functions of `nodetrust-extend` on stack buffers.
//!
//! Entries are taken [`BATCH`] at a time. The batch's allowlist lookups are made together
//! ([`CompiledPolicy::are_listed`]), so that their reads of a policy of megabytes overlap;
//! then each entry in order is replayed and decided, the hash of the next entry's template
//! data computed together with the current entry's extend
//! ([`nodetrust_extend::hash_and_extend`]: the two do not depend on each other, and their
//! blocks are compressed in pairs).
//!
//! Only the common case is taken here: `ima-ng` and unsigned `ima-sig` entries into PCR 10,
//! each allowed by a listed digest, an exclude, the violation rule or the boot aggregate, up to
//! a point where the quote holds. Anything else (a failing entry, a signature to verify, another
//! template or PCR, a log that does not replay, bytes the strict reader here does not accept)
//! is handed to [`ImaLog::parse`] and [`RuntimeAppraisal::appraise`], so the outcome and the
//! state are always exactly theirs.
//!
//! Paths and algorithm names are compared as bytes. A path that is not UTF-8 cannot equal a
//! policy path (those are strings), and every other way to allow an entry here checks it, so
//! such an entry never passes here; the full path then decides (and reports the ascii log as
//! not UTF-8, as [`ImaLog::parse`] does).

use nodetrust_eventlog::ima::{BankRule, ImaLog, MAX_ENTRIES, MAX_TEMPLATE_DATA};
use nodetrust_eventlog::ParseError;
use nodetrust_tpm_wire::{HashAlg, PcrValues};

use super::{
    check_boot_aggregate_parts, extend_alg, AllowedCounts, Running, RuntimeAppraisal,
    RuntimeOutcome,
};
use crate::runtime::compiled::{same, CompiledPolicy, Lookup};
use crate::runtime::policy::{BootAggregateRule, ViolationRule};
use crate::runtime::IMA_PCR;

/// Longest template name in a binary entry (as the event-log parser).
const MAX_TEMPLATE_NAME: usize = 255;

/// Entries read, looked up and then appraised together.
const BATCH: usize = 32;

/// Most banks followed (one per hash algorithm).
const MAX_BANKS: usize = 4;

/// One entry, borrowed from the log (ascii digests decoded into it). The reader fills the
/// entries of a batch in place, every field each time.
struct EntryRef<'a> {
    pcr: u32,
    template_hash: [u8; 32],
    template_hash_len: usize,
    /// The file digest's algorithm name, as logged (not checked to be UTF-8).
    alg: &'a [u8],
    /// Binary: the file digest as logged. Ascii: empty (decoded into `decoded`).
    logged_digest: &'a [u8],
    /// Ascii: the file digest, its first `decoded_len` bytes (at least one).
    decoded: [u8; 64],
    decoded_len: usize,
    /// As logged (not checked to be UTF-8).
    path: &'a [u8],
    /// Binary: the template data as logged. Ascii: empty (rebuilt by the caller).
    data: &'a [u8],
    sig_template: bool,
}

impl EntryRef<'_> {
    fn empty() -> Self {
        Self {
            pcr: 0,
            template_hash: [0; 32],
            template_hash_len: 0,
            alg: &[],
            logged_digest: &[],
            decoded: [0; 64],
            decoded_len: 0,
            path: &[],
            data: &[],
            sig_template: false,
        }
    }

    /// The file digest.
    fn digest(&self) -> &[u8] {
        if self.decoded_len > 0 {
            self.decoded.get(..self.decoded_len).unwrap_or_default()
        } else {
            self.logged_digest
        }
    }

    fn template_hash(&self) -> &[u8] {
        self.template_hash
            .get(..self.template_hash_len)
            .unwrap_or_default()
    }

    fn is_violation(&self) -> bool {
        self.template_hash().iter().all(|b| *b == 0)
    }
}

/// `None`: not a form this reader takes (the full parser decides).
type Next = Option<()>;

/// The value of each hex digit; `0xFF` for every other byte.
#[allow(
    clippy::indexing_slicing,
    reason = "computed at compile time; c < 256 indexes a 256-entry table"
)]
const HEX: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        t[c] = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => 0xFF,
        };
        c += 1;
    }
    t
};

/// Decodes `hex` into `out`; the number of bytes, or `None` if it is not hex or too long.
/// Branch-free per digit (a table look-up), so random digits cost no mispredictions.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<usize> {
    let n = hex.len() / 2;
    if !hex.len().is_multiple_of(2) || n > out.len() {
        return None;
    }
    let digit = |c: u8| HEX.get(usize::from(c)).copied().unwrap_or(0xFF);
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        let (h, l) = (digit(*hi), digit(*lo));
        bad |= h | l;
        *o = (h << 4) | (l & 0x0F);
    }
    (bad & 0xF0 == 0).then_some(n)
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = find_byte(s, sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// The position of the first `byte` in `s`, eight bytes at a time: a byte of `w ^ byte…` is
/// zero where the word `w` holds `byte`.
fn find_byte(s: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let pattern = ONES * u64::from(byte);
    let mut words = s.chunks_exact(8);
    let mut at = 0usize;
    for w in &mut words {
        let x = u64::from_le_bytes(<[u8; 8]>::try_from(w).unwrap_or_default()) ^ pattern;
        // The lowest flagged byte is the first zero byte (only bytes above one can be
        // flagged falsely, by the borrow).
        let zero = x.wrapping_sub(ONES) & !x & HIGH;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| *b == byte)
        .map(|i| at + i)
}

/// The length of the line at the start of `text`, its `\n` included (all of `text` when it
/// has none).
fn line_len(text: &[u8]) -> usize {
    find_byte(text, b'\n').map_or(text.len(), |i| i + 1)
}

/// A PCR number as `str::parse::<u32>` reads it, digits only.
fn parse_pcr(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 {
        return None;
    }
    let mut v: u64 = 0;
    for d in text {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(d - b'0');
    }
    u32::try_from(v).ok()
}

/// Splits `s` at `at` when a space is there, else at its first space. For a field of `at`
/// hex digits: the caller decodes the text before, and when it is hex it has no space, so this
/// was the first space; when it is not, the caller gives up.
fn split_at_space(s: &[u8], at: usize) -> Option<(&[u8], &[u8])> {
    if s.get(at) == Some(&b' ') {
        return Some((s.get(..at)?, s.get(at + 1..)?));
    }
    split_once(s, b' ')
}

/// One ascii line (without its line end) into `e`, as `parse_ascii_line` reads `ima-ng` and
/// unsigned `ima-sig` lines.
fn ascii_entry<'a>(line: &'a [u8], e: &mut EntryRef<'a>) -> Next {
    let (pcr_text, rest) = split_once(line, b' ')?;
    e.pcr = parse_pcr(pcr_text)?;
    // The template hash: 40 hex digits, most often. Split there, the text has exactly 40
    // characters; with a prefix it decodes to at most 19 bytes below and is refused, so only
    // 40 hex digits (no space) are taken.
    let (hash_text, rest) = split_at_space(rest, 40)?;
    // An algorithm prefix (`sha256:`) is not hex: only then is the text split.
    e.template_hash_len = match decode_hex(hash_text, &mut e.template_hash) {
        Some(n) => n,
        None => {
            let hex = split_once(hash_text, b':').map_or(hash_text, |(_, h)| h);
            decode_hex(hex, &mut e.template_hash)?
        }
    };
    if e.template_hash_len != 20 && e.template_hash_len != 32 {
        return None;
    }
    let (name, rest) = split_once(rest, b' ')?;
    e.sig_template = match name {
        b"ima-ng" => false,
        b"ima-sig" => true,
        _ => return None,
    };
    // `alg:hex` up to the first space: the algorithm has no space (checked below) and the hex
    // digits none, so the first space after the algorithm's `:` ends the field.
    let colon = find_byte(rest, b':')?;
    let alg = rest.get(..colon)?;
    if alg.is_empty()
        || alg.len() > 64
        || !alg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return None;
    }
    let hex_len = match alg {
        b"sha1" => 40,
        b"sha256" | b"sm3" => 64,
        b"sha384" => 96,
        b"sha512" => 128,
        _ => 0,
    };
    let (hex_digest, path) = split_at_space(rest.get(colon + 1..)?, hex_len)?;
    e.decoded_len = decode_hex(hex_digest, &mut e.decoded)?;
    if e.decoded_len == 0 {
        return None;
    }
    e.alg = alg;
    e.logged_digest = &[];
    e.data = &[];
    e.path = if e.sig_template {
        // A signature (last field, hex, starting with 0) is verified by the full path.
        if let Some(i) = path.iter().rposition(|b| *b == b' ') {
            let sig = path.get(i + 1..)?;
            if !sig.is_empty()
                && sig.len() % 2 == 0
                && sig.iter().all(u8::is_ascii_hexdigit)
                && sig.first() == Some(&b'0')
            {
                return None;
            }
        }
        // `str::trim_end`, for the ASCII white space; anything else is the full parser's.
        let mut p = path;
        while let Some((last, init)) = p.split_last() {
            if matches!(last, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
                p = init;
            } else {
                break;
            }
        }
        if p.last().is_some_and(|b| *b >= 0x80) {
            return None;
        }
        p
    } else {
        path
    };
    Some(())
}

/// Reads a little-endian `u32` at `*pos`.
fn take_u32(b: &[u8], pos: &mut usize) -> Option<u32> {
    let s = b.get(*pos..pos.checked_add(4)?)?;
    *pos += 4;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

/// Reads `n` bytes at `*pos`.
fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let s = b.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(s)
}

/// Reads a `u32` length, at most `max`, then that many bytes.
fn take_sized<'a>(b: &'a [u8], pos: &mut usize, max: usize) -> Option<&'a [u8]> {
    let n = usize::try_from(take_u32(b, pos)?).ok()?;
    if n > max {
        return None;
    }
    take(b, pos, n)
}

/// One binary `ima-ng` or unsigned `ima-sig` entry at `*pos` into `e`, in place.
fn binary_entry<'a>(b: &'a [u8], pos: &mut usize, e: &mut EntryRef<'a>) -> Next {
    e.pcr = take_u32(b, pos)?;
    e.template_hash
        .get_mut(..20)?
        .copy_from_slice(take(b, pos, 20)?);
    e.template_hash_len = 20;
    let name = take_sized(b, pos, MAX_TEMPLATE_NAME)?;
    e.sig_template = match name {
        b"ima-ng" => false,
        b"ima-sig" => true,
        _ => return None,
    };
    let data = take_sized(b, pos, MAX_TEMPLATE_DATA)?;
    let mut f = 0;
    let d = take_sized(data, &mut f, MAX_TEMPLATE_DATA)?;
    let n = take_sized(data, &mut f, MAX_TEMPLATE_DATA)?;
    if e.sig_template && !take_sized(data, &mut f, MAX_TEMPLATE_DATA)?.is_empty() {
        return None;
    }
    if f != data.len() {
        return None;
    }
    let sep = d.windows(2).position(|w| w == b":\0")?;
    e.alg = d.get(..sep)?;
    e.logged_digest = d.get(sep + 2..)?;
    e.decoded_len = 0;
    e.path = n.strip_suffix(&[0]).unwrap_or(n);
    e.data = data;
    Some(())
}

/// Whether `ImaLog::parse` reads `bytes` as ascii.
fn is_ascii_log(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(u8::is_ascii_digit)
        && bytes.iter().take(4096).all(|b| {
            b.is_ascii_graphic() || *b == b' ' || *b == b'\n' || *b == b'\t' || *b == b'\r'
        })
}

/// The template data of an ascii entry, rebuilt into `buf`.
fn rebuild_data(e: &EntryRef<'_>, buf: &mut Vec<u8>) {
    buf.clear();
    let digest = e.digest();
    let d_len = e.alg.len() + 2 + digest.len();
    buf.extend_from_slice(&(d_len as u32).to_le_bytes());
    buf.extend_from_slice(e.alg);
    buf.extend_from_slice(b":\0");
    buf.extend_from_slice(digest);
    buf.extend_from_slice(&((e.path.len() + 1) as u32).to_le_bytes());
    buf.extend_from_slice(e.path);
    buf.push(0);
    if e.sig_template {
        buf.extend_from_slice(&0u32.to_le_bytes());
    }
}

/// The log's entries one by one, as the full parser splits them.
struct Reader<'a> {
    log: &'a [u8],
    pos: usize,
    ascii: bool,
}

impl<'a> Reader<'a> {
    /// The next entry into `e` (`true`), the end (`false`), or `None` for bytes this reader
    /// does not take.
    fn next(&mut self, e: &mut EntryRef<'a>) -> Option<bool> {
        if !self.ascii {
            if self.pos >= self.log.len() {
                return Some(false);
            }
            return binary_entry(self.log, &mut self.pos, e).map(|()| true);
        }
        loop {
            // Lines as `ImaLog::parse_ascii` splits them; blank lines are skipped.
            let rest = self.log.get(self.pos..)?;
            if rest.is_empty() {
                return Some(false);
            }
            let end = line_len(rest);
            self.pos += end;
            let mut line = rest.get(..end)?;
            while let Some((last, init)) = line.split_last() {
                if *last == b'\n' || *last == b'\r' {
                    line = init;
                } else {
                    break;
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return ascii_entry(line, e).map(|()| true);
        }
    }
}

/// One bank followed: its running PCR 10 and, when quoted, the quoted value.
struct Bank<'q> {
    alg: HashAlg,
    value: [u8; 64],
    quoted: Option<&'q [u8]>,
}

/// What one entry extends into each bank (indexed like the banks), computed ahead of the
/// extend.
type Extends = [[u8; 64]; MAX_BANKS];

/// The values `e` extends into `banks`, or `None` when its logged template hash is not the
/// hash of its data and no quoted bank binds the data (the full path reports it). `data` is
/// the entry's template data.
///
/// With `prev` (what the entry before extends into each bank), that extend is done here too:
/// a bank whose algorithm hashes `e`'s data takes its previous value's extend in the same
/// [`nodetrust_extend::hash_and_extend`] call; the others are extended at the end. Either way
/// every bank has been extended with `prev` when this returns `Some`.
fn extend_values(
    e: &EntryRef<'_>,
    data: &[u8],
    banks: &mut [Bank<'_>],
    prev: Option<&Extends>,
) -> Option<Extends> {
    let mut out = [[0u8; 64]; MAX_BANKS];
    // Banks already extended with `prev`.
    let mut done = [prev.is_none(); MAX_BANKS];
    // Hashes `data` with `alg` into `h`, extending the first bank of that algorithm not done.
    let hash = |alg: HashAlg, h: &mut [u8], banks: &mut [Bank<'_>], done: &mut [bool]| {
        let n = alg.size();
        let pair = banks
            .iter_mut()
            .zip(done.iter_mut())
            .enumerate()
            .find(|(_, (b, d))| b.alg == alg && !**d);
        match (pair, prev) {
            (Some((k, (b, d))), Some(prev)) => {
                *d = true;
                let digest = prev.get(k).and_then(|v| v.get(..n)).unwrap_or_default();
                let cur = b.value.get_mut(..n).unwrap_or_default();
                nodetrust_extend::hash_and_extend(extend_alg(alg), data, h, cur, digest)
            }
            _ => nodetrust_extend::hash(extend_alg(alg), data, h),
        }
    };
    let th = e.template_hash();
    let violation = e.is_violation();
    let mut bound = false;
    for (k, v) in out.iter_mut().enumerate().take(banks.len()) {
        let b = banks.get(k)?;
        let (alg, quoted) = (b.alg, b.quoted.is_some());
        let v = v.get_mut(..alg.size())?;
        let logged_is_bank = matches!((alg, th.len()), (HashAlg::Sha1, 20) | (HashAlg::Sha256, 32));
        bound |= !logged_is_bank && quoted;
        if violation {
            v.fill(0xFF);
        } else if logged_is_bank {
            v.copy_from_slice(th);
        } else if !hash(alg, v, banks, &mut done) {
            return None;
        }
    }
    if !violation && !bound {
        let alg = if th.len() == 32 {
            HashAlg::Sha256
        } else {
            HashAlg::Sha1
        };
        let mut h = [0u8; 32];
        let h = h.get_mut(..alg.size())?;
        if !hash(alg, h, banks, &mut done) || h != th {
            return None;
        }
    }
    if let Some(prev) = prev {
        for ((b, v), d) in banks.iter_mut().zip(prev).zip(done) {
            let n = b.alg.size();
            if !d {
                nodetrust_extend::extend(extend_alg(b.alg), b.value.get_mut(..n)?, v.get(..n)?);
            }
        }
    }
    Some(out)
}

/// Where the quote last held: entries covered, counts, violations, bank values.
type Held = (usize, AllowedCounts, u64, [[u8; 64]; MAX_BANKS]);

impl RuntimeAppraisal {
    /// As [`appraise`](Self::appraise), with the new entries given as the log's bytes from
    /// entry `first_entry` on (ascii or binary, detected as [`ImaLog::parse`] does).
    ///
    /// The outcome and the state are exactly those of parsing the bytes and calling
    /// [`appraise`](Self::appraise); when every entry is allowed, this gets there without
    /// allocating per entry (see the module notes). Errors are [`ImaLog::parse`]'s.
    pub fn appraise_log(
        &mut self,
        policy: &CompiledPolicy,
        first_entry: u64,
        log: &[u8],
        quoted: &PcrValues,
    ) -> Result<RuntimeOutcome, ParseError> {
        if let Some(out) = self.fast(policy, first_entry, log, quoted) {
            return Ok(out);
        }
        let parsed = ImaLog::parse(log)?;
        Ok(self.appraise(policy, first_entry, &parsed.entries, quoted))
    }

    /// The common case, or `None` for the full path. Changes `self` only when it answers.
    fn fast(
        &mut self,
        policy: &CompiledPolicy,
        first_entry: u64,
        log: &[u8],
        quoted: &PcrValues,
    ) -> Option<RuntimeOutcome> {
        if self.bank_rule != BankRule::Recompute {
            return None;
        }
        let fresh = first_entry == 0;
        if !fresh && (self.policy != policy.fingerprint() || first_entry != self.entries) {
            return None;
        }
        let ima_pcr = u32::from(IMA_PCR);
        let mut banks: Vec<Bank<'_>> = Vec::with_capacity(MAX_BANKS);
        if fresh || self.running.is_empty() {
            for alg in quoted.banks() {
                if quoted.get(alg, IMA_PCR).is_some() {
                    banks.push(Bank {
                        alg,
                        value: [0; 64],
                        quoted: None,
                    });
                }
            }
        } else {
            for r in &self.running {
                if r.pcr != ima_pcr || banks.iter().any(|b| b.alg == r.bank) {
                    return None;
                }
                let mut value = [0u8; 64];
                value.get_mut(..r.value.len())?.copy_from_slice(&r.value);
                banks.push(Bank {
                    alg: r.bank,
                    value,
                    quoted: None,
                });
            }
        }
        if banks.len() > MAX_BANKS {
            return None;
        }
        for b in &mut banks {
            b.quoted = quoted.get(b.alg, IMA_PCR);
        }
        if !banks.iter().any(|b| b.quoted.is_some()) {
            return None;
        }
        let holds = |banks: &[Bank<'_>]| {
            banks.iter().all(|b| match b.quoted {
                Some(q) => b.value.get(..b.alg.size()).is_some_and(|v| same(v, q)),
                None => true,
            })
        };
        let snapshot = |banks: &[Bank<'_>]| {
            let mut v = [[0u8; 64]; MAX_BANKS];
            for (v, b) in v.iter_mut().zip(banks) {
                *v = b.value;
            }
            v
        };

        let ascii = is_ascii_log(log);
        let mut reader = Reader { log, pos: 0, ascii };
        let mut data_buf: Vec<u8> = Vec::new();
        let mut allowed = AllowedCounts::default();
        let mut violations: u64 = 0;
        let mut last: Option<Held> = None;
        if holds(&banks) {
            last = Some((0, allowed, 0, snapshot(&banks)));
        }
        let mut count = 0usize;
        let mut slots: [EntryRef<'_>; BATCH] = std::array::from_fn(|_| EntryRef::empty());
        let mut listed = [false; BATCH];
        let mut at_end = false;
        while !at_end {
            let mut n = 0;
            for e in &mut slots {
                if !reader.next(e)? {
                    at_end = true;
                    break;
                }
                if count + n >= MAX_ENTRIES || e.pcr != ima_pcr {
                    return None;
                }
                n += 1;
            }
            let batch = slots.get(..n)?;
            let mut lookups = [Lookup::default(); BATCH];
            for (l, e) in lookups.iter_mut().zip(batch) {
                *l = Lookup {
                    path: e.path,
                    alg: e.alg,
                    digest: e.digest(),
                };
            }
            policy.are_listed(lookups.get(..n)?, listed.get_mut(..n)?);

            // The template data's hashes one entry ahead of the extends, the next entry's
            // hashing paired with this entry's extends.
            let mut next = match batch.first() {
                Some(e) => {
                    if ascii {
                        rebuild_data(e, &mut data_buf);
                    }
                    let data = if ascii { data_buf.as_slice() } else { e.data };
                    Some(extend_values(e, data, &mut banks, None)?)
                }
                None => None,
            };
            for (j, (e, is_listed)) in batch.iter().zip(listed).enumerate() {
                let values = next.take()?;
                if let Some(n) = batch.get(j + 1) {
                    if ascii {
                        rebuild_data(n, &mut data_buf);
                    }
                    let data = if ascii { data_buf.as_slice() } else { n.data };
                    next = Some(extend_values(n, data, &mut banks, Some(&values))?);
                } else {
                    for (b, v) in banks.iter_mut().zip(&values) {
                        let n = b.alg.size();
                        nodetrust_extend::extend(
                            extend_alg(b.alg),
                            b.value.get_mut(..n)?,
                            v.get(..n)?,
                        );
                    }
                }
                let at = first_entry.checked_add(count as u64)?;
                count += 1;
                // The entry, as `appraise` decides it; anything but an allowance is the full
                // path's.
                let violation = e.is_violation();
                if violation {
                    if at == 0 {
                        return None;
                    }
                    violations += 1;
                }
                let boot_aggregate = e.path == b"boot_aggregate";
                if at == 0
                    && (policy.boot_aggregate() == BootAggregateRule::Require || boot_aggregate)
                {
                    if !boot_aggregate {
                        return None;
                    }
                    if policy.boot_aggregate() == BootAggregateRule::Require {
                        let alg = std::str::from_utf8(e.alg).ok()?;
                        check_boot_aggregate_parts(alg, e.digest(), quoted).ok()?;
                    }
                    allowed.boot_aggregate += 1;
                } else if violation {
                    if policy.violations() != ViolationRule::Allow {
                        return None;
                    }
                    // The full parser refuses an ascii log that is not UTF-8.
                    std::str::from_utf8(e.path).ok()?;
                    allowed.violation += 1;
                } else if is_listed {
                    allowed.digest += 1;
                } else if policy.is_excluded(std::str::from_utf8(e.path).ok()?) {
                    allowed.excluded += 1;
                } else {
                    return None;
                }
                if holds(&banks) {
                    last = Some((count, allowed, violations, snapshot(&banks)));
                }
            }
        }
        let (covered, allowed, new_violations, values) = last?;
        if fresh {
            *self = Self::with_bank_rule(self.bank_rule).with_failure_limit(self.limit);
            self.policy = policy.fingerprint().to_string();
        }
        self.running = banks
            .iter()
            .zip(&values)
            .map(|(b, v)| Running {
                bank: b.alg,
                pcr: ima_pcr,
                value: v.get(..b.alg.size()).unwrap_or_default().to_vec(),
            })
            .collect();
        self.entries += covered as u64;
        self.violations += new_violations;
        Some(RuntimeOutcome {
            problem: None,
            appraised: covered as u64,
            entries: self.entries,
            unquoted: (count - covered) as u64,
            new_failures: 0,
            failures_total: self.failures_total,
            failures: self.failures.clone(),
            violations: self.violations,
            allowed,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a panic is a failed test"
    )]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn find_byte_is_position(
            s in proptest::collection::vec(prop_oneof![Just(b' '), Just(b'\n'), Just(0x8A), any::<u8>()], 0..80),
            byte in prop_oneof![Just(b' '), Just(b'\n'), any::<u8>()],
        ) {
            prop_assert_eq!(find_byte(&s, byte), s.iter().position(|b| *b == byte));
            let len = s.iter().position(|b| *b == b'\n').map_or(s.len(), |i| i + 1);
            prop_assert_eq!(line_len(&s), len);
        }

        #[test]
        fn decode_hex_is_the_hex_crate(
            s in proptest::collection::vec(prop_oneof![
                proptest::sample::select(b"0123456789abcdefABCDEF".to_vec()),
                any::<u8>(),
            ], 0..140),
        ) {
            let mut out = [0u8; 64];
            let want = hex::decode(&s).ok().filter(|d| d.len() <= 64);
            let got = decode_hex(&s, &mut out).map(|n| out[..n].to_vec());
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn pcr_numbers_read_as_u32_parse() {
        for t in [
            "0",
            "10",
            "007",
            "4294967295",
            "4294967296",
            "",
            "1a",
            "+1",
            "99999999999",
        ] {
            assert_eq!(
                parse_pcr(t.as_bytes()),
                t.parse::<u32>().ok().filter(|_| !t.starts_with('+')),
                "{t}"
            );
        }
    }
}
