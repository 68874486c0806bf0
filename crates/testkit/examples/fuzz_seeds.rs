//! Writes seed inputs for the `verify_quote` fuzz target: real quotes from a software TPM
//! (ECDSA P-256 AK, whose TPMT_PUBLIC fits the target's one-byte length prefix), in the
//! target's layout `[len(ak), len(attest), ak, attest, signature]`. With them the fuzzer starts
//! inside signature verification and the PCR digest check instead of at the parsers' first
//! byte.
//!
//! `cargo run -p nodetrust-testkit --example fuzz_seeds -- fuzz/seeds/verify_quote`, then
//! `cargo +nightly fuzz run verify_quote fuzz/corpus/verify_quote fuzz/seeds/verify_quote`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use nodetrust_testkit::soft::SoftTpm;
use nodetrust_tpm_wire::HashAlg;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds DIR")?);
    std::fs::create_dir_all(&dir)?;
    let mut tpm = SoftTpm::new()?;
    for pcr in 0..8u8 {
        tpm.extend(HashAlg::Sha256, pcr, &[pcr; 32]);
        tpm.extend(HashAlg::Sha1, pcr, &[pcr; 20]);
    }
    // Every seed selects PCRs: the target verifies against no PCR values, so these fail at
    // the PCR check after their signature verified. (A real quote of no PCRs would verify,
    // and the target rightly asserts that fuzzed bytes never do.)
    let selections: [&[(HashAlg, &[u8])]; 3] = [
        &[(HashAlg::Sha256, &[0])],
        &[(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7])],
        &[(HashAlg::Sha1, &[0, 7]), (HashAlg::Sha256, &[4])],
    ];
    let ak = tpm.ak_public().tpmt_bytes().to_vec();
    for (i, sel) in selections.iter().enumerate() {
        let selection: BTreeMap<HashAlg, BTreeSet<u8>> = sel
            .iter()
            .map(|(bank, pcrs)| (*bank, pcrs.iter().copied().collect()))
            .collect();
        let q = tpm.quote(&[i as u8; 16], &selection)?;
        let (a, b) = (u8::try_from(ak.len())?, u8::try_from(q.attest.len())?);
        let seed = [&[a, b][..], &ak, &q.attest, &q.signature].concat();
        let path = dir.join(format!("soft-ecdsa-{i}.bin"));
        std::fs::write(&path, seed)?;
        println!("{}", path.display());
    }
    Ok(())
}
