//! The stitched x86-64 kernels: an event's SHA-384, SHA-256 and SHA-1 extends in a single
//! instruction stream ([`extend3`]), and its SHA-256 and SHA-1 extends ([`extend2`]).
//!
//! # Why stitch
//! A SHA-512 block (one SHA-384 extend) keeps the integer units busy: 22 scalar operations per
//! round, 80 rounds. SHA-1 and SHA-256 with the SHA extensions are bound by the latency of
//! `sha1rnds4` / `sha256rnds2`, which run on the vector units and leave the integer units
//! idle. Called one after the other, their times add up. Interleaved at a fine grain (per two
//! SHA-512 rounds, one SHA-256 four-round step and most of a SHA-1 one), the out-of-order core
//! runs them side by side and the SHA-1 and SHA-256 work mostly disappears under the SHA-512
//! rounds. A coarse interleave would not do: the reorder buffer (a few hundred micro-operations)
//! cannot look far enough ahead to overlap a whole SHA-256 block with SHA-512 rounds. The
//! compiler would undo the interleave if it could: [`order`] stops it.
//!
//! The SHA-512 message schedule is computed two words at a time in SSE registers, interleaved
//! with the rounds, as in the `sha2` crate's AVX backend. An extend's second SHA-256 block is the
//! padding of a 64-byte message: its schedule is a constant ([`KW256_PAD`]), so that block costs
//! only its `sha256rnds2` chain.
//!
//! Every function here is safe; it needs the CPU features named in its `target_feature`
//! attribute, which [`crate::stitched_available`] checks before the calls into the kernels.
//!
//! Indices into the small state arrays below are compile-time constants (const generic step
//! numbers modulo the array length), so they cannot be out of bounds.
#![allow(
    clippy::indexing_slicing,
    reason = "every index is a const generic step number modulo the fixed array length"
)]

use core::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_add_epi64, _mm_alignr_epi8, _mm_cvtsi128_si64, _mm_extract_epi32,
    _mm_extract_epi64, _mm_set_epi32, _mm_set_epi64x, _mm_sha1msg1_epu32, _mm_sha1msg2_epu32,
    _mm_sha1nexte_epu32, _mm_sha1rnds4_epu32, _mm_sha256msg1_epu32, _mm_sha256msg2_epu32,
    _mm_sha256rnds2_epu32, _mm_shuffle_epi32, _mm_slli_epi64, _mm_srli_epi64, _mm_xor_si128,
};

use crate::consts::{IV1, IV256, IV384, K256, K512, KW256_PAD};
use crate::words::{be32, be64, put_be32, put_be64};

// ---------------------------------------------------------------------------------------------
// SHA-512 (for the SHA-384 bank)

/// The SHA-512 part: working state and message window.
struct Sha512 {
    s: [u64; 8],
    /// Message words in pairs: `W[2t..2t+16]` before double round `t` (`t` < 32); from then on
    /// the last 16 words, `W[64..80]`.
    x: [__m128i; 8],
    /// `b ^ c` of the current state.
    bc: u64,
}

#[inline]
#[target_feature(enable = "sse2")]
fn k512_pair(i: usize) -> __m128i {
    let lo = K512.get(i).copied().unwrap_or(0);
    let hi = K512.get(i + 1).copied().unwrap_or(0);
    _mm_set_epi64x(hi as i64, lo as i64)
}

/// `ror(v, n)` in both 64-bit lanes (SSE2 has no rotate).
macro_rules! ror64 {
    ($v:expr, $n:literal) => {
        _mm_xor_si128(_mm_srli_epi64::<$n>($v), _mm_slli_epi64::<{ 64 - $n }>($v))
    };
}

/// Computes the next two message words, `W[t+16]` and `W[t+17]`, and shifts the window by two.
#[inline]
#[target_feature(enable = "sse2,ssse3")]
fn schedule512(x: &mut [__m128i; 8]) {
    // (W[t+1], W[t+2]) and (W[t+9], W[t+10]).
    let w1 = _mm_alignr_epi8::<8>(x[1], x[0]);
    let w9 = _mm_alignr_epi8::<8>(x[5], x[4]);
    let s0 = _mm_xor_si128(
        _mm_xor_si128(ror64!(w1, 1), ror64!(w1, 8)),
        _mm_srli_epi64::<7>(w1),
    );
    let w14 = x[7];
    let s1 = _mm_xor_si128(
        _mm_xor_si128(ror64!(w14, 19), ror64!(w14, 61)),
        _mm_srli_epi64::<6>(w14),
    );
    let new = _mm_add_epi64(_mm_add_epi64(x[0], w9), _mm_add_epi64(s0, s1));
    *x = [x[1], x[2], x[3], x[4], x[5], x[6], x[7], new];
}

