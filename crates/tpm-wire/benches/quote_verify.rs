//! Quote verification rate on one core, beside the raw signature-verify rate of the same
//! crypto library (aws-lc-rs) in the same run.
//!
//! `cargo bench -p nodetrust-tpm-wire --bench quote_verify` (optionally `-- SECONDS`).
//! Prints, per AK type, `raw verifies/s`, `quote verifications/s` and their ratio; the target
//! is a ratio of at least 0.80 (parsing and the PCR digest must be nearly free).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use nodetrust_tpm_wire::{verify_quote, HashAlg};

fn rate(seconds: f64, mut f: impl FnMut() -> bool) -> f64 {
    // Warm up, then measure.
    for _ in 0..200 {
        assert!(f());
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            assert!(black_box(f()));
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn report(name: &str, raw: f64, full: f64) {
    println!(
        "{name}: raw verifies/s {raw:.0}, quote verifications/s {full:.0}, ratio {:.3}",
        full / raw
    );
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let pcrs = common::sample_pcrs();
    // The PCRs a PLATFORM + OS flavor needs.
    let sel = common::selection(&[(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 18])]);
    let nonce = [7u8; 32];

    let rsa = common::soft_rsa_ak();
    let (attest, sig) = common::quote_rsa(&rsa, &nonce, &sel, &pcrs);
    let raw_sig = match nodetrust_tpm_wire::Signature::parse(&sig).unwrap() {
        nodetrust_tpm_wire::Signature::RsaSsa { sig, .. } => sig,
        _ => unreachable!(),
    };
    let pk = rsa.key.public_key().as_ref().to_vec();
    let raw_key = UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &pk);
    let raw = rate(seconds, || {
        raw_key.verify(black_box(&attest), &raw_sig).is_ok()
    });
    let full = rate(seconds, || {
        verify_quote(&rsa.public, black_box(&attest), &sig, &pcrs, &nonce).is_ok()
    });
    report("RSA-2048 RSASSA-SHA256", raw, full);

    let ec = common::soft_ak(common::AK_ATTRS);
    let (attest, sig) = common::quote(&ec, &nonce, &sel, &pcrs);
    let (r, s) = match nodetrust_tpm_wire::Signature::parse(&sig).unwrap() {
        nodetrust_tpm_wire::Signature::Ecdsa { r, s, .. } => (r, s),
        _ => unreachable!(),
    };
    let fixed = [r, s].concat();
    let pk = ec.key.public_key().as_ref().to_vec();
    let raw_key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &pk);
    let raw = rate(seconds, || {
        raw_key.verify(black_box(&attest), &fixed).is_ok()
    });
    let full = rate(seconds, || {
        verify_quote(&ec.public, black_box(&attest), &sig, &pcrs, &nonce).is_ok()
    });
    report("ECDSA P-256 SHA-256", raw, full);
}
