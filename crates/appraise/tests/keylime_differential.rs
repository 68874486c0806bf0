//! Differential tests against Keylime's IMA code (PyPI `keylime`, run by the testkit's oracle):
//! on the same ascii logs, our parse of `ima`, `ima-ng` and `ima-sig` entries, the value each
//! entry extends into the SHA-1 and SHA-256 banks, the PCR 10 the log replays to, the boot
//! aggregates of the same PCRs 0-9, and which entries a policy allows, all agree with Keylime.
//!
//! Skipped (with a message) only when pip cannot reach PyPI to install Keylime.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeSet;

use base64::Engine as _;
use nodetrust_appraise::runtime::{RuntimeAppraisal, RuntimePolicy, TrustedKey};
use nodetrust_eventlog::ima::{boot_aggregate, BankRule, ImaLog, ImaReplay};
use nodetrust_testkit::ima::{fake_boot_pcrs, ImaLogBuilder, TestKeyKind, TestSigningKey};
use nodetrust_testkit::keylime::Keylime;
use nodetrust_tpm_wire::{HashAlg, PcrValues};
use serde_json::{json, Value};

const BANKS: [HashAlg; 2] = [HashAlg::Sha1, HashAlg::Sha256];

fn keylime() -> Option<Keylime> {
    Keylime::get().unwrap()
}

/// A glob as the anchored Python regular expression Keylime matches.
fn glob_regex(g: &str) -> String {
    let mut out = String::from("^");
    for c in g.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c if c.is_ascii_alphanumeric() || c == '/' || c == '_' => out.push(c),
            c => {
                out.push('\\');
                out.push(c);
            }
        }
    }
    out.push('$');
    out
}

/// Our policy in Keylime's format.
fn to_keylime(p: &RuntimePolicy) -> Value {
    let digests: serde_json::Map<String, Value> = p
        .digests
        .iter()
        .map(|(path, ds)| {
            (
                path.clone(),
                Value::from(
                    ds.iter()
                        .map(|d| hex::encode(&d.digest))
                        .collect::<Vec<_>>(),
                ),
            )
        })
        .collect();
    json!({
        "meta": {"version": 1, "generator": 0},
        "release": 0,
        "digests": digests,
        "excludes": p.excludes.iter().map(|g| glob_regex(g.as_str())).collect::<Vec<_>>(),
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    })
}

fn keyring(keys: &[&TestSigningKey]) -> Value {
    json!({
        "pubkeys": keys.iter().map(|k| base64::engine::general_purpose::STANDARD.encode(k.public_key_der())).collect::<Vec<_>>(),
        "keyids": keys.iter().map(|k| k.key_id()).collect::<Vec<_>>(),
    })
}

fn pcrs_json(p: &PcrValues) -> Value {
    p.to_json()
}

