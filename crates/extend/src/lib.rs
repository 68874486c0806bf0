//! TPM PCR extend: `pcr = H(pcr || digest)`, for SHA-1, SHA-256, SHA-384 and SHA-512 banks.
//!
//! Replaying an event log is almost nothing but extends, so this is where a verifier spends
//! its time. Two things make it fast:
//!
//! - **Block level.** An extend's message always has the same length for a bank, so its padding
//!   is known in advance: a SHA-1 or SHA-384 extend is one compression of one block, SHA-256 and
//!   SHA-512 two. [`extend`] calls the compression functions of the RustCrypto `sha1` and `sha2`
//!   crates directly on a stack block, with no hasher to set up or finalise.
//! - **Stitching.** An event usually extends the same PCR in several banks, and the hashes are
//!   independent. On x86-64 with the SHA extensions, [`extend_event`] computes an event's
//!   SHA-1, SHA-256 and SHA-384 extends in one interleaved pass, so the SHA-1 and SHA-256 work
//!   (bound by the latency of the SHA instructions) runs under the SHA-512 rounds (bound by the
//!   integer units) instead of after them. See `x86.rs` and docs/PERFORMANCE.md.
//!
//! For measurement logs the crate also hashes short messages with the same block functions
//! ([`hash`]), and pairs such a hash with an independent extend ([`hash_and_extend`]): an IMA
//! entry's template data is hashed while the entry before it is extended, the two jobs' blocks
//! compressed side by side on x86-64 with the SHA extensions.
//!
//! Pure: no I/O, no allocation. The only `unsafe` in the crate are the calls into the x86-64
//! kernels, each made after the CPU features it needs were detected at run time, and the empty
//! `asm!` scheduling barrier in `x86.rs`; every other line, the kernels included, is safe
//! code. The tests check every path against one-shot hashing, for random inputs and every
//! combination of banks.

mod consts;
mod words;
#[cfg(target_arch = "x86_64")]
mod x86;

use consts::{IV1, IV256, IV384, IV512};
use words::{padded_block, put_be32, put_be64};

/// A PCR bank's hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// SHA-1 (20-byte PCRs).
    Sha1,
    /// SHA-256 (32-byte PCRs).
    Sha256,
    /// SHA-384 (48-byte PCRs).
    Sha384,
    /// SHA-512 (64-byte PCRs).
    Sha512,
}

impl Alg {
    /// Digest (and PCR) size in bytes.
    pub const fn size(self) -> usize {
        match self {
            Alg::Sha1 => 20,
            Alg::Sha256 => 32,
            Alg::Sha384 => 48,
            Alg::Sha512 => 64,
        }
    }
}

/// Writes `first || second` into `block` from byte 0; false when they do not fit.
fn fill(block: &mut [u8], first: &[u8], second: &[u8]) -> bool {
    let total = first.len() + second.len();
    let Some(dst) = block.get_mut(..total) else {
        return false;
    };
    let (a, b) = dst.split_at_mut(first.len());
    a.copy_from_slice(first);
    b.copy_from_slice(second);
    true
}

/// `cur = H(cur || digest)` with the portable block functions. `cur` and `digest` must both be
/// `alg.size()` bytes; otherwise nothing changes and `false` is returned.
pub fn extend(alg: Alg, cur: &mut [u8], digest: &[u8]) -> bool {
    let n = alg.size();
    if cur.len() != n || digest.len() != n {
        return false;
    }
    // The message is 2n bytes; its length in bits ends the last block.
    let bits = (2 * n * 8) as u64;
    match alg {
        Alg::Sha1 => {
            // 40 bytes + 0x80 + zeros + 64-bit length: one block.
            let (Ok(c), Ok(d)) = (<&[u8; 20]>::try_from(&*cur), <&[u8; 20]>::try_from(digest))
            else {
                return false;
            };
            let mut state = IV1;
            sha1::block_api::compress(&mut state, &[padded_block::<20, 64>(c, d)]);
            put_be32(cur, &state);
        }
        Alg::Sha256 => {
            // 64 bytes: a full block, then a padding block.
            let mut blocks = [[0u8; 64]; 2];
            if !fill(&mut blocks[0], cur, digest) {
                return false;
            }
            blocks[1][0] = 0x80;
            blocks[1][56..].copy_from_slice(&bits.to_be_bytes());
            let mut state = IV256;
            sha2::block_api::compress256(&mut state, &blocks);
            put_be32(cur, &state);
        }
        Alg::Sha384 => {
            // 96 bytes + 0x80 + zeros + 128-bit length: one block.
            let (Ok(c), Ok(d)) = (<&[u8; 48]>::try_from(&*cur), <&[u8; 48]>::try_from(digest))
            else {
                return false;
            };
            let mut state = IV384;
            sha2::block_api::compress512(&mut state, &[padded_block::<48, 128>(c, d)]);
            put_be64(cur, &state);
        }
        Alg::Sha512 => {
            let mut blocks = [[0u8; 128]; 2];
            if !fill(&mut blocks[0], cur, digest) {
                return false;
            }
            blocks[1][0] = 0x80;
            blocks[1][120..].copy_from_slice(&bits.to_be_bytes());
            let mut state = IV512;
            sha2::block_api::compress512(&mut state, &blocks);
            put_be64(cur, &state);
        }
    }
    true
}

