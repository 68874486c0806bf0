//! Big-endian words of byte strings, and back.

/// `N` bytes as big-endian `u32` words (`N` = 4 `W`; extra bytes or words are ignored).
pub(crate) fn be32<const N: usize, const W: usize>(bytes: &[u8; N]) -> [u32; W] {
    let mut out = [0u32; W];
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        let mut b = [0u8; 4];
        b.copy_from_slice(c);
        *o = u32::from_be_bytes(b);
    }
    out
}

/// `N` bytes as big-endian `u64` words (`N` = 8 `W`; extra bytes or words are ignored).
pub(crate) fn be64<const N: usize, const W: usize>(bytes: &[u8; N]) -> [u64; W] {
    let mut out = [0u64; W];
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        *o = u64::from_be_bytes(b);
    }
    out
}

/// Writes `words` big-endian from the start of `out`, as many as fit.
pub(crate) fn put_be32(out: &mut [u8], words: &[u32]) {
    for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
}

/// Writes `words` big-endian from the start of `out`, as many as fit.
pub(crate) fn put_be64(out: &mut [u8], words: &[u64]) {
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
}

/// The one block of an extend whose message fits with its padding (SHA-1: 40 bytes in 64,
/// SHA-384: 96 bytes in 128): `cur || digest || 0x80 || zeros || length in bits`, the length
/// as the block's last 8 bytes (the rest of a SHA-512 length field is zero).
pub(crate) fn padded_block<const N: usize, const B: usize>(
    cur: &[u8; N],
    digest: &[u8; N],
) -> [u8; B] {
    const {
        assert!(
            2 * N + 9 <= B,
            "the message and its padding must fit in one block"
        )
    };
    let mut block = [0u8; B];
    if let Some(dst) = block.get_mut(..N) {
        dst.copy_from_slice(cur);
    }
    if let Some(dst) = block.get_mut(N..2 * N) {
        dst.copy_from_slice(digest);
    }
    if let Some(b) = block.get_mut(2 * N) {
        *b = 0x80;
    }
    if let Some(len) = block.get_mut(B - 8..) {
        len.copy_from_slice(&((2 * N * 8) as u64).to_be_bytes());
    }
    block
}
