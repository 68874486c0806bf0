//! PCR extend at block level: `H(old || new)` where both halves are one digest long.
//!
//! The message of an extend always has the same length for a bank, so its padding is known in
//! advance: SHA-1 and SHA-384 extends are one compression of one block, SHA-256 and SHA-512 two
//! (the second a constant padding block). Calling the block functions of the RustCrypto `sha1`
//! and `sha2` crates directly, on the stack, avoids the buffering and finalisation of a general
//! hasher. Replay spends most of its time here (see docs/PERFORMANCE.md); the oracle tests
//! check every bank against `tpm2_eventlog`.

use nodetrust_tpm_wire::HashAlg;

const SHA1_IV: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
const SHA384_IV: [u64; 8] = [
    0xcbbb_9d5d_c105_9ed8,
    0x629a_292a_367c_d507,
    0x9159_015a_3070_dd17,
    0x152f_ecd8_f70e_5939,
    0x6733_2667_ffc0_0b31,
    0x8eb4_4a87_6858_1511,
    0xdb0c_2e0d_64f9_8fa7,
    0x47b5_481d_befa_4fa4,
];
const SHA512_IV: [u64; 8] = [
    0x6a09_e667_f3bc_c908,
    0xbb67_ae85_84ca_a73b,
    0x3c6e_f372_fe94_f82b,
    0xa54f_f53a_5f1d_36f1,
    0x510e_527f_ade6_82d1,
    0x9b05_688c_2b3e_6c1f,
    0x1f83_d9ab_fb41_bd6b,
    0x5be0_cd19_137e_2179,
];

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

fn put_be32(out: &mut [u8], words: &[u32]) {
    for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
}

fn put_be64(out: &mut [u8], words: &[u64]) {
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
}

/// `cur = H(cur || digest)`; `cur` and `digest` must both be `alg.size()` bytes (otherwise
/// nothing happens and `false` is returned).
pub(crate) fn extend(alg: HashAlg, cur: &mut [u8], digest: &[u8]) -> bool {
    let n = alg.size();
    if cur.len() != n || digest.len() != n {
        return false;
    }
    let bits = (2 * n * 8) as u64;
    match alg {
        HashAlg::Sha1 => {
            // 40 bytes + 0x80 + zeros + 64-bit length: one block.
            let mut block = [0u8; 64];
            if !fill(&mut block, cur, digest) {
                return false;
            }
            block[40] = 0x80;
            block[56..].copy_from_slice(&bits.to_be_bytes());
            let mut state = SHA1_IV;
            sha1::block_api::compress(&mut state, &[block]);
            put_be32(cur, &state);
        }
        HashAlg::Sha256 => {
            // 64 bytes: a full block, then a padding block.
            let mut blocks = [[0u8; 64]; 2];
            if !fill(&mut blocks[0], cur, digest) {
                return false;
            }
            blocks[1][0] = 0x80;
            blocks[1][56..].copy_from_slice(&bits.to_be_bytes());
            let mut state = SHA256_IV;
            sha2::block_api::compress256(&mut state, &blocks);
            put_be32(cur, &state);
        }
        HashAlg::Sha384 => {
            // 96 bytes + 0x80 + zeros + 128-bit length: one block.
            let mut block = [0u8; 128];
            if !fill(&mut block, cur, digest) {
                return false;
            }
            block[96] = 0x80;
            block[120..].copy_from_slice(&bits.to_be_bytes());
            let mut state = SHA384_IV;
            sha2::block_api::compress512(&mut state, &[block]);
            put_be64(cur, &state);
        }
        HashAlg::Sha512 => {
            let mut blocks = [[0u8; 128]; 2];
            if !fill(&mut blocks[0], cur, digest) {
                return false;
            }
            blocks[1][0] = 0x80;
            blocks[1][120..].copy_from_slice(&bits.to_be_bytes());
            let mut state = SHA512_IV;
            sha2::block_api::compress512(&mut state, &blocks);
            put_be64(cur, &state);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_level_extend_equals_the_hash_of_the_concatenation() {
        for alg in HashAlg::ALL {
            for seed in 0u8..4 {
                let old: Vec<u8> = (0..alg.size())
                    .map(|i| (i as u8).wrapping_mul(seed + 3))
                    .collect();
                let new: Vec<u8> = (0..alg.size())
                    .map(|i| (i as u8) ^ seed.wrapping_mul(91))
                    .collect();
                let mut cur = old.clone();
                assert!(extend(alg, &mut cur, &new));
                assert_eq!(cur, alg.extend(&old, &new), "{alg}");
            }
            let mut short = vec![0u8; alg.size() - 1];
            assert!(!extend(alg, &mut short, &vec![0u8; alg.size()]));
        }
    }
}