#[inline(always)]
fn round512(s: &mut [u64; 8], bc: &mut u64, kw: u64) {
    let [a, b, c, d, e, f, g, h] = *s;
    let big_s1 = e.rotate_right(14) ^ e.rotate_right(18) ^ e.rotate_right(41);
    let ch = ((f ^ g) & e) ^ g;
    let t1 = h.wrapping_add(kw).wrapping_add(ch).wrapping_add(big_s1);
    let big_s0 = a.rotate_right(28) ^ a.rotate_right(34) ^ a.rotate_right(39);
    // Maj(a, b, c) = ((a ^ b) & (b ^ c)) ^ b, where b ^ c is the previous round's a ^ b.
    let ab = a ^ b;
    let maj = (ab & *bc) ^ b;
    *bc = ab;
    *s = [
        t1.wrapping_add(big_s0).wrapping_add(maj),
        a,
        b,
        c,
        d.wrapping_add(t1),
        e,
        f,
        g,
    ];
}

// ---------------------------------------------------------------------------------------------
// SHA-256

struct Sha256 {
    abef: __m128i,
    cdgh: __m128i,
    /// The state after the first block, added back after the second.
    mid: [__m128i; 2],
    /// The first block's message, four words a vector.
    w: [__m128i; 4],
}

#[inline]
#[target_feature(enable = "sha,sse2")]
fn rounds256(st: &mut Sha256, kw: __m128i) {
    st.cdgh = _mm_sha256rnds2_epu32(st.cdgh, st.abef, kw);
    st.abef = _mm_sha256rnds2_epu32(st.abef, st.cdgh, _mm_shuffle_epi32::<0x0E>(kw));
}

/// Four-round constants (or schedule plus constants) starting at index `i`, lane 0 first.
#[inline]
#[target_feature(enable = "sse2")]
fn quad(table: &[u32; 64], i: usize) -> __m128i {
    let at = |j: usize| table.get(i + j).copied().unwrap_or(0) as i32;
    _mm_set_epi32(at(3), at(2), at(1), at(0))
}

/// SHA-256 four-round step `R` of 32: steps 0–15 are the block `cur || digest`, steps 16–31
/// the constant padding block.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn step256<const R: usize>(st: &mut Sha256) {
    if R < 16 {
        let i = R % 4;
        if R >= 4 {
            let t1 = _mm_sha256msg1_epu32(st.w[i], st.w[(i + 1) % 4]);
            let t2 = _mm_alignr_epi8::<4>(st.w[(i + 3) % 4], st.w[(i + 2) % 4]);
            st.w[i] = _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), st.w[(i + 3) % 4]);
        }
        let kw = _mm_add_epi32(st.w[i], quad(&K256, 4 * R));
        rounds256(st, kw);
        if R == 15 {
            let [abef0, cdgh0] = sha256_iv();
            st.abef = _mm_add_epi32(st.abef, abef0);
            st.cdgh = _mm_add_epi32(st.cdgh, cdgh0);
            st.mid = [st.abef, st.cdgh];
        }
    } else {
        rounds256(st, quad(&KW256_PAD, 4 * (R - 16)));
        if R == 31 {
            st.abef = _mm_add_epi32(st.abef, st.mid[0]);
            st.cdgh = _mm_add_epi32(st.cdgh, st.mid[1]);
        }
    }
}

/// The initial state in the lane order `sha256rnds2` uses: (a, b, e, f) and (c, d, g, h), the
/// first named in the highest lane.
#[inline]
#[target_feature(enable = "sse2")]
fn sha256_iv() -> [__m128i; 2] {
    let [a, b, c, d, e, f, g, h] = IV256.map(|v| v as i32);
    [_mm_set_epi32(a, b, e, f), _mm_set_epi32(c, d, g, h)]
}

// ---------------------------------------------------------------------------------------------
// SHA-1

struct Sha1 {
    /// Alternating round states.
    h: [__m128i; 2],
    /// Message window, five vectors of four words.
    w: [__m128i; 5],
    abcd: __m128i,
    e: __m128i,
}

