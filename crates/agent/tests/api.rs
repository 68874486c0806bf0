//! The agent API against a per-test swtpm: quotes verify with the core verifier and with
//! `tpm2_checkquote`, auth is enforced, bad requests get a 400 with a JSON reason, and the AK
//! survives an agent restart and a TPM reboot.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use axum::http::StatusCode;
use common::*;
use nodetrust_proto::agent::{AikInfo, EkInfo, HostInfo, ImaEntries, QuoteResponse};
use nodetrust_proto::b64;
use nodetrust_testkit::{tpm2, Swtpm};
use nodetrust_tpm::AkAlgorithm;
use nodetrust_tpm_wire::{verify_quote, HashAlg, PcrValues, Public};
use serde_json::json;

/// One binary `ima-ng` entry for `path`.
fn ima_entry(path: &str) -> Vec<u8> {
    let mut data = Vec::new();
    let d = [b"sha256:\0".as_slice(), &[7u8; 32]].concat();
    data.extend_from_slice(&(d.len() as u32).to_le_bytes());
    data.extend_from_slice(&d);
    let n = [path.as_bytes(), &[0]].concat();
    data.extend_from_slice(&(n.len() as u32).to_le_bytes());
    data.extend_from_slice(&n);
    let mut e = Vec::new();
    e.extend_from_slice(&10u32.to_le_bytes());
    e.extend_from_slice(&[1u8; 20]);
    e.extend_from_slice(&6u32.to_le_bytes());
    e.extend_from_slice(b"ima-ng");
    e.extend_from_slice(&(data.len() as u32).to_le_bytes());
    e.extend_from_slice(&data);
    e
}

