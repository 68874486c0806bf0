//! Appraisal straight from the log's bytes: [`RuntimeAppraisal::appraise_log`].
//!
//! Entries are read in place (binary) or decoded onto the stack (ascii): nothing is allocated
//! per entry. The path, digest and template data are slices of the log (an ascii entry's
//! template data is rebuilt in one buffer reused for every entry), the allowlist lookup hashes
//! the borrowed path, and each bank is extended with the block-level extend.
//!
//! Only the common case is taken here: `ima-ng` and unsigned `ima-sig` entries into PCR 10,
//! each allowed by a listed digest, an exclude, the violation rule or the boot aggregate, up to
//! a point where the quote holds. Anything else (a failing entry, a signature to verify, another
//! template or PCR, a log that does not replay, bytes the strict reader here does not accept)
//! is handed to [`ImaLog::parse`] and [`RuntimeAppraisal::appraise`], so the outcome and the
//! state are always exactly theirs.

use aws_lc_rs::digest;
use nodetrust_eventlog::ima::{BankRule, ImaLog, MAX_ENTRIES, MAX_TEMPLATE_DATA};
use nodetrust_eventlog::ParseError;
use nodetrust_tpm_wire::{HashAlg, PcrValues};

use super::{
    check_boot_aggregate_parts, extend_alg, ring, AllowedCounts, Running, RuntimeAppraisal,
    RuntimeOutcome,
};
use crate::runtime::compiled::CompiledPolicy;
use crate::runtime::policy::{BootAggregateRule, ViolationRule};
use crate::runtime::IMA_PCR;

/// Longest template name in a binary entry (as the event-log parser).
const MAX_TEMPLATE_NAME: usize = 255;

/// One entry, borrowed from the log (ascii digests decoded onto the stack).
struct EntryRef<'a> {
    pcr: u32,
    template_hash: [u8; 32],
    template_hash_len: usize,
    alg: &'a str,
    digest: Digest<'a>,
    path: &'a str,
    /// Binary: the template data as logged. Ascii: empty (rebuilt by the caller).
    data: &'a [u8],
    sig_template: bool,
}

enum Digest<'a> {
    Borrowed(&'a [u8]),
    Decoded([u8; 64], usize),
}

impl Digest<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Borrowed(b) => b,
            Self::Decoded(a, n) => a.get(..*n).unwrap_or_default(),
        }
    }
}

impl EntryRef<'_> {
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
type Next<'a> = Option<EntryRef<'a>>;

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `hex` into `out`; the number of bytes, or `None` if it is not hex or too long.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<usize> {
    if !hex.len().is_multiple_of(2) || hex.len() / 2 > out.len() {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *o = (hex_val(*hi)? << 4) | hex_val(*lo)?;
    }
    Some(hex.len() / 2)
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|b| *b == sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// One ascii line (without its line end), as `parse_ascii_line` reads `ima-ng` and unsigned
/// `ima-sig` lines.
fn ascii_entry(line: &[u8]) -> Next<'_> {
    let (pcr_text, rest) = split_once(line, b' ')?;
    if pcr_text.is_empty() || pcr_text.len() > 10 || !pcr_text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pcr = std::str::from_utf8(pcr_text).ok()?.parse::<u32>().ok()?;
    let (hash_text, rest) = split_once(rest, b' ')?;
    let hash_text = split_once(hash_text, b':').map_or(hash_text, |(_, h)| h);
    let mut template_hash = [0u8; 32];
    let template_hash_len = decode_hex(hash_text, &mut template_hash)?;
    if template_hash_len != 20 && template_hash_len != 32 {
        return None;
    }
    let (name, rest) = split_once(rest, b' ')?;
    let sig_template = match name {
        b"ima-ng" => false,
        b"ima-sig" => true,
        _ => return None,
    };
    let (digest_text, path) = split_once(rest, b' ')?;
    let (alg, hex_digest) = split_once(digest_text, b':')?;
    if alg.is_empty()
        || alg.len() > 64
        || !alg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return None;
    }
    let mut d = [0u8; 64];
    let n = decode_hex(hex_digest, &mut d)?;
    if n == 0 {
        return None;
    }
    let path = if sig_template {
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
    Some(EntryRef {
        pcr,
        template_hash,
        template_hash_len,
        alg: std::str::from_utf8(alg).ok()?,
        digest: Digest::Decoded(d, n),
        path: std::str::from_utf8(path).ok()?,
        data: &[],
        sig_template,
    })
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

/// One binary `ima-ng` or unsigned `ima-sig` entry at `*pos`, in place.
fn binary_entry<'a>(b: &'a [u8], pos: &mut usize) -> Next<'a> {
    let pcr = take_u32(b, pos)?;
    let mut template_hash = [0u8; 32];
    template_hash
        .get_mut(..20)?
        .copy_from_slice(take(b, pos, 20)?);
    let name = take_sized(b, pos, MAX_TEMPLATE_NAME)?;
    let sig_template = match name {
        b"ima-ng" => false,
        b"ima-sig" => true,
        _ => return None,
    };
    let data = take_sized(b, pos, MAX_TEMPLATE_DATA)?;
    let mut f = 0;
    let d = take_sized(data, &mut f, MAX_TEMPLATE_DATA)?;
    let n = take_sized(data, &mut f, MAX_TEMPLATE_DATA)?;
    if sig_template && !take_sized(data, &mut f, MAX_TEMPLATE_DATA)?.is_empty() {
        return None;
    }
    if f != data.len() {
        return None;
    }
    let sep = d.windows(2).position(|w| w == b":\0")?;
    let alg = std::str::from_utf8(d.get(..sep)?).ok()?;
    let digest = d.get(sep + 2..)?;
    let path = std::str::from_utf8(n.strip_suffix(&[0]).unwrap_or(n)).ok()?;
    Some(EntryRef {
        pcr,
        template_hash,
        template_hash_len: 20,
        alg,
        digest: Digest::Borrowed(digest),
        path,
        data,
        sig_template,
    })
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
    let digest = e.digest.bytes();
    let d_len = e.alg.len() + 2 + digest.len();
    buf.extend_from_slice(&(d_len as u32).to_le_bytes());
    buf.extend_from_slice(e.alg.as_bytes());
    buf.extend_from_slice(b":\0");
    buf.extend_from_slice(digest);
    buf.extend_from_slice(&((e.path.len() + 1) as u32).to_le_bytes());
    buf.extend_from_slice(e.path.as_bytes());
    buf.push(0);
    if e.sig_template {
        buf.extend_from_slice(&0u32.to_le_bytes());
    }
}