#[inline]
#[target_feature(enable = "sha,sse2")]
fn rnds4<const F: usize>(abcd: __m128i, e_and_w: __m128i) -> __m128i {
    match F {
        0 => _mm_sha1rnds4_epu32::<0>(abcd, e_and_w),
        1 => _mm_sha1rnds4_epu32::<1>(abcd, e_and_w),
        2 => _mm_sha1rnds4_epu32::<2>(abcd, e_and_w),
        _ => _mm_sha1rnds4_epu32::<3>(abcd, e_and_w),
    }
}

/// SHA-1 four-round step `K` of 20.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn step1<const K: usize, const F: usize>(st: &mut Sha1) {
    if K == 0 {
        st.h[1] = rnds4::<0>(st.h[0], _mm_add_epi32(st.e, st.w[0]));
        return;
    }
    if K >= 4 {
        let m = _mm_sha1msg1_epu32(st.w[(K + 1) % 5], st.w[(K + 2) % 5]);
        st.w[K % 5] = _mm_sha1msg2_epu32(_mm_xor_si128(m, st.w[(K + 3) % 5]), st.w[(K + 4) % 5]);
    }
    let (src, dst) = (K % 2, (K + 1) % 2);
    st.h[dst] = rnds4::<F>(st.h[src], _mm_sha1nexte_epu32(st.h[dst], st.w[K % 5]));
    if K == 19 {
        st.abcd = _mm_add_epi32(st.abcd, st.h[0]);
        st.e = _mm_sha1nexte_epu32(st.h[1], st.e);
    }
}

// ---------------------------------------------------------------------------------------------
// Message loading and output

impl Sha512 {
    /// The block `cur || digest || 0x80 … || 768 bits` of a SHA-384 extend.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn new(cur: &[u8; 48], digest: &[u8; 48]) -> Self {
        let c: [u64; 6] = be64(cur);
        let d: [u64; 6] = be64(digest);
        // cur (6 words), digest (6 words), then the padding: 0x80 …, the length 768 bits.
        #[rustfmt::skip]
        let m = [c[0], c[1], c[2], c[3], c[4], c[5], d[0], d[1], d[2], d[3], d[4], d[5], 1 << 63, 0, 0, 768];
        let x: [__m128i; 8] =
            core::array::from_fn(|i| _mm_set_epi64x(m[2 * i + 1] as i64, m[2 * i] as i64));
        Self {
            s: IV384,
            x,
            bc: IV384[1] ^ IV384[2],
        }
    }

    /// The SHA-384 value: the first six words of IV + state.
    fn finish(&self, out: &mut [u8; 48]) {
        let mut words = [0u64; 6];
        for (o, (iv, s)) in words.iter_mut().zip(IV384.iter().zip(self.s)) {
            *o = iv.wrapping_add(s);
        }
        put_be64(out, &words);
    }
}

impl Sha256 {
    /// The first block `cur || digest`; lane 0 of each vector holds the first of its words.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn new(cur: &[u8; 32], digest: &[u8; 32]) -> Self {
        let c: [u32; 8] = be32(cur);
        let d: [u32; 8] = be32(digest);
        let set4 = |w: &[u32; 8], i: usize| {
            _mm_set_epi32(
                w[i + 3] as i32,
                w[i + 2] as i32,
                w[i + 1] as i32,
                w[i] as i32,
            )
        };
        let [abef, cdgh] = sha256_iv();
        Self {
            abef,
            cdgh,
            mid: [abef, cdgh],
            w: [set4(&c, 0), set4(&c, 4), set4(&d, 0), set4(&d, 4)],
        }
    }

    /// The value, from (a, b, e, f) and (c, d, g, h), highest lane first.
    #[inline]
    #[target_feature(enable = "sse4.1")]
    fn finish(&self, out: &mut [u8; 32]) {
        let (x, y) = (self.abef, self.cdgh);
        let words = [
            _mm_extract_epi32::<3>(x),
            _mm_extract_epi32::<2>(x),
            _mm_extract_epi32::<3>(y),
            _mm_extract_epi32::<2>(y),
            _mm_extract_epi32::<1>(x),
            _mm_extract_epi32::<0>(x),
            _mm_extract_epi32::<1>(y),
            _mm_extract_epi32::<0>(y),
        ]
        .map(|v| v as u32);
        put_be32(out, &words);
    }
}