fn pcr_values(resp: &QuoteResponse) -> PcrValues {
    PcrValues::try_from(resp.pcrs.as_ref().unwrap().map().unwrap().as_ref()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_verifies_with_core_verifier_and_tpm2_checkquote() {
    let tpm = Swtpm::start().unwrap();
    tpm2::run(
        &tpm,
        "tpm2_pcrextend",
        &["0:sha256=00000000000000000000000000000000000000000000000000000000000000aa"],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let eventlog = dir.path().join("binary_bios_measurements");
    std::fs::write(&eventlog, b"\x00\x00\x00\x00 pretend TCG event log").unwrap();
    let ima = dir.path().join("binary_runtime_measurements");
    let ima_bytes = [ima_entry("boot_aggregate"), ima_entry("/usr/bin/bash")].concat();
    std::fs::write(&ima, &ima_bytes).unwrap();
    let attester = open(&tpm, &dir.path().join("state"), AkAlgorithm::Rsa2048);
    let state = state(attester, &eventlog, &ima);

    let nonce = b"0123456789abcdef0123456789abcdef";
    let (status, body) = post(
        &state,
        "/v2/tpm/quote",
        json!({"nonce": b64::encode(nonce), "pcrs": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 17], "pcrbanks": ["SHA256", "sha1"], "ima_offset": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["pcrs"]["sha256"]["0"].is_string(),
        "pcrs as {{bank: {{index: hex}}}}: {body}"
    );
    let resp: QuoteResponse = serde_json::from_value(body).unwrap();
    assert_eq!(
        resp.event_log.as_deref(),
        Some(&std::fs::read(&eventlog).unwrap()[..])
    );
    let entries = resp.ima_log.clone().unwrap();
    assert_eq!(
        (entries.start, entries.count, entries.more, entries.total),
        (0, 2, false, Some(2))
    );
    assert_eq!(entries.log, ima_bytes);

    // The core verifier, with the AK from /v2/aik.
    let (status, aik) = get(&state, "/v2/aik").await;
    assert_eq!(status, StatusCode::OK);
    let aik: AikInfo = serde_json::from_value(aik).unwrap();
    assert_eq!(Some(aik.aik.clone()), resp.aik);
    let ak = Public::from_tpm2b(&aik.aik).unwrap();
    assert_eq!(hex::encode(ak.name()), aik.name);
    let pcrs = pcr_values(&resp);
    let v = verify_quote(&ak, &resp.quote, &resp.signature, &pcrs, nonce).unwrap();
    assert_eq!(v.scheme(), "rsassa");
    assert_eq!(v.pcrs().len(), 24);
    assert_ne!(pcrs.get(HashAlg::Sha256, 0).unwrap(), &[0u8; 32][..]);
    assert!(verify_quote(&ak, &resp.quote, &resp.signature, &pcrs, b"another nonce").is_err());

    // tpm2_checkquote (offline: it needs no TPM).
    let pem = dir.path().join("ak.pem");
    let msg = dir.path().join("quote.msg");
    let sig = dir.path().join("quote.sig");
    std::fs::write(&pem, &aik.pem).unwrap();
    std::fs::write(&msg, &resp.quote).unwrap();
    std::fs::write(&sig, &resp.signature).unwrap();
    let check = |nonce_hex: &str| {
        std::process::Command::new("tpm2_checkquote")
            .args([
                "-u",
                pem.to_str().unwrap(),
                "-m",
                msg.to_str().unwrap(),
                "-s",
                sig.to_str().unwrap(),
            ])
            .args(["-g", "sha256", "-q", nonce_hex])
            .output()
            .unwrap()
    };
    let ok = check(&hex::encode(nonce));
    assert!(
        ok.status.success(),
        "tpm2_checkquote: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = check(&hex::encode(b"not the nonce"));
    assert!(
        !bad.status.success(),
        "tpm2_checkquote must refuse a wrong nonce"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_host_ek_and_bad_requests() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attester = open(&tpm, &dir.path().join("state"), AkAlgorithm::EccP256);
    let state = state(attester, &dir.path().join("none"), &dir.path().join("none"));

    let (status, v) = call(&state, "GET", "/version", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["name"], "nodetrust-agent");

    for auth in [
        None,
        Some(basic(USER, "wrong")),
        Some(basic("other", PASSWORD)),
        Some("Bearer x".to_string()),
    ] {
        for (method, path) in [
            ("GET", "/v2/host"),
            ("POST", "/v2/tpm/quote"),
            ("POST", "/v2/ima"),
            ("GET", "/v2/aik"),
            ("GET", "/v2/ek"),
        ] {
            let (status, body) = call(&state, method, path, auth.as_deref(), None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(body["reason"], "unauthorized");
        }
    }

    // No logs on this host: the fields are absent, not null, even when IMA is asked for; and
    // `/v2/ima` says there is no IMA log.
    let (status, body) = post(
        &state,
        "/v2/tpm/quote",
        json!({"nonce": b64::encode(b"x"), "pcrs": [0], "pcrbanks": ["SHA256"], "ima_offset": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.get("event_log").is_none() && body.get("ima_log").is_none(),
        "{body}"
    );
    let (status, body) = post(&state, "/v2/ima", json!({"offset": 0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["reason"], "no_ima_log", "{body}");
    for bad in [
        json!({"offset": -1}),
        json!({"offset": 0, "extra": true}),
        json!({}),
    ] {
        let (status, body) = post(&state, "/v2/ima", bad.clone()).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request")),
            "{bad}: {body}"
        );
    }

    let (status, host) = get(&state, "/v2/host").await;
    assert_eq!(status, StatusCode::OK);
    let host: HostInfo = serde_json::from_value(host).unwrap();
    assert_eq!(host.host_name, "node-1");
    assert!(host.software_tpm);
    assert_eq!(host.pcr_banks, vec!["SHA1", "SHA256"]);
    assert!(!host.measured_launch);
    assert_eq!(host.tpm_manufacturer, "IBM");

    let (status, ek) = get(&state, "/v2/ek").await;
    assert_eq!(status, StatusCode::OK);
    let ek: EkInfo = serde_json::from_value(ek).unwrap();
    assert!(ek.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(
        Public::from_tpm2b(&ek.ek_public).unwrap().describe(),
        "RSA-2048"
    );
    assert!(ek.ek_certificate.is_some());

    let nonce = b64::encode(b"n");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            json!({"nonce": b64::encode(&[7u8; 65]), "pcrs": [0], "pcrbanks": ["SHA256"]})
                .to_string()
                .into_bytes(),
            "nonce_too_long",
        ),
        (
            json!({"nonce": nonce, "pcrs": [24], "pcrbanks": ["SHA256"]})
                .to_string()
                .into_bytes(),
            "bad_pcr_index",
        ),
        (
            json!({"nonce": nonce, "pcrs": [300], "pcrbanks": ["SHA256"]})
                .to_string()
                .into_bytes(),
            "bad_request",
        ),
        (
            json!({"nonce": nonce, "pcrs": [-1], "pcrbanks": ["SHA256"]})
                .to_string()
                .into_bytes(),
            "bad_request",
        ),
        (
            json!({"nonce": nonce, "pcrs": [], "pcrbanks": ["SHA256"]})
                .to_string()
                .into_bytes(),
            "no_pcrs",
        ),
        (
            json!({"nonce": nonce, "pcrs": [0], "pcrbanks": []})
                .to_string()
                .into_bytes(),
            "no_pcr_banks",
        ),
        (
            json!({"nonce": nonce, "pcrs": [0], "pcrbanks": ["MD5"]})
                .to_string()
                .into_bytes(),
            "unknown_pcr_bank",
        ),
        (
            json!({"nonce": nonce, "pcrs": [0], "pcrbanks": ["SHA384"]})
                .to_string()
                .into_bytes(),
            "pcr_bank_not_allocated",
        ),
        (
            json!({"nonce": "not base64!", "pcrs": [0], "pcrbanks": ["SHA256"]})
                .to_string()
                .into_bytes(),
            "bad_request",
        ),
        (
            json!({"nonce": nonce, "pcrs": [0], "pcrbanks": ["SHA256"], "extra": 1})
                .to_string()
                .into_bytes(),
            "bad_request",
        ),
        (b"{not json".to_vec(), "bad_request"),
        (Vec::new(), "bad_request"),
        (
            vec![b' '; nodetrust_proto::agent::MAX_REQUEST_BODY + 1],
            "body_too_large",
        ),
    ];
    for (body, reason) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        let (status, err) = call(
            &state,
            "POST",
            "/v2/tpm/quote",
            Some(&basic(USER, PASSWORD)),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{shown}: {err}");
        assert_eq!(err["reason"], reason, "{shown}: {err}");
        assert!(err["error"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let (status, err) = get(&state, "/nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["reason"], "not_found");

    // Still serving after all that.
    let (status, _) = post(
        &state,
        "/v2/tpm/quote",
        json!({"nonce": nonce, "pcrs": [0, 0, 23], "pcrbanks": ["SHA256", "SHA256"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The TPM goes away under a running agent: a 503 that says what is wrong, not a crash.
    drop(tpm);
    let (status, err) = post(
        &state,
        "/v2/tpm/quote",
        json!({"nonce": nonce, "pcrs": [0], "pcrbanks": ["SHA256"]}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["reason"], "tpm_missing", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ak_survives_agent_restart_and_tpm_reboot() {
    let mut tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let none = dir.path().join("none");

    let first = state(open(&tpm, &state_dir, AkAlgorithm::EccP256), &none, &none);
    let (_, aik) = get(&first, "/v2/aik").await;
    let aik: AikInfo = serde_json::from_value(aik).unwrap();
    drop(first);

    // Agent restart.
    let second = state(open(&tpm, &state_dir, AkAlgorithm::EccP256), &none, &none);
    let (_, again) = get(&second, "/v2/aik").await;
    assert_eq!(serde_json::from_value::<AikInfo>(again).unwrap(), aik);
    drop(second);

    // Node reboot: PCRs reset, resetCount moves, the AK stays.
    tpm.reboot().unwrap();
    let third = state(open(&tpm, &state_dir, AkAlgorithm::EccP256), &none, &none);
    let (status, body) = post(
        &third,
        "/v2/tpm/quote",
        json!({"nonce": b64::encode(b"r"), "pcrs": [0, 7], "pcrbanks": ["SHA256"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resp: QuoteResponse = serde_json::from_value(body).unwrap();
    assert_eq!(resp.aik, Some(aik.aik.clone()));
    let ak = Public::from_tpm2b(&aik.aik).unwrap();
    let v = verify_quote(&ak, &resp.quote, &resp.signature, &pcr_values(&resp), b"r").unwrap();
    assert!(v.attest().clock_info.reset_count >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ima_entries_from_an_offset_as_the_log_grows() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ima = dir.path().join("binary_runtime_measurements");
    let entries: Vec<Vec<u8>> = (0..30)
        .map(|i| ima_entry(&format!("/usr/bin/t{i}")))
        .collect();
    std::fs::write(&ima, entries[..10].concat()).unwrap();
    let attester = open(&tpm, &dir.path().join("state"), AkAlgorithm::EccP256);
    let state = state(attester, &dir.path().join("none"), &ima);

    // A quote without `ima_offset` carries no IMA log.
    let (status, body) = post(
        &state,
        "/v2/tpm/quote",
        json!({"nonce": b64::encode(b"n"), "pcrs": [10], "pcrbanks": ["SHA256"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("ima_log").is_none(), "{body}");

    // With it, the entries from there.
    let (status, body) = post(
        &state,
        "/v2/tpm/quote",
        json!({"nonce": b64::encode(b"n"), "pcrs": [10], "pcrbanks": ["SHA256"], "ima_offset": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let resp: QuoteResponse = serde_json::from_value(body).unwrap();
    let got = resp.ima_log.unwrap();
    assert_eq!((got.start, got.count, got.total), (4, 6, Some(10)));
    assert_eq!(got.log, entries[4..10].concat());

    // The log grows; the next answer from entry 10 reads only the new entries.
    std::fs::write(&ima, entries.concat()).unwrap();
    let read_before = state.0.ima.bytes_read();
    let (status, body) = post(&state, "/v2/ima", json!({"offset": 10, "max_entries": 15})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got: ImaEntries = serde_json::from_value(body).unwrap();
    assert_eq!(
        (got.start, got.count, got.more, got.total),
        (10, 15, true, None)
    );
    assert_eq!(got.log, entries[10..25].concat());
    let new_bytes: usize = entries[10..].iter().map(Vec::len).sum();
    assert!(state.0.ima.bytes_read() - read_before <= new_bytes as u64);
    let (_, body) = post(&state, "/v2/ima", json!({"offset": 25})).await;
    let got: ImaEntries = serde_json::from_value(body).unwrap();
    assert_eq!(
        (got.start, got.count, got.more, got.total),
        (25, 5, false, Some(30))
    );
    assert_eq!(got.log, entries[25..].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_log_the_verifier_holds_is_left_out_while_it_is_unchanged() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let eventlog = dir.path().join("binary_bios_measurements");
    std::fs::write(&eventlog, b"\x00\x00\x00\x00 pretend TCG event log").unwrap();
    let attester = open(&tpm, &dir.path().join("state"), AkAlgorithm::Rsa2048);
    let state = state(attester, &eventlog, &dir.path().join("no-ima"));
    // The log's SHA-256, as sha256sum computes it.
    let sha256sum = || {
        let out = std::process::Command::new("sha256sum")
            .arg(&eventlog)
            .output()
            .unwrap();
        assert!(out.status.success());
        hex::decode(&String::from_utf8(out.stdout).unwrap()[..64]).unwrap()
    };
    let quote = |known: Option<Vec<u8>>| {
        let state = &state;
        async move {
            let mut req =
                json!({"nonce": b64::encode(&[7u8; 32]), "pcrs": [0, 7], "pcrbanks": ["SHA256"]});
            if let Some(k) = known {
                req["known_event_log_sha256"] = json!(b64::encode(&k));
            }
            let (status, body) = post(state, "/v2/tpm/quote", req).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            serde_json::from_value::<QuoteResponse>(body).unwrap()
        }
    };
    // Named by nobody: the log and its digest.
    let digest = sha256sum();
    let r = quote(None).await;
    assert_eq!(
        r.event_log.as_deref(),
        Some(&std::fs::read(&eventlog).unwrap()[..])
    );
    assert_eq!(r.event_log_sha256.as_ref(), Some(&digest));
    // Named: left out, the digest stands for it.
    let r = quote(Some(digest.clone())).await;
    assert_eq!(
        (r.event_log, r.event_log_sha256.as_ref()),
        (None, Some(&digest))
    );
    // Another digest named: sent.
    let r = quote(Some(vec![0; 32])).await;
    assert!(r.event_log.is_some());
    // The log changed (a new boot): sent although the old digest is named.
    std::fs::write(&eventlog, b"\x00\x00\x00\x00 another boot's log").unwrap();
    let r = quote(Some(digest.clone())).await;
    assert!(r.event_log.is_some());
    assert_eq!(r.event_log_sha256, Some(sha256sum()));
    assert_ne!(sha256sum(), digest);
    // No log: neither.
    std::fs::remove_file(&eventlog).unwrap();
    let r = quote(Some(digest)).await;
    assert_eq!((r.event_log, r.event_log_sha256), (None, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcr_values_and_the_ak_the_verifier_holds_are_left_out_while_unchanged() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attester = open(&tpm, &dir.path().join("state"), AkAlgorithm::Rsa2048);
    let state = state(
        attester,
        &dir.path().join("no-log"),
        &dir.path().join("no-ima"),
    );
    let (status, aik) = get(&state, "/v2/aik").await;
    assert_eq!(status, StatusCode::OK, "{aik}");
    let aik: AikInfo = serde_json::from_value(aik).unwrap();
    let aik_name = hex::decode(&aik.name).unwrap();
    let quote_naming = |known: Option<Vec<u8>>, ak_name: Option<Vec<u8>>| {
        let state = &state;
        async move {
            let mut req =
                json!({"nonce": b64::encode(&[7u8; 32]), "pcrs": [7, 0], "pcrbanks": ["SHA256"]});
            if let Some(k) = known {
                req["known_pcr_digest"] = json!(b64::encode(&k));
            }
            if let Some(n) = ak_name {
                req["known_aik_name"] = json!(b64::encode(&n));
            }
            let (status, body) = post(state, "/v2/tpm/quote", req).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            serde_json::from_value::<QuoteResponse>(body).unwrap()
        }
    };
    let quote = |known: Option<Vec<u8>>| quote_naming(known, None);
    // The AK: left out when the request names it (its Name, as `GET /v2/aik` gives it), sent
    // when another is named.
    let r = quote_naming(None, Some(aik_name.clone())).await;
    assert_eq!(r.aik, None);
    assert!(r.pcrs.is_some());
    let mut other = aik_name.clone();
    other[5] ^= 1;
    let r = quote_naming(None, Some(other)).await;
    assert_eq!(r.aik, Some(aik.aik.clone()));
    // Named by nobody: the values and their digest, which is the SHA-256 of the values in
    // the order of their indices (TPM 2.0 Part 1, the quote's pcrDigest).
    let r = quote(None).await;
    let values = pcr_values(&r);
    let mut concatenated = Vec::new();
    for index in [0u8, 7] {
        concatenated.extend_from_slice(values.get(HashAlg::Sha256, index).unwrap());
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &concatenated)
        .as_ref()
        .to_vec();
    assert_eq!(r.pcr_digest.as_ref(), Some(&digest));
    // Named: left out, the digest stands for them.
    let r = quote(Some(digest.clone())).await;
    assert_eq!((r.pcrs, r.pcr_digest.as_ref()), (None, Some(&digest)));
    // Another digest named: sent.
    let r = quote(Some(vec![0; 32])).await;
    assert!(r.pcrs.is_some());
    // A PCR extended: sent although the old digest is named, with the new digest.
    tpm2::run(
        &tpm,
        "tpm2_pcrextend",
        &["7:sha256=00000000000000000000000000000000000000000000000000000000000000bb"],
    )
    .unwrap();
    let r = quote(Some(digest.clone())).await;
    assert!(r.pcrs.is_some());
    assert!(r.pcr_digest.is_some());
    assert_ne!(r.pcr_digest, Some(digest));
}