/// Runs the compression function of `B`-byte blocks over `data` padded with its bit length in
/// `L` bytes (8 for SHA-1 and SHA-256, 16 for SHA-384 and SHA-512): whole blocks straight from
/// `data`, the tail and the padding from one or two blocks on the stack.
fn md_hash<const B: usize, const L: usize>(data: &[u8], mut compress: impl FnMut(&[u8; B])) {
    let mut blocks = data.chunks_exact(B);
    for b in &mut blocks {
        if let Ok(b) = <&[u8; B]>::try_from(b) {
            compress(b);
        }
    }
    let tail = blocks.remainder();
    let mut last = [[0u8; B]; 2];
    let [first, second] = &mut last;
    if let Some(dst) = first.get_mut(..tail.len()) {
        dst.copy_from_slice(tail);
    }
    if let Some(b) = first.get_mut(tail.len()) {
        *b = 0x80;
    }
    let bits = (data.len() as u128).wrapping_mul(8).to_be_bytes();
    let len = bits.get(16 - L..).unwrap_or_default();
    if tail.len() < B - L {
        if let Some(dst) = first.get_mut(B - L..) {
            dst.copy_from_slice(len);
        }
        compress(first);
    } else {
        if let Some(dst) = second.get_mut(B - L..) {
            dst.copy_from_slice(len);
        }
        compress(first);
        compress(second);
    }
}

/// `out = H(data)` with the same block functions as [`extend`]: no hasher to set up, no
/// allocation. For the short messages of a measurement log (an IMA entry's template data is a
/// few blocks) this skips the per-call cost of a general-purpose hasher. `out` must be
/// `alg.size()` bytes; otherwise nothing is written and `false` is returned.
pub fn hash(alg: Alg, data: &[u8], out: &mut [u8]) -> bool {
    if out.len() != alg.size() {
        return false;
    }
    match alg {
        Alg::Sha1 => {
            let mut state = IV1;
            md_hash::<64, 8>(data, |b| {
                sha1::block_api::compress(&mut state, std::slice::from_ref(b));
            });
            put_be32(out, &state);
        }
        Alg::Sha256 => {
            let mut state = IV256;
            md_hash::<64, 8>(data, |b| {
                sha2::block_api::compress256(&mut state, std::slice::from_ref(b));
            });
            put_be32(out, &state);
        }
        Alg::Sha384 | Alg::Sha512 => {
            let mut state = if alg == Alg::Sha384 { IV384 } else { IV512 };
            md_hash::<128, 16>(data, |b| {
                sha2::block_api::compress512(&mut state, std::slice::from_ref(b));
            });
            put_be64(out, &state);
        }
    }
    true
}

/// The blocks of an extend's message: one (SHA-1) or two (SHA-256).
#[cfg(target_arch = "x86_64")]
enum ExtendBlocks {
    One([u8; 64]),
    Two([[u8; 64]; 2]),
}