impl Sha1 {
    /// The block `cur || digest || 0x80 … || 320 bits`; the first word of each vector in the
    /// highest lane.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn new(cur: &[u8; 20], digest: &[u8; 20]) -> Self {
        let c: [u32; 5] = be32(cur);
        let d: [u32; 5] = be32(digest);
        // cur (5 words), digest (5 words), then the padding: 0x80 …, the length 320 bits.
        #[rustfmt::skip]
        let m = [c[0], c[1], c[2], c[3], c[4], d[0], d[1], d[2], d[3], d[4], 0x8000_0000, 0, 0, 0, 0, 320];
        let w: [__m128i; 5] = core::array::from_fn(|i| match i {
            0..4 => _mm_set_epi32(
                m[4 * i] as i32,
                m[4 * i + 1] as i32,
                m[4 * i + 2] as i32,
                m[4 * i + 3] as i32,
            ),
            _ => _mm_set_epi32(0, 0, 0, 0),
        });
        let [a, b, c, d, e] = IV1.map(|v| v as i32);
        let abcd = _mm_set_epi32(a, b, c, d);
        let e = _mm_set_epi32(e, 0, 0, 0);
        Self {
            h: [abcd, e],
            w,
            abcd,
            e,
        }
    }

    /// The value: (a, b, c, d) highest lane first, e in the highest lane.
    #[inline]
    #[target_feature(enable = "sse4.1")]
    fn finish(&self, out: &mut [u8; 20]) {
        let x = self.abcd;
        let words = [
            _mm_extract_epi32::<3>(x),
            _mm_extract_epi32::<2>(x),
            _mm_extract_epi32::<1>(x),
            _mm_extract_epi32::<0>(x),
            _mm_extract_epi32::<3>(self.e),
        ]
        .map(|v| v as u32);
        put_be32(out, &words);
    }
}

// ---------------------------------------------------------------------------------------------
// The kernels

/// Keeps the compiler from moving the SHA-1 and SHA-256 steps away from the rounds they were
/// written next to. Without it LLVM sinks all of them after the last SHA-512 round (they are
/// independent and their results are used only at the end), which undoes the stitching.
///
/// The empty `asm!` names `a` and `v` as inputs and outputs, so for the compiler what follows
/// depends on both. It emits no instruction, touches no memory and changes no register: at run
/// time there is no dependency, only the instruction order.
#[inline(always)]
fn order(a: &mut u64, v: &mut __m128i) {
    #[allow(
        unsafe_code,
        reason = "an empty asm block as a compiler scheduling barrier; it emits no instruction"
    )]
    // SAFETY: the template is a comment, so nothing runs; `a` and `v` stay unchanged in their
    // registers. `pure, nomem, nostack, preserves_flags` say exactly that.
    unsafe {
        core::arch::asm!(
            "/* {0} {1} */",
            inout(reg) * a,
            inout(xmm_reg) * v,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
}

/// Two SHA-512 rounds `2t`, `2t + 1` with `t = 8 i + J`, scheduling words `16 + 2t` and
/// `17 + 2t` while they run when `SCHED` (`t` < 32).
///
/// `W + K` is added just before use rather than kept for the next 16 rounds (as the `sha2`
/// crate does): eight fewer live vector registers, which the SHA-1 and SHA-256 state needs.
#[inline]
#[target_feature(enable = "sse2,ssse3,sse4.1,bmi2")]
fn double_round512_rt<const J: usize, const SCHED: bool>(st: &mut Sha512, i: usize) {
    let t = 8 * i + J;
    let w = if SCHED { st.x[0] } else { st.x[J] };
    let kw = _mm_add_epi64(w, k512_pair(2 * t));
    if SCHED {
        schedule512(&mut st.x);
    }
    round512(&mut st.s, &mut st.bc, _mm_cvtsi128_si64(kw) as u64);
    round512(&mut st.s, &mut st.bc, _mm_extract_epi64::<1>(kw) as u64);
}

/// SHA-256 step `8 i + J`.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn step256_rt<const J: usize>(st: &mut Sha256, i: usize) {
    let r = 8 * i + J;
    if i < 2 {
        let w = J % 4;
        if i > 0 || J >= 4 {
            let t1 = _mm_sha256msg1_epu32(st.w[w], st.w[(w + 1) % 4]);
            let t2 = _mm_alignr_epi8::<4>(st.w[(w + 3) % 4], st.w[(w + 2) % 4]);
            st.w[w] = _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), st.w[(w + 3) % 4]);
        }
        rounds256(st, _mm_add_epi32(st.w[w], quad(&K256, 4 * r)));
    } else {
        rounds256(st, quad(&KW256_PAD, 4 * (r - 16)));
    }
}

