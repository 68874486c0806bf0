//! Extend rate of one PCR chain, one event after another (each extend depends on the one
//! before, as in PCR 8 of a grub boot), bank by bank with the block functions and with
//! `extend_event`; then an IMA entry's hashing (its template data hashed, the hash of the entry
//! before extended) one job after the other and paired (`hash_and_extend`).
//! `cargo run --release -p nodetrust-extend --example extend_rate [SECONDS]`.

use std::time::{Duration, Instant};

use nodetrust_extend::{
    extend_event, extend_event_portable, hash_and_extend, hash_and_extend_portable, sha_available,
    stitched_available, Alg, Pcr,
};

type Extender = fn(Option<Pcr<'_, 20>>, Option<Pcr<'_, 32>>, Option<Pcr<'_, 48>>);

/// Nanoseconds per event for `seconds`.
fn rate(seconds: f64, banks: (bool, bool, bool), f: Extender) -> f64 {
    let (mut c1, mut c256, mut c384) = ([0u8; 20], [0u8; 32], [0u8; 48]);
    let (mut d1, mut d256, mut d384) = ([1u8; 20], [2u8; 32], [3u8; 48]);
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut n: u32 = 0;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            let i = n as u8;
            (d1[0], d256[0], d384[0]) = (i, i, i);
            f(
                banks.0.then_some((&mut c1, &d1)),
                banks.1.then_some((&mut c256, &d256)),
                banks.2.then_some((&mut c384, &d384)),
            );
            n = n.wrapping_add(1);
        }
    }
    std::hint::black_box((c1, c256, c384));
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

type HashExtender = fn(Alg, &[u8], &mut [u8], &mut [u8], &[u8]) -> bool;

/// Nanoseconds per entry: the template data (`len` bytes) hashed, the previous hash extended.
fn entry_rate(seconds: f64, alg: Alg, len: usize, f: HashExtender) -> f64 {
    let n = alg.size();
    let mut data = vec![7u8; len];
    let (mut cur, mut digest, mut out) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut count: u32 = 0;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            if let Some(b) = data.first_mut() {
                *b = count as u8;
            }
            f(alg, &data, &mut out, &mut cur, &digest);
            std::mem::swap(&mut digest, &mut out);
            count = count.wrapping_add(1);
        }
    }
    std::hint::black_box(cur);
    start.elapsed().as_nanos() as f64 / f64::from(count)
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    println!("stitched kernels available: {}", stitched_available());
    println!("ns per event          bank by bank   extend_event");
    for (name, banks) in [
        ("sha1+sha256+sha384", (true, true, true)),
        ("sha1+sha256", (true, true, false)),
        ("sha384", (false, false, true)),
    ] {
        let portable = rate(seconds, banks, extend_event_portable);
        let stitched = rate(seconds, banks, extend_event);
        println!("{name:<20}  {portable:>12.1}   {stitched:>12.1}");
    }
    println!("paired SHA blocks available: {}", sha_available());
    println!("ns per IMA entry      one by one     hash_and_extend");
    for (name, alg, len) in [
        ("sha256, 110 bytes", Alg::Sha256, 110),
        ("sha1, 110 bytes", Alg::Sha1, 110),
        ("sha256, 200 bytes", Alg::Sha256, 200),
    ] {
        let portable = entry_rate(seconds, alg, len, hash_and_extend_portable);
        let paired = entry_rate(seconds, alg, len, hash_and_extend);
        println!("{name:<20}  {portable:>12.1}   {paired:>12.1}");
    }
}