/// Compares everything Keylime says about `b`'s ascii log with what we compute.
fn compare(
    kl: &Keylime,
    b: &ImaLogBuilder,
    boot: &PcrValues,
    policy: &RuntimePolicy,
    keys: &[&TestSigningKey],
) -> Value {
    let text = b.ascii();
    let ours = ImaLog::parse(text.as_bytes()).unwrap();
    let pcr10 = json!({
        "sha1": hex::encode(b.pcr10(HashAlg::Sha1)),
        "sha256": hex::encode(b.pcr10(HashAlg::Sha256)),
    });
    let answer = kl
        .call(&json!({
            "mode": "check",
            "log": text,
            "policy": to_keylime(policy),
            "pcrs": pcrs_json(boot),
            "pcr10": pcr10,
            "keyring": if keys.is_empty() { Value::Null } else { keyring(keys) },
        }))
        .unwrap();
    let theirs = answer["entries"].as_array().unwrap();
    assert_eq!(theirs.len(), ours.entries.len());

    // Parse and per-entry extend values.
    for (e, k) in ours.entries.iter().zip(theirs) {
        assert_eq!(k["path"], e.path.as_str(), "entry {}", e.number);
        assert_eq!(k["alg"], e.file_alg.as_str(), "entry {}", e.number);
        if !e.is_violation() {
            assert_eq!(
                k["digest"],
                hex::encode(&e.file_digest),
                "entry {}",
                e.number
            );
        }
        assert_eq!(
            k["sig"],
            e.signature
                .as_ref()
                .map_or(Value::Null, |s| Value::from(hex::encode(s))),
            "entry {} ({})",
            e.number,
            e.path
        );
        for bank in BANKS {
            assert_eq!(
                k["pcr_hash"][bank.name()],
                hex::encode(e.extend_digest(bank, BankRule::Recompute)),
                "entry {} ({}) {bank}",
                e.number,
                e.path
            );
        }
    }
    // The PCR 10 the whole log replays to.
    let mut replay = ImaReplay::new(&BANKS, BankRule::Recompute);
    replay.extend(&ours.entries).unwrap();
    for bank in BANKS {
        assert_eq!(
            answer["running"][bank.name()],
            hex::encode(replay.value(bank, 10).unwrap()),
            "{bank}"
        );
        assert_eq!(replay.value(bank, 10).unwrap(), b.pcr10(bank));
    }
    // Boot aggregates over PCRs 0-7 and 0-9.
    for bank in BANKS {
        let want: Vec<String> = [7u8, 9]
            .iter()
            .map(|t| hex::encode(boot_aggregate(boot, bank, *t).unwrap()))
            .collect();
        assert_eq!(
            answer["boot_aggregates"][bank.name()],
            json!(want),
            "{bank}"
        );
    }
    // Which entries the policy allows.
    let mut q = boot.clone();
    for bank in BANKS {
        q.insert(bank, 10, b.pcr10(bank)).unwrap();
    }
    let compiled = policy.compile().unwrap();
    let out = RuntimeAppraisal::new()
        .with_failure_limit(usize::MAX)
        .appraise(&compiled, 0, &ours.entries, &q);
    assert!(out.problem.is_none(), "{:?}", out.problem);
    let our_failed: BTreeSet<u64> = out.failures.iter().map(|f| f.entry).collect();
    let their_failed: BTreeSet<u64> = theirs
        .iter()
        .enumerate()
        .filter(|(_, k)| k["failed"] == true)
        .map(|(i, _)| i as u64)
        .collect();
    assert_eq!(our_failed, their_failed, "ours: {:?}", out.reasons());
    for bank in BANKS {
        assert_eq!(
            answer["ok"][bank.name()],
            json!(out.is_trusted()),
            "{bank}: {:?}",
            out.reasons()
        );
    }
    answer
}