/// SHA-1 step `5 i + J`; `h` is swapped after every iteration, so `J` alone says which of the
/// two states is read.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn step1_rt<const J: usize>(st: &mut Sha1, i: usize) {
    if i == 0 && J == 0 {
        st.h[1] = rnds4::<0>(st.h[0], _mm_add_epi32(st.e, st.w[0]));
        return;
    }
    if i > 0 || J == 4 {
        let m = _mm_sha1msg1_epu32(st.w[(J + 1) % 5], st.w[(J + 2) % 5]);
        st.w[J] = _mm_sha1msg2_epu32(_mm_xor_si128(m, st.w[(J + 3) % 5]), st.w[(J + 4) % 5]);
    }
    let (src, dst) = (J % 2, (J + 1) % 2);
    let e_w = _mm_sha1nexte_epu32(st.h[dst], st.w[J]);
    st.h[dst] = match i {
        0 => rnds4::<0>(st.h[src], e_w),
        1 => rnds4::<1>(st.h[src], e_w),
        2 => rnds4::<2>(st.h[src], e_w),
        _ => rnds4::<3>(st.h[src], e_w),
    };
}

/// Two SHA-512 rounds, one SHA-256 step and, when `K1 < 5`, one SHA-1 step, at position `J`
/// of iteration `i`.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1,bmi2")]
fn step3_rt<const J: usize, const K1: usize>(
    s512: &mut Sha512,
    s256: &mut Sha256,
    s1: &mut Sha1,
    i: usize,
) {
    double_round512_rt::<J, true>(s512, i);
    step256_rt::<J>(s256, i);
    order(&mut s512.s[4], &mut s256.abef);
    if K1 < 5 {
        step1_rt::<K1>(s1, i);
        order(&mut s512.s[0], &mut s1.h[(K1 + 1) % 2]);
    }
}

/// Extends three PCRs at once: `c1 = SHA1(c1 || d1)`, `c256 = SHA256(c256 || d256)` and
/// `c384 = SHA384(c384 || d384)`.
///
/// Four iterations of 16 SHA-512 rounds, each with 8 SHA-256 steps (block 1, then the
/// constant padding block) and 5 SHA-1 steps (round function `i`), then the last 16 SHA-512
/// rounds. A loop rather than straight-line code: fully unrolled, the kernel is about 3,400
/// instructions (17 KiB) and decoding them, not executing them, set its speed; rolled it runs
/// from the micro-op cache, about 10 % faster on the GCE log's replay.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1,avx,bmi2")]
pub(crate) fn extend3(
    c1: &mut [u8; 20],
    d1: &[u8; 20],
    c256: &mut [u8; 32],
    d256: &[u8; 32],
    c384: &mut [u8; 48],
    d384: &[u8; 48],
) {
    let mut s512 = Sha512::new(c384, d384);
    let mut s256 = Sha256::new(c256, d256);
    let mut s1 = Sha1::new(c1, d1);
    for i in 0..4 {
        step3_rt::<0, 0>(&mut s512, &mut s256, &mut s1, i);
        step3_rt::<1, 99>(&mut s512, &mut s256, &mut s1, i);
        step3_rt::<2, 1>(&mut s512, &mut s256, &mut s1, i);
        step3_rt::<3, 2>(&mut s512, &mut s256, &mut s1, i);
        step3_rt::<4, 99>(&mut s512, &mut s256, &mut s1, i);
        step3_rt::<5, 3>(&mut s512, &mut s256, &mut s1, i);
        step3_rt::<6, 4>(&mut s512, &mut s256, &mut s1, i);
        step3_rt::<7, 99>(&mut s512, &mut s256, &mut s1, i);
        if i == 1 {
            let [abef0, cdgh0] = sha256_iv();
            s256.abef = _mm_add_epi32(s256.abef, abef0);
            s256.cdgh = _mm_add_epi32(s256.cdgh, cdgh0);
            s256.mid = [s256.abef, s256.cdgh];
        }
        s1.h = [s1.h[1], s1.h[0]];
    }
    double_round512_rt::<0, false>(&mut s512, 4);
    double_round512_rt::<1, false>(&mut s512, 4);
    double_round512_rt::<2, false>(&mut s512, 4);
    double_round512_rt::<3, false>(&mut s512, 4);
    double_round512_rt::<4, false>(&mut s512, 4);
    double_round512_rt::<5, false>(&mut s512, 4);
    double_round512_rt::<6, false>(&mut s512, 4);
    double_round512_rt::<7, false>(&mut s512, 4);
    s256.abef = _mm_add_epi32(s256.abef, s256.mid[0]);
    s256.cdgh = _mm_add_epi32(s256.cdgh, s256.mid[1]);
    s1.abcd = _mm_add_epi32(s1.abcd, s1.h[0]);
    s1.e = _mm_sha1nexte_epu32(s1.h[1], s1.e);
    s512.finish(c384);
    s256.finish(c256);
    s1.finish(c1);
}

