//! Every extend path against one-shot hashing of `pcr || digest` (the RustCrypto hashers'
//! general `Digest` API, which pads and finalises on its own).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use nodetrust_extend::{
    extend, extend_event, extend_event_portable, hash, hash_and_extend, hash_and_extend_portable,
    sha_available, stitched_available, Alg, Pcr,
};
use proptest::prelude::*;
use sha2::Digest;

fn oracle(alg: Alg, cur: &[u8], digest: &[u8]) -> Vec<u8> {
    let msg = [cur, digest].concat();
    match alg {
        Alg::Sha1 => sha1::Sha1::digest(&msg).to_vec(),
        Alg::Sha256 => sha2::Sha256::digest(&msg).to_vec(),
        Alg::Sha384 => sha2::Sha384::digest(&msg).to_vec(),
        Alg::Sha512 => sha2::Sha512::digest(&msg).to_vec(),
    }
}

fn arr<const N: usize>(v: &[u8]) -> [u8; N] {
    v.try_into().unwrap()
}

#[test]
fn the_stitched_kernel_is_used_on_this_machine_when_the_cpu_can() {
    // Not an assertion about the machine: it prints which path the other tests exercised.
    eprintln!("stitched kernel available: {}", stitched_available());
}

#[test]
fn hash_at_every_padding_boundary_equals_the_hashers_digest() {
    // Lengths around where the padding needs a second block (55/56 and 111/112 bytes) and
    // around whole blocks.
    for alg in [Alg::Sha1, Alg::Sha256, Alg::Sha384, Alg::Sha512] {
        for len in 0..=260usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut out = vec![0u8; alg.size()];
            assert!(hash(alg, &data, &mut out));
            assert_eq!(out, oracle(alg, &data, &[]), "{alg:?}, {len} bytes");
        }
        let mut wrong = vec![9u8; alg.size() + 1];
        assert!(!hash(alg, b"abc", &mut wrong));
        assert_eq!(wrong, vec![9u8; alg.size() + 1]);
    }
}

#[test]
fn hash_and_extend_chains_agree_at_every_padding_boundary() {
    // A chain, as a log's replay: each extend takes the hash computed with the one before,
    // over data of every length around the blocks' and the padding's edges.
    eprintln!("paired SHA blocks available: {}", sha_available());
    for alg in [Alg::Sha1, Alg::Sha256] {
        let n = alg.size();
        let (mut cur, mut want_cur) = (vec![0u8; n], vec![0u8; n]);
        let mut digest = vec![0u8; n];
        for len in 0..=200usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
            let mut out = vec![0u8; n];
            assert!(hash_and_extend(alg, &data, &mut out, &mut cur, &digest));
            want_cur = oracle(alg, &want_cur, &digest);
            assert_eq!(cur, want_cur, "{alg:?}, {len} bytes: extend");
            assert_eq!(out, oracle(alg, &data, &[]), "{alg:?}, {len} bytes: hash");
            digest = out;
        }
        let mut short = vec![7u8; n - 1];
        let mut out = vec![1u8; n];
        assert!(!hash_and_extend(
            alg,
            b"x",
            &mut out,
            &mut short,
            &vec![0u8; n]
        ));
        assert_eq!((short, out), (vec![7u8; n - 1], vec![1u8; n]));
    }
}

#[test]
fn wrong_lengths_change_nothing() {
    for alg in [Alg::Sha1, Alg::Sha256, Alg::Sha384, Alg::Sha512] {
        let mut short = vec![7u8; alg.size() - 1];
        assert!(!extend(alg, &mut short, &vec![0u8; alg.size()]));
        assert_eq!(short, vec![7u8; alg.size() - 1]);
        let mut cur = vec![7u8; alg.size()];
        assert!(!extend(alg, &mut cur, &vec![0u8; alg.size() + 1]));
        assert_eq!(cur, vec![7u8; alg.size()]);
    }
}