/// One bank followed: its running PCR 10 and, when quoted, the quoted value.
struct Bank<'q> {
    alg: HashAlg,
    value: [u8; 64],
    quoted: Option<&'q [u8]>,
    /// Extending this bank hashes the template data (so the data is bound).
    binds_data: bool,
}

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
        let mut banks: Vec<Bank<'_>> = Vec::with_capacity(4);
        if fresh || self.running.is_empty() {
            for alg in quoted.banks() {
                if quoted.get(alg, IMA_PCR).is_some() {
                    banks.push(Bank {
                        alg,
                        value: [0; 64],
                        quoted: None,
                        binds_data: false,
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
                    binds_data: false,
                });
            }
        }
        for b in &mut banks {
            b.quoted = quoted.get(b.alg, IMA_PCR);
        }
        if !banks.iter().any(|b| b.quoted.is_some()) {
            return None;
        }
        let holds = |banks: &[Bank<'_>]| {
            banks.iter().all(|b| match b.quoted {
                Some(q) => b.value.get(..b.alg.size()) == Some(q),
                None => true,
            })
        };

        let ascii = is_ascii_log(log);
        let mut data_buf: Vec<u8> = Vec::new();
        let mut allowed = AllowedCounts::default();
        let mut violations: u64 = 0;
        // (entries covered, counts, violations, bank values) where the quote last held.
        let mut last: Option<(usize, AllowedCounts, u64, Vec<[u8; 64]>)> = None;
        let snapshot = |banks: &[Bank<'_>]| banks.iter().map(|b| b.value).collect::<Vec<_>>();
        if holds(&banks) {
            last = Some((0, allowed, 0, snapshot(&banks)));
        }
        let mut pos = 0usize;
        let mut count = 0usize;
        let mut buf = [0u8; 64];
        loop {
            let e = if ascii {
                // Lines as `ImaLog::parse_ascii` splits them; blank lines are skipped.
                let rest = log.get(pos..)?;
                if rest.is_empty() {
                    break;
                }
                let end = rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                pos += end;
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
                ascii_entry(line)?
            } else {
                if pos >= log.len() {
                    break;
                }
                binary_entry(log, &mut pos)?
            };
            if count >= MAX_ENTRIES || e.pcr != ima_pcr {
                return None;
            }
            let at = first_entry.checked_add(count as u64)?;
            count += 1;
            let th = e.template_hash();
            let violation = e.is_violation();
            let data: &[u8] = if ascii {
                rebuild_data(&e, &mut data_buf);
                &data_buf
            } else {
                e.data
            };
            // Replay.
            let mut bound = false;
            for b in &mut banks {
                let n = b.alg.size();
                let v = buf.get_mut(..n)?;
                let logged_is_bank = matches!(
                    (b.alg, th.len()),
                    (HashAlg::Sha1, 20) | (HashAlg::Sha256, 32)
                );
                b.binds_data = !logged_is_bank;
                if violation {
                    v.fill(0xFF);
                } else if logged_is_bank {
                    v.copy_from_slice(th);
                } else {
                    v.copy_from_slice(digest::digest(ring(b.alg), data).as_ref().get(..n)?);
                }
                bound |= b.binds_data && b.quoted.is_some();
                nodetrust_extend::extend(extend_alg(b.alg), b.value.get_mut(..n)?, v);
            }
            // The entry, as `appraise` decides it; anything but an allowance is the full path's.
            if violation {
                if at == 0 {
                    return None;
                }
                violations += 1;
            } else if !bound {
                let alg = if th.len() == 32 {
                    HashAlg::Sha256
                } else {
                    HashAlg::Sha1
                };
                if digest::digest(ring(alg), data).as_ref() != th {
                    return None;
                }
            }
            if at == 0
                && (policy.boot_aggregate() == BootAggregateRule::Require
                    || e.path == "boot_aggregate")
            {
                if e.path != "boot_aggregate" {
                    return None;
                }
                if policy.boot_aggregate() == BootAggregateRule::Require {
                    check_boot_aggregate_parts(e.alg, e.digest.bytes(), quoted).ok()?;
                }
                allowed.boot_aggregate += 1;
            } else if violation {
                if policy.violations() != ViolationRule::Allow {
                    return None;
                }
                allowed.violation += 1;
            } else if policy.is_listed(e.path, e.alg, e.digest.bytes()) {
                allowed.digest += 1;
            } else if policy.is_excluded(e.path) {
                allowed.excluded += 1;
            } else {
                return None;
            }
            if holds(&banks) {
                last = Some((count, allowed, violations, snapshot(&banks)));
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
