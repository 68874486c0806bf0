//! Runtime (IMA) policy files, ours and Keylime's: any bytes are read or refused, never a
//! panic; a policy that is read compiles or says why, writes back to the same policy, and its
//! exclude globs match any path without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrust_appraise::runtime::{diff_policies, Glob, RuntimePolicy};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RuntimePolicy::from_json(data) {
        let back = RuntimePolicy::from_json(p.to_json().as_bytes()).expect("our JSON reads back");
        assert_eq!(back, p);
        assert_eq!(back.fingerprint(), p.fingerprint());
        let _ = p.describe();
        assert!(diff_policies(&p, &back).is_empty());
        if let Ok(c) = p.compile() {
            for path in p.digests.keys().take(16) {
                assert!(c.digest_count() > 0);
                let _ = c.is_excluded(path);
            }
        }
    }
    if let Ok(imp) = RuntimePolicy::from_keylime(data) {
        imp.policy.compile().expect("an imported policy compiles");
    }
    // The bytes as a glob and a path.
    let text = String::from_utf8_lossy(data);
    // Split near the middle, on a character boundary (lossy text may hold multi-byte U+FFFD).
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid -= 1;
    }
    let (pattern, path) = text.split_at(mid);
    let pattern = pattern.trim_end_matches(|c: char| !c.is_ascii());
    if let Ok(g) = Glob::new(pattern) {
        let _ = g.matches(path);
        let _ = g.prefix();
    }
});
