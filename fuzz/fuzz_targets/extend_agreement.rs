//! PCR extend: the stitched kernels (where the CPU has them) and the portable block functions
//! compute the same values for any PCR values and digests, in any combination of banks; and
//! `hash_and_extend` (blocks of the two jobs paired, where the CPU can) gives what `hash` and
//! `extend` give, for a message of the bytes after the first 201.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrust_extend::{
    extend_event, extend_event_portable, hash_and_extend, hash_and_extend_portable, Alg,
};

fuzz_target!(|data: &[u8]| {
    // 1 byte of bank bits, then 20 + 20 + 32 + 32 + 48 + 48 bytes.
    let Some((&present, rest)) = data.split_first() else {
        return;
    };
    let Some(bytes) = rest.get(..200) else {
        return;
    };
    let take = |from: usize, to: usize| bytes.get(from..to).unwrap_or_default();
    let c1: [u8; 20] = take(0, 20).try_into().unwrap();
    let d1: [u8; 20] = take(20, 40).try_into().unwrap();
    let c256: [u8; 32] = take(40, 72).try_into().unwrap();
    let d256: [u8; 32] = take(72, 104).try_into().unwrap();
    let c384: [u8; 48] = take(104, 152).try_into().unwrap();
    let d384: [u8; 48] = take(152, 200).try_into().unwrap();
    let (mut a1, mut a256, mut a384) = (c1, c256, c384);
    let (mut b1, mut b256, mut b384) = (c1, c256, c384);
    extend_event(
        (present & 1 != 0).then_some((&mut a1, &d1)),
        (present & 2 != 0).then_some((&mut a256, &d256)),
        (present & 4 != 0).then_some((&mut a384, &d384)),
    );
    extend_event_portable(
        (present & 1 != 0).then_some((&mut b1, &d1)),
        (present & 2 != 0).then_some((&mut b256, &d256)),
        (present & 4 != 0).then_some((&mut b384, &d384)),
    );
    assert_eq!((a1, a256, a384), (b1, b256, b384));

    let message = rest.get(200..).unwrap_or_default();
    for (alg, cur, digest) in [
        (Alg::Sha1, &c1[..], &d1[..]),
        (Alg::Sha256, &c256[..], &d256[..]),
    ] {
        let (mut out_a, mut cur_a) = (vec![0u8; alg.size()], cur.to_vec());
        let (mut out_b, mut cur_b) = (vec![0u8; alg.size()], cur.to_vec());
        assert!(hash_and_extend(
            alg, message, &mut out_a, &mut cur_a, digest
        ));
        assert!(hash_and_extend_portable(
            alg, message, &mut out_b, &mut cur_b, digest
        ));
        assert_eq!((out_a, cur_a), (out_b, cur_b));
    }
});