/// Two independent jobs at once: `out = H(data)` and `cur = H(cur || digest)`, for SHA-1 and
/// SHA-256 (any other `alg` is done one job after the other). The result is that of [`hash`]
/// and [`extend`]; on x86-64 with the SHA extensions the blocks of the two jobs are compressed
/// in pairs ([`sha_available`]), so that one job's rounds run in the other's latency.
///
/// A measurement log needs exactly this: the extend of one entry and the hash of the next
/// entry's template data do not depend on each other. `out` must be `alg.size()` bytes and so
/// must `cur` and `digest`; otherwise nothing is written and `false` is returned.
pub fn hash_and_extend(
    alg: Alg,
    data: &[u8],
    out: &mut [u8],
    cur: &mut [u8],
    digest: &[u8],
) -> bool {
    let n = alg.size();
    if out.len() != n || cur.len() != n || digest.len() != n {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if sha_available() {
        let ext = match alg {
            Alg::Sha1 => {
                let (Ok(c), Ok(d)) = (<&[u8; 20]>::try_from(&*cur), <&[u8; 20]>::try_from(digest))
                else {
                    return false;
                };
                ExtendBlocks::One(padded_block::<20, 64>(c, d))
            }
            Alg::Sha256 => {
                let mut blocks = [[0u8; 64]; 2];
                if !fill(&mut blocks[0], cur, digest) {
                    return false;
                }
                blocks[1][0] = 0x80;
                blocks[1][56..].copy_from_slice(&512u64.to_be_bytes());
                ExtendBlocks::Two(blocks)
            }
            Alg::Sha384 | Alg::Sha512 => return hash(alg, data, out) && extend(alg, cur, digest),
        };
        let ext: &[[u8; 64]] = match &ext {
            ExtendBlocks::One(b) => std::slice::from_ref(b),
            ExtendBlocks::Two(b) => b,
        };
        let mut ext = ext.iter();
        if alg == Alg::Sha1 {
            let (mut hs, mut es) = (IV1, IV1);
            md_hash::<64, 8>(data, |b| match ext.next() {
                #[allow(
                    unsafe_code,
                    reason = "calling a #[target_feature] function; its features were detected"
                )]
                // SAFETY: `sha_available` returned true, so this CPU has every feature
                // `x86::compress1_x2` is compiled for (sha, sse2, ssse3, sse4.1).
                Some(e) => unsafe { x86::compress1_x2(&mut hs, b, &mut es, e) },
                None => sha1::block_api::compress(&mut hs, std::slice::from_ref(b)),
            });
            for e in ext {
                sha1::block_api::compress(&mut es, std::slice::from_ref(e));
            }
            put_be32(out, &hs);
            put_be32(cur, &es);
        } else {
            let (mut hs, mut es) = (IV256, IV256);
            md_hash::<64, 8>(data, |b| match ext.next() {
                #[allow(
                    unsafe_code,
                    reason = "calling a #[target_feature] function; its features were detected"
                )]
                // SAFETY: `sha_available` returned true, so this CPU has every feature
                // `x86::compress256_x2` is compiled for (sha, sse2, ssse3, sse4.1).
                Some(e) => unsafe { x86::compress256_x2(&mut hs, b, &mut es, e) },
                None => sha2::block_api::compress256(&mut hs, std::slice::from_ref(b)),
            });
            for e in ext {
                sha2::block_api::compress256(&mut es, std::slice::from_ref(e));
            }
            put_be32(out, &hs);
            put_be32(cur, &es);
        }
        return true;
    }
    hash(alg, data, out) && extend(alg, cur, digest)
}

/// [`hash_and_extend`] one job after the other, never the paired blocks: the reference the
/// tests compare it with.
pub fn hash_and_extend_portable(
    alg: Alg,
    data: &[u8],
    out: &mut [u8],
    cur: &mut [u8],
    digest: &[u8],
) -> bool {
    let n = alg.size();
    if out.len() != n || cur.len() != n || digest.len() != n {
        return false;
    }
    hash(alg, data, out) && extend(alg, cur, digest)
}