type Extender = fn(Option<Pcr<'_, 20>>, Option<Pcr<'_, 32>>, Option<Pcr<'_, 48>>);

/// A chain of extends, as PCR 8 of a grub boot: each output feeds the next input, so a wrong
/// word anywhere in a state propagates to the end.
fn chain(f: Extender, banks: (bool, bool, bool)) {
    let (mut c1, mut c256, mut c384) = ([0u8; 20], [0u8; 32], [0u8; 48]);
    let (mut o1, mut o256, mut o384) = (c1.to_vec(), c256.to_vec(), c384.to_vec());
    for i in 0..500u32 {
        let seed = i.to_be_bytes();
        let d1: [u8; 20] = arr(&oracle(Alg::Sha1, &seed, &[])[..20]);
        let d256: [u8; 32] = arr(&oracle(Alg::Sha256, &seed, &[]));
        let d384: [u8; 48] = arr(&oracle(Alg::Sha384, &seed, &[]));
        f(
            banks.0.then_some((&mut c1, &d1)),
            banks.1.then_some((&mut c256, &d256)),
            banks.2.then_some((&mut c384, &d384)),
        );
        if banks.0 {
            o1 = oracle(Alg::Sha1, &o1, &d1);
        }
        if banks.1 {
            o256 = oracle(Alg::Sha256, &o256, &d256);
        }
        if banks.2 {
            o384 = oracle(Alg::Sha384, &o384, &d384);
        }
    }
    assert_eq!(c1.to_vec(), o1, "sha1 {banks:?}");
    assert_eq!(c256.to_vec(), o256, "sha256 {banks:?}");
    assert_eq!(c384.to_vec(), o384, "sha384 {banks:?}");
}

#[test]
fn long_chains_agree_in_every_set_of_banks_on_both_paths() {
    for present in 0u8..8 {
        let banks = (present & 1 != 0, present & 2 != 0, present & 4 != 0);
        chain(extend_event, banks);
        chain(extend_event_portable, banks);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn block_level_extend_equals_hashing_the_concatenation(
        alg in prop_oneof![Just(Alg::Sha1), Just(Alg::Sha256), Just(Alg::Sha384), Just(Alg::Sha512)],
        bytes in proptest::collection::vec(any::<u8>(), 128),
    ) {
        let n = alg.size();
        let (old, new) = (&bytes[..n], &bytes[64..64 + n]);
        let mut cur = old.to_vec();
        prop_assert!(extend(alg, &mut cur, new));
        prop_assert_eq!(cur, oracle(alg, old, new));
    }

    #[test]
    fn block_level_hash_equals_the_hashers_digest(
        alg in prop_oneof![Just(Alg::Sha1), Just(Alg::Sha256), Just(Alg::Sha384), Just(Alg::Sha512)],
        data in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        let mut out = vec![0u8; alg.size()];
        prop_assert!(hash(alg, &data, &mut out));
        prop_assert_eq!(out, oracle(alg, &data, &[]));
    }

    #[test]
    fn hash_and_extend_equals_each_job_alone(
        alg in prop_oneof![Just(Alg::Sha1), Just(Alg::Sha256), Just(Alg::Sha384), Just(Alg::Sha512)],
        data in proptest::collection::vec(any::<u8>(), 0..400),
        bytes in proptest::collection::vec(any::<u8>(), 128),
    ) {
        let n = alg.size();
        let (old, new) = (&bytes[..n], &bytes[64..64 + n]);
        for f in [hash_and_extend, hash_and_extend_portable] {
            let (mut out, mut cur) = (vec![0u8; n], old.to_vec());
            prop_assert!(f(alg, &data, &mut out, &mut cur, new));
            prop_assert_eq!(out, oracle(alg, &data, &[]));
            prop_assert_eq!(cur, oracle(alg, old, new));
        }
    }

    #[test]
    fn one_event_in_any_set_of_banks_equals_one_shot_hashing(
        present in 0u8..8,
        c1 in any::<[u8; 20]>(), d1 in any::<[u8; 20]>(),
        c256 in any::<[u8; 32]>(), d256 in any::<[u8; 32]>(),
        c384 in proptest::collection::vec(any::<u8>(), 48),
        d384 in proptest::collection::vec(any::<u8>(), 48),
    ) {
        let (c384, d384): ([u8; 48], [u8; 48]) = (arr(&c384), arr(&d384));
        let want = |on: bool, alg, c: &[u8], d: &[u8]| if on { oracle(alg, c, d) } else { c.to_vec() };
        for f in [extend_event as Extender, extend_event_portable] {
            let (mut x1, mut x256, mut x384) = (c1, c256, c384);
            f(
                (present & 1 != 0).then_some((&mut x1, &d1)),
                (present & 2 != 0).then_some((&mut x256, &d256)),
                (present & 4 != 0).then_some((&mut x384, &d384)),
            );
            prop_assert_eq!(x1.to_vec(), want(present & 1 != 0, Alg::Sha1, &c1, &d1));
            prop_assert_eq!(x256.to_vec(), want(present & 2 != 0, Alg::Sha256, &c256, &d256));
            prop_assert_eq!(x384.to_vec(), want(present & 4 != 0, Alg::Sha384, &c384, &d384));
        }
    }
}