#[test]
fn parse_replay_boot_aggregate_and_decisions_agree_with_keylime() {
    let Some(kl) = keylime() else { return };
    let rsa = TestSigningKey::generate(TestKeyKind::Rsa2048).unwrap();
    let ec = TestSigningKey::generate(TestKeyKind::EcdsaP256).unwrap();
    let stranger = TestSigningKey::generate(TestKeyKind::Rsa2048).unwrap();
    let boot = fake_boot_pcrs(&BANKS);

    let mut gold = ImaLogBuilder::new();
    gold.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    gold.file("/usr/bin/bash", b"bash");
    gold.file_alg("/usr/lib/libsha1.so", HashAlg::Sha1, b"sha1");
    gold.file_alg("/usr/lib/libsha512.so", HashAlg::Sha512, b"sha512");
    gold.file_ima("/sbin/init", b"init");
    gold.sig_file(
        "/usr/bin/unsigned-but-listed",
        HashAlg::Sha256,
        b"u",
        Vec::new(),
    );
    let mut policy = RuntimePolicy::new();
    policy.learn(gold.entries()).unwrap();
    policy.add_exclude("/tmp/*").unwrap();
    policy.add_exclude("/var/log/?.log").unwrap();

    // The host: the gold files, then files allowed by signature or exclude, and failures.
    let mut b = gold.clone();
    b.signed_file("/usr/lib/rsa.so", HashAlg::Sha256, b"rsa", &rsa)
        .unwrap();
    b.signed_file("/usr/lib/ec.so", HashAlg::Sha256, b"ec", &ec)
        .unwrap();
    b.signed_file("/usr/lib/stranger.so", HashAlg::Sha256, b"x", &stranger)
        .unwrap();
    let forged = rsa
        .ima_signature(HashAlg::Sha256, &HashAlg::Sha256.digest(b"other"))
        .unwrap();
    b.sig_file("/usr/lib/forged.so", HashAlg::Sha256, b"forged", forged);
    b.sig_file(
        "/usr/bin/unsigned",
        HashAlg::Sha256,
        b"unsigned",
        Vec::new(),
    );
    b.file("/tmp/build/a.out", b"scratch");
    b.file("/var/log/a.log", b"a");
    b.file("/var/log/ab.log", b"ab");
    b.file("/usr/bin/bash", b"trojaned bash");
    b.file("/usr/bin/curl", b"curl");
    b.violation("/var/lib/db");

    let mut with_keys = policy.clone();
    for k in [&rsa, &ec] {
        with_keys
            .add_key(TrustedKey::from_pem_or_der(k.public_key_pem().as_bytes(), "").unwrap())
            .unwrap();
    }
    let a = compare(&kl, &b, &boot, &with_keys, &[&rsa, &ec]);
    let failed: Vec<&str> = a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["failed"] == true)
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            "/usr/lib/stranger.so",
            "/usr/lib/forged.so",
            "/usr/bin/unsigned",
            "/var/log/ab.log",
            "/usr/bin/bash",
            "/usr/bin/curl",
            "/var/lib/db"
        ]
    );
    // Without keys, the signed files fail too, on both sides.
    compare(&kl, &b, &boot, &policy, &[]);
    // The gold log alone is allowed by both.
    let a = compare(&kl, &gold, &boot, &policy, &[]);
    assert_eq!(a["ok"]["sha256"], true);
}

#[test]
fn boot_aggregates_of_both_banks_and_other_boots_agree_with_keylime() {
    let Some(kl) = keylime() else { return };
    for bank in BANKS {
        let boot = fake_boot_pcrs(&BANKS);
        let mut b = ImaLogBuilder::new();
        b.boot_aggregate(&boot, bank).unwrap();
        b.file("/usr/bin/bash", b"bash");
        let mut policy = RuntimePolicy::new();
        policy.learn(b.entries()).unwrap();
        compare(&kl, &b, &boot, &policy, &[]);
        // Another boot's PCRs: both refuse the boot aggregate.
        let mut other = boot.clone();
        other.insert(bank, 3, vec![0xab; bank.size()]).unwrap();
        let a = compare(&kl, &b, &other, &policy, &[]);
        assert_eq!(a["entries"][0]["failed"], true);
    }
}

#[test]
fn a_large_generated_log_agrees_with_keylime() {
    let Some(kl) = keylime() else { return };
    let boot = fake_boot_pcrs(&BANKS);
    let mut b = ImaLogBuilder::new();
    b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    let mut policy = RuntimePolicy::new();
    for i in 0..3000u32 {
        let path = format!("/usr/lib/x86_64-linux-gnu/lib{}.so.{}", i % 997, i % 7);
        let content = (i % 1500).to_le_bytes();
        match i % 5 {
            0 => b.file_alg(&path, HashAlg::Sha1, &content),
            1 => b.file_ima(&path, &content),
            2 => b.sig_file(&path, HashAlg::Sha256, &content, Vec::new()),
            _ => b.file(&path, &content),
        };
        if i % 11 != 0 {
            let e = b.entries().last().unwrap().clone();
            policy
                .add_digest(
                    &e.path,
                    nodetrust_appraise::runtime::FileDigest::of_entry(&e).unwrap(),
                )
                .unwrap();
        }
    }
    compare(&kl, &b, &boot, &policy, &[]);
}
