//! The `ima-sig` signature field and the keys that verify it: any bytes are a signature header
//! or an error (never a panic); an entry carrying them is decided against a policy that
//! trusts a key of each kind without panicking, and garbage never verifies. Key files
//! (certificates, public keys, PEM or DER) are read or refused.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nodetrust_appraise::runtime::{
    encode_ima_signature, parse_ima_signature, AllowedBy, CompiledPolicy, EntryDecision,
    RuntimePolicy, TrustedKey,
};
use nodetrust_eventlog::ima::{ImaEntry, Template};
use nodetrust_tpm_wire::HashAlg;

/// A P-256 and an RSA-2048 public key (SubjectPublicKeyInfo, PEM; private keys discarded).
const P256: &str = include_str!("keys/p256.pem");
const RSA: &str = include_str!("keys/rsa2048.pem");

fn policy() -> &'static CompiledPolicy {
    static P: OnceLock<CompiledPolicy> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = RuntimePolicy::new();
        for k in [P256, RSA] {
            p.add_key(TrustedKey::from_pem_or_der(k.as_bytes(), "").expect("seed key"))
                .expect("key");
        }
        p.compile().expect("policy")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = TrustedKey::from_pem_or_der(data, "fuzz");
    let policy = policy();
    let mut candidates = vec![data.to_vec()];
    if let Ok(s) = parse_ima_signature(data) {
        if let (3, Some(h)) = (s.sig_type, s.hash()) {
            assert_eq!(encode_ima_signature(h, s.key_id, &s.signature), data);
        }
    }
    // The body as a signature by each trusted key, over SHA-256 and SHA-1 digests.
    for key in [P256, RSA] {
        let id = TrustedKey::from_pem_or_der(key.as_bytes(), "")
            .expect("seed key")
            .key_id();
        for h in [HashAlg::Sha256, HashAlg::Sha1] {
            candidates.push(encode_ima_signature(h, id, data));
        }
    }
    for (i, sig) in candidates.into_iter().enumerate() {
        let alg = if i % 2 == 1 { "sha256" } else { "sha1" };
        let digest = if alg == "sha256" {
            vec![7u8; 32]
        } else {
            vec![7u8; 20]
        };
        let e = ImaEntry {
            number: 1,
            pcr: 10,
            template_hash: vec![1; 20],
            template: Template::ImaSig,
            template_data: Vec::new(),
            file_alg: alg.to_string(),
            file_digest: digest,
            path: "/fuzz".to_string(),
            signature: Some(sig),
        };
        if let EntryDecision::Allowed(AllowedBy::Signature(_)) = policy.check_entry(&e) {
            panic!("a signature made without the private key verified");
        }
    }
});