/// One SHA-256 step and, when `K1 < 20`, SHA-1 step `K1` (round function `F1`).
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn step2<const T: usize, const K1: usize, const F1: usize>(s256: &mut Sha256, s1: &mut Sha1) {
    step256::<T>(s256);
    if K1 < 20 {
        step1::<K1, F1>(s1);
    }
}

/// Extends two PCRs at once: `c1 = SHA1(c1 || d1)` and `c256 = SHA256(c256 || d256)`. Both
/// are bound by the latency of their SHA instructions. The compiler places the SHA-1 block
/// after the SHA-256 blocks, which is close enough for the out-of-order core to overlap them;
/// forcing a finer interleave with [`order`]-style barriers measured slower here.
///
/// Compiled without AVX: the SHA instructions have only legacy SSE encodings, and with AVX
/// enabled the compiler stored a 32-byte state with a 256-bit `vmovdqu` early in the kernel,
/// so every SHA instruction after it ran with the upper halves of the vector registers dirty.
/// On the reference machine that made each call about 50 times slower (6.8 µs instead of
/// 135 ns, `examples/extend_rate.rs`).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(crate) fn extend2(c1: &mut [u8; 20], d1: &[u8; 20], c256: &mut [u8; 32], d256: &[u8; 32]) {
    let mut s256 = Sha256::new(c256, d256);
    let mut s1 = Sha1::new(c1, d1);
    macro_rules! steps {
        ($(($t:literal, $k:literal)),* $(,)?) => {
            $( step2::<$t, $k, { ($k / 5) % 4 }>(&mut s256, &mut s1); )*
        };
    }
    steps!(
        (0, 0),
        (1, 1),
        (2, 99),
        (3, 2),
        (4, 3),
        (5, 99),
        (6, 4),
        (7, 5),
        (8, 99),
        (9, 6),
        (10, 7),
        (11, 99),
        (12, 8),
        (13, 9),
        (14, 99),
        (15, 10),
        (16, 11),
        (17, 99),
        (18, 12),
        (19, 13),
        (20, 99),
        (21, 14),
        (22, 15),
        (23, 99),
        (24, 16),
        (25, 17),
        (26, 99),
        (27, 18),
        (28, 19),
        (29, 99),
        (30, 99),
        (31, 99),
    );
    s256.finish(c256);
    s1.finish(c1);
}

// ---------------------------------------------------------------------------------------------
// Two independent blocks at once

/// A SHA-256 block from any state: the state in `sha256rnds2` lane order, the message four
/// words a vector (lane 0 first), and the state before the block, added back after it.
struct Block256 {
    abef: __m128i,
    cdgh: __m128i,
    w: [__m128i; 4],
    saved: [__m128i; 2],
}

impl Block256 {
    #[inline]
    #[target_feature(enable = "sse2")]
    fn new(state: &[u32; 8], block: &[u8; 64]) -> Self {
        let [a, b, c, d, e, f, g, h] = state.map(|v| v as i32);
        let m: [u32; 16] = be32(block);
        let set4 = |i: usize| {
            _mm_set_epi32(
                m[i + 3] as i32,
                m[i + 2] as i32,
                m[i + 1] as i32,
                m[i] as i32,
            )
        };
        let abef = _mm_set_epi32(a, b, e, f);
        let cdgh = _mm_set_epi32(c, d, g, h);
        Self {
            abef,
            cdgh,
            w: [set4(0), set4(4), set4(8), set4(12)],
            saved: [abef, cdgh],
        }
    }

