//! What the prepared-AK cache saves and what it costs: an RSA-2048 quote's signature checked
//! with its AK found in the cache and with the AK decoded and parsed again (a miss), and the
//! memory one cached RSA AK holds (its pinned text, the parsed public area and the library's
//! key with its Montgomery constants, which the first verification builds).
//!
//! `cargo bench -p nodetrust-server --bench ak_cache` (optionally `-- SECONDS KEYS`: the time
//! each rate is measured for, 3 s, and how many keys the memory figure is taken over, 20,000).
//! Prints `hit: N µs`, `miss: N µs` and `memory: N bytes a cached RSA AK`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "benchmark code: a panic is a failed run"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::KeyPair as _;
use nodetrust_proto::b64;
use nodetrust_server::ak_cache::AkCache;
use nodetrust_tpm_wire::pcr::BankSelection;
use nodetrust_tpm_wire::verify::verify_signed_prepared;
use nodetrust_tpm_wire::{Attest, ClockInfo, HashAlg, PcrSelection, Public, PublicKey, Signature};

const NONCE: [u8; 32] = [7; 32];

/// An RSA-2048 AK's public area with modulus `modulus`.
fn rsa_public(modulus: Vec<u8>) -> Public {
    Public::ak(&PublicKey::Rsa {
        modulus,
        exponent: 65537,
        key_bits: 2048,
    })
    .unwrap()
}

/// A real RSA-2048 AK: its pinned text (base64 `TPM2B_PUBLIC`) and a quote it signed.
fn signed_quote() -> (String, Vec<u8>, Vec<u8>) {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let spki = key.public_key().as_der().unwrap();
    let PublicKey::Rsa { modulus, .. } =
        nodetrust_tpm_wire::der::parse_spki(spki.as_ref()).unwrap()
    else {
        panic!("an RSA key");
    };
    let public = rsa_public(modulus);
    let attest = Attest {
        qualified_signer: public.name(),
        extra_data: NONCE.to_vec(),
        clock_info: ClockInfo {
            clock: 1_000,
            reset_count: 0,
            restart_count: 0,
            safe: true,
        },
        firmware_version: 1,
        pcr_select: PcrSelection {
            banks: vec![BankSelection {
                hash: HashAlg::Sha256,
                pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7],
            }],
        },
        pcr_digest: vec![0; 32],
    }
    .to_bytes()
    .unwrap();
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        &attest,
        &mut sig,
    )
    .unwrap();
    let signature = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig,
    }
    .to_bytes()
    .unwrap();
    (b64::encode(&public.tpm2b_bytes()), attest, signature)
}

/// Microseconds a call of `a` and of `b` take, over `seconds`: the two in turns of 32 calls,
/// so that a change of the machine's speed during the run weighs on both alike.
fn micros(seconds: f64, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    for _ in 0..100 {
        a();
        b();
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let (mut in_a, mut in_b, mut n) = (Duration::ZERO, Duration::ZERO, 0u64);
    while start.elapsed() < budget {
        let t = Instant::now();
        for _ in 0..32 {
            a();
        }
        in_a += t.elapsed();
        let t = Instant::now();
        for _ in 0..32 {
            b();
        }
        in_b += t.elapsed();
        n += 32;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    (per(in_a), per(in_b))
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<f64>().ok());
    let seconds = args.next().unwrap_or(3.0);
    let keys = args.next().map_or(20_000, |k| k as usize);

    let quotes = [signed_quote(), signed_quote()];
    let check = |cache: &AkCache, (ak, attest, sig): &(String, Vec<u8>, Vec<u8>)| {
        let prepared = cache.get(black_box(ak)).unwrap();
        assert!(verify_signed_prepared(&prepared, attest, sig, &NONCE).is_ok());
    };

    // A hit: the host's AK is in the cache. A miss: two hosts take turns in a cache of one,
    // so each look-up decodes and parses.
    let hits = AkCache::with_capacity(2);
    let misses = AkCache::with_capacity(1);
    let mut turn = 0;
    let (hit, miss) = micros(
        seconds,
        || check(&hits, &quotes[0]),
        || {
            turn ^= 1;
            check(&misses, &quotes[turn]);
        },
    );
    assert_eq!(hits.stats().1, 1, "one miss, then hits");
    assert_eq!(misses.stats().0, 0, "no hits");
    println!("RSA-2048 quote signature, AK from the cache (hit): {hit:.1} µs");
    println!("RSA-2048 quote signature, AK decoded and parsed again (miss): {miss:.1} µs");

    // Memory: `keys` distinct RSA AKs (random odd 2048-bit moduli; a verification fails but
    // does all of the work a real one does, building the key's Montgomery constants).
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pinned: Vec<String> = (0..keys)
        .map(|_| {
            let mut n = vec![0u8; 256];
            aws_lc_rs::rand::SecureRandom::fill(&rng, &mut n).unwrap();
            n[0] |= 0x80;
            n[255] |= 1;
            b64::encode(&rsa_public(n).tpm2b_bytes())
        })
        .collect();
    let (_, attest, _) = &quotes[0];
    let below_any_modulus = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig: vec![1; 256],
    }
    .to_bytes()
    .unwrap();
    let cache = AkCache::with_capacity(keys);
    let before = rss();
    for ak in &pinned {
        let prepared = cache.get(ak).unwrap();
        assert!(verify_signed_prepared(&prepared, attest, &below_any_modulus, &NONCE).is_err());
        assert!(prepared.is_parsed());
    }
    let after = rss();
    assert_eq!(cache.len(), keys);
    println!(
        "memory: {} bytes a cached RSA AK ({keys} keys, {:.1} MiB)",
        (after - before) / keys as u64,
        (after - before) as f64 / (1024.0 * 1024.0)
    );
}
