//! PCR extend for replay, through `nodetrust-extend` (block-level extends; on x86-64 with the
//! SHA extensions an event's SHA-1, SHA-256 and SHA-384 extends in one stitched pass, called
//! from `replay.rs`). Replay spends most of its time there (see docs/PERFORMANCE.md); the
//! oracle tests check every bank against `tpm2_eventlog`.

use nodetrust_extend::Alg;
use nodetrust_tpm_wire::HashAlg;

/// `cur = H(cur || digest)`; `cur` and `digest` must both be `alg.size()` bytes (otherwise
/// nothing happens and `false` is returned).
pub(crate) fn extend(h: HashAlg, cur: &mut [u8], digest: &[u8]) -> bool {
    let alg = match h {
        HashAlg::Sha1 => Alg::Sha1,
        HashAlg::Sha256 => Alg::Sha256,
        HashAlg::Sha384 => Alg::Sha384,
        HashAlg::Sha512 => Alg::Sha512,
    };
    nodetrust_extend::extend(alg, cur, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_level_extend_equals_the_hash_of_the_concatenation() {
        for alg in HashAlg::ALL {
            let old: Vec<u8> = (0..alg.size()).map(|i| (i as u8).wrapping_mul(3)).collect();
            let new: Vec<u8> = (0..alg.size()).map(|i| (i as u8) ^ 91).collect();
            let mut cur = old.clone();
            assert!(extend(alg, &mut cur, &new));
            assert_eq!(cur, alg.extend(&old, &new), "{alg}");
            let mut short = vec![0u8; alg.size() - 1];
            assert!(!extend(alg, &mut short, &vec![0u8; alg.size()]));
        }
    }
}