/// Whether [`hash_and_extend`] pairs blocks on this CPU: x86-64 with the SHA extensions and
/// SSE4.1 (detected once, then cached).
pub fn sha_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static SHA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SHA.get_or_init(|| {
            std::is_x86_feature_detected!("sha")
                && std::is_x86_feature_detected!("sse2")
                && std::is_x86_feature_detected!("ssse3")
                && std::is_x86_feature_detected!("sse4.1")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One PCR to extend: its current value and the event's digest for that bank.
pub type Pcr<'a, const N: usize> = (&'a mut [u8; N], &'a [u8; N]);

/// Extends one event's PCRs in up to three banks at once: SHA-1, SHA-256 and SHA-384, each
/// `cur = H(cur || digest)`. The result is the same as one [`extend`] per bank.
///
/// On x86-64 with the SHA extensions, AVX and BMI2 ([`stitched_available`]), an event with a
/// SHA-384 PCR is computed by one stitched kernel (a bank it lacks is hashed into scratch
/// space, under the SHA-384 rounds), and an event with SHA-1 and SHA-256 PCRs but no SHA-384
/// by another. Otherwise, bank by bank.
pub fn extend_event(
    sha1: Option<Pcr<'_, 20>>,
    sha256: Option<Pcr<'_, 32>>,
    sha384: Option<Pcr<'_, 48>>,
) {
    #[cfg(target_arch = "x86_64")]
    if stitched_available() {
        match (sha1, sha256, sha384) {
            (sha1, sha256, Some((c384, d384))) => {
                let (mut s1, mut s256) = ([0u8; 20], [0u8; 32]);
                let (c1, d1) = sha1.unwrap_or((&mut s1, &[0u8; 20]));
                let (c256, d256) = sha256.unwrap_or((&mut s256, &[0u8; 32]));
                #[allow(
                    unsafe_code,
                    reason = "calling a #[target_feature] function; its features were detected"
                )]
                // SAFETY: `stitched_available` returned true, so this CPU has every feature
                // `x86::extend3` is compiled for (sha, sse2, ssse3, sse4.1, avx, bmi2).
                unsafe {
                    x86::extend3(c1, d1, c256, d256, c384, d384);
                }
            }
            (Some((c1, d1)), Some((c256, d256)), None) => {
                #[allow(
                    unsafe_code,
                    reason = "calling a #[target_feature] function; its features were detected"
                )]
                // SAFETY: `stitched_available` returned true, so this CPU has every feature
                // `x86::extend2` is compiled for (sha, sse2, ssse3, sse4.1).
                unsafe {
                    x86::extend2(c1, d1, c256, d256);
                }
            }
            (sha1, sha256, None) => one_by_one(sha1, sha256, None),
        }
        return;
    }
    one_by_one(sha1, sha256, sha384);
}

/// [`extend_event`] bank by bank, with the block functions.
fn one_by_one(sha1: Option<Pcr<'_, 20>>, sha256: Option<Pcr<'_, 32>>, sha384: Option<Pcr<'_, 48>>) {
    if let Some((c, d)) = sha1 {
        extend(Alg::Sha1, c, d);
    }
    if let Some((c, d)) = sha256 {
        extend(Alg::Sha256, c, d);
    }
    if let Some((c, d)) = sha384 {
        extend(Alg::Sha384, c, d);
    }
}

/// Extends with the block functions only, never the stitched kernels: the reference the tests
/// and benchmarks compare [`extend_event`] with.
pub fn extend_event_portable(
    sha1: Option<Pcr<'_, 20>>,
    sha256: Option<Pcr<'_, 32>>,
    sha384: Option<Pcr<'_, 48>>,
) {
    one_by_one(sha1, sha256, sha384);
}

/// Whether [`extend_event`] uses the stitched kernel on this CPU (detected once, then cached).
pub fn stitched_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static STITCHED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *STITCHED.get_or_init(|| {
            std::is_x86_feature_detected!("sha")
                && std::is_x86_feature_detected!("sse2")
                && std::is_x86_feature_detected!("ssse3")
                && std::is_x86_feature_detected!("sse4.1")
                && std::is_x86_feature_detected!("avx")
                && std::is_x86_feature_detected!("bmi2")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_schedule_is_the_sha256_schedule_of_the_padding_block() {
        // The stitched kernel's constant second block must equal what the block function
        // computes: checked end to end in tests/agreement.rs; here the first words directly.
        assert_eq!(
            consts::KW256_PAD[0],
            0x8000_0000u32.wrapping_add(0x428a_2f98)
        );
        assert_eq!(consts::KW256_PAD[15], 512u32.wrapping_add(0xc19b_f174));
        assert_eq!(consts::KW256_PAD[1], 0x7137_4491);
    }
}
