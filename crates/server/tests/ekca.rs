//! EK certificates from a real (software) TPM: accepted when they chain to the configured
//! manufacturer CA bundle, refused with the reason otherwise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use nodetrust_server::ekca::EkCaBundle;
use nodetrust_testkit::{tpm2, Swtpm};
use nodetrust_tpm_wire::Public;

/// The swtpm's RSA EK public area and its NV certificate.
fn swtpm_ek(tpm: &Swtpm) -> (Public, Vec<u8>) {
    tpm2::run(
        tpm,
        "tpm2_readpublic",
        &["-c", "0x81010001", "-o", &tpm2::path(tpm, "ek.pub")],
    )
    .unwrap();
    tpm2::run(
        tpm,
        "tpm2_nvread",
        &["-C", "o", "-o", &tpm2::path(tpm, "ek.der"), "0x01c00002"],
    )
    .unwrap();
    let ek = Public::from_either(&std::fs::read(tpm2::path(tpm, "ek.pub")).unwrap()).unwrap();
    let cert = std::fs::read(tpm2::path(tpm, "ek.der")).unwrap();
    (ek, cert)
}

#[tokio::test]
async fn registration_accepts_an_ek_certified_by_the_bundle_and_refuses_one_outside_it() {
    let tpm = Swtpm::start().expect("swtpm (run `make test`, which installs it)");
    let (ek, cert) = swtpm_ek(&tpm);
    let cas = tempfile::tempdir().unwrap();
    std::fs::copy(&tpm.template().issuer_cert, cas.path().join("issuer.pem")).unwrap();
    std::fs::copy(&tpm.template().root_cert, cas.path().join("root.pem")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/s.db", dir.path().display());
    let ca_dir = cas.path().to_path_buf();
    let h = common::Harness::with_config(dir, db, |c| c.ek_ca_dir = Some(ca_dir)).await;
    let mut req = common::SoftAgent::new("node-ek", "uuid-ek").register_request();
    req.ek_public = ek.tpm2b_bytes();
    req.ek_certificate = Some(cert);
    let body = serde_json::to_value(&req).unwrap();
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/hosts/register",
            common::Auth::Agent,
            Some(body),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert!(
        v["credential_blob"].is_string() && v["encrypted_secret"].is_string(),
        "{v}"
    );
    // The same EK with a certificate for another key: refused, naming why.
    let other = nodetrust_testkit::soft::SoftTpm::new().unwrap();
    req.ek_public = other.ek_public().tpm2b_bytes();
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/hosts/register",
            common::Auth::Agent,
            Some(serde_json::to_value(&req).unwrap()),
        )
        .await;
    assert_eq!(s.as_u16(), 403, "{v}");
    assert_eq!(v["reason"], "ek_not_endorsed");
    assert!(v["error"].as_str().unwrap().contains("another key"), "{v}");
}

#[tokio::test]
async fn an_ek_certificate_can_be_endorsed_without_a_ca_bundle() {
    let tpm = Swtpm::start().expect("swtpm (run `make test`, which installs it)");
    let (ek, cert) = swtpm_ek(&tpm);
    let h = common::Harness::new().await;
    let mut req = common::SoftAgent::new("node-ek", "uuid-ek").register_request();
    req.ek_public = ek.tpm2b_bytes();
    req.ek_certificate = Some(cert.clone());
    let body = serde_json::to_value(&req).unwrap();
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/hosts/register",
            common::Auth::Agent,
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["reason"].as_str()),
        (403, Some("ek_not_endorsed")),
        "{v}"
    );
    // A certificate and a public area of different keys are refused.
    let other = nodetrust_testkit::soft::SoftTpm::new().unwrap();
    let both = serde_json::json!({
        "ek_public": nodetrust_proto::b64::encode(&other.ek_public().tpm2b_bytes()),
        "certificate": nodetrust_proto::b64::encode(&cert),
    });
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/tpm-endorsements",
            common::Auth::Admin,
            Some(both),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["reason"].as_str()),
        (400, Some("certificate_mismatch")),
        "{v}"
    );
    // The certificate alone (PEM), for this hardware UUID.
    let pem = nodetrust_tpm_wire::der::pem("CERTIFICATE", &cert);
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/tpm-endorsements",
            common::Auth::Admin,
            Some(serde_json::json!({"certificate": pem, "hardware_uuid": "uuid-ek"})),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{v}");
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/hosts/register",
            common::Auth::Agent,
            Some(body),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert!(v["challenge_id"].is_string());
}

#[test]
fn swtpm_ek_certificate_chains_to_its_ca_and_nothing_else() {
    let tpm = Swtpm::start().expect("swtpm (run `make test`, which installs it)");
    let (ek, cert) = swtpm_ek(&tpm);
    let info = tpm.template();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&info.issuer_cert, dir.path().join("issuer.pem")).unwrap();
    std::fs::copy(&info.root_cert, dir.path().join("root.pem")).unwrap();
    let bundle = EkCaBundle::load_dir(dir.path()).unwrap();
    let ca = bundle.check(&cert, &ek).unwrap();
    assert!(!ca.is_empty());
    // Root alone: the intermediate is missing, so the chain does not close.
    let root_only = tempfile::tempdir().unwrap();
    std::fs::copy(&info.root_cert, root_only.path().join("root.pem")).unwrap();
    let err = EkCaBundle::load_dir(root_only.path())
        .unwrap()
        .check(&cert, &ek)
        .unwrap_err();
    assert!(err.contains("does not chain"), "{err}");
    // The intermediate alone is an operator-trusted issuer.
    let issuer_only = tempfile::tempdir().unwrap();
    std::fs::copy(&info.issuer_cert, issuer_only.path().join("issuer.pem")).unwrap();
    assert!(EkCaBundle::load_dir(issuer_only.path())
        .unwrap()
        .check(&cert, &ek)
        .is_ok());
    // A certificate for another key than the EK presented.
    let other = nodetrust_testkit::soft::SoftTpm::new().unwrap();
    let err = bundle.check(&cert, other.ek_public()).unwrap_err();
    assert!(err.contains("another key"), "{err}");
    // No CA configured, garbage certificate.
    assert!(EkCaBundle::default()
        .check(&cert, &ek)
        .unwrap_err()
        .contains("no manufacturer CA"));
    assert!(bundle
        .check(b"garbage", &ek)
        .unwrap_err()
        .contains("unreadable"));
}