    /// Four-round step `R` of 16 (the message schedule from step 4 on).
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn step<const R: usize>(&mut self) {
        let i = R % 4;
        if R >= 4 {
            let t1 = _mm_sha256msg1_epu32(self.w[i], self.w[(i + 1) % 4]);
            let t2 = _mm_alignr_epi8::<4>(self.w[(i + 3) % 4], self.w[(i + 2) % 4]);
            self.w[i] = _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), self.w[(i + 3) % 4]);
        }
        let kw = _mm_add_epi32(self.w[i], quad(&K256, 4 * R));
        self.cdgh = _mm_sha256rnds2_epu32(self.cdgh, self.abef, kw);
        self.abef = _mm_sha256rnds2_epu32(self.abef, self.cdgh, _mm_shuffle_epi32::<0x0E>(kw));
    }

    /// The state after the block, into `out`.
    #[inline]
    #[target_feature(enable = "sse4.1")]
    fn finish(&self, out: &mut [u32; 8]) {
        let x = _mm_add_epi32(self.abef, self.saved[0]);
        let y = _mm_add_epi32(self.cdgh, self.saved[1]);
        *out = [
            _mm_extract_epi32::<3>(x),
            _mm_extract_epi32::<2>(x),
            _mm_extract_epi32::<3>(y),
            _mm_extract_epi32::<2>(y),
            _mm_extract_epi32::<1>(x),
            _mm_extract_epi32::<0>(x),
            _mm_extract_epi32::<1>(y),
            _mm_extract_epi32::<0>(y),
        ]
        .map(|v| v as u32);
    }
}

/// Compresses one block into each of two SHA-256 states. A block is a chain of 32
/// `sha256rnds2`, each waiting for the one before; the two chains are independent, so written
/// step by step side by side they run in each other's latency.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(crate) fn compress256_x2(s1: &mut [u32; 8], b1: &[u8; 64], s2: &mut [u32; 8], b2: &[u8; 64]) {
    let mut x = Block256::new(s1, b1);
    let mut y = Block256::new(s2, b2);
    macro_rules! steps {
        ($($r:literal)*) => { $( x.step::<$r>(); y.step::<$r>(); )* };
    }
    steps!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    x.finish(s1);
    y.finish(s2);
}

impl Sha1 {
    /// A block from any state; the first word of each vector in the highest lane.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn from_block(state: &[u32; 5], block: &[u8; 64]) -> Self {
        let m: [u32; 16] = be32(block);
        let w: [__m128i; 5] = core::array::from_fn(|i| match i {
            0..4 => _mm_set_epi32(
                m[4 * i] as i32,
                m[4 * i + 1] as i32,
                m[4 * i + 2] as i32,
                m[4 * i + 3] as i32,
            ),
            _ => _mm_set_epi32(0, 0, 0, 0),
        });
        let [a, b, c, d, e] = state.map(|v| v as i32);
        let abcd = _mm_set_epi32(a, b, c, d);
        let e = _mm_set_epi32(e, 0, 0, 0);
        Self {
            h: [abcd, e],
            w,
            abcd,
            e,
        }
    }

    /// The state after the block (steps 0 to 19 done), into `out`.
    #[inline]
    #[target_feature(enable = "sse4.1")]
    fn state(&self, out: &mut [u32; 5]) {
        let x = self.abcd;
        *out = [
            _mm_extract_epi32::<3>(x),
            _mm_extract_epi32::<2>(x),
            _mm_extract_epi32::<1>(x),
            _mm_extract_epi32::<0>(x),
            _mm_extract_epi32::<3>(self.e),
        ]
        .map(|v| v as u32);
    }
}

/// Compresses one block into each of two SHA-1 states, the two `sha1rnds4` chains side by
/// side (see [`compress256_x2`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(crate) fn compress1_x2(s1: &mut [u32; 5], b1: &[u8; 64], s2: &mut [u32; 5], b2: &[u8; 64]) {
    let mut x = Sha1::from_block(s1, b1);
    let mut y = Sha1::from_block(s2, b2);
    macro_rules! steps {
        ($(($k:literal, $f:literal))*) => { $( step1::<$k, $f>(&mut x); step1::<$k, $f>(&mut y); )* };
    }
    steps!(
        (0, 0)(1, 0)(2, 0)(3, 0)(4, 0)(5, 1)(6, 1)(7, 1)(8, 1)(9, 1)(10, 2)(11, 2)(12, 2)(13, 2)(
            14, 2
        )(15, 3)(16, 3)(17, 3)(18, 3)(19, 3)
    );
    x.state(s1);
    y.state(s2);
}
