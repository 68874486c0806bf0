//! Software MakeCredential (`nodetrust_tpm_wire::credential::make_credential`) against a real
//! TPM's ActivateCredential (swtpm): for the RSA-2048 EK, an ECC P-256 EK from the TCG default
//! template and swtpm's persisted ECC P-384 EK, a challenge made for (EK, AK Name) returns the
//! secret; one made for another key's Name, or altered in transit, is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use nodetrust_testkit::Swtpm;
use nodetrust_tpm::tss::{activate_credential_with, open_persistent};
use nodetrust_tpm_wire::credential::make_credential;
use nodetrust_tpm_wire::Public;
use std::str::FromStr as _;
use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection};
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::PublicBuffer;
use tss_esapi::traits::Marshall as _;
use tss_esapi::{Context, TctiNameConf};

fn public_of(ctx: &mut Context, key: KeyHandle) -> Public {
    let (p, name, _) = ctx.execute_without_session(|c| c.read_public(key)).unwrap();
    let bytes = PublicBuffer::try_from(p).unwrap().marshall().unwrap();
    let parsed = Public::from_tpm2b(&bytes).unwrap();
    assert_eq!(
        parsed.name(),
        name.value(),
        "our Name computation matches the TPM's"
    );
    parsed
}

/// Runs the accept / wrong-name / altered-blob / altered-secret cases for one EK.
fn check_ek(ctx: &mut Context, ek: KeyHandle, ak: KeyHandle, other_name: &[u8], label: &str) {
    let ek_pub = public_of(ctx, ek);
    let ak_pub = public_of(ctx, ak);
    let secret: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(7).wrapping_add(label.len() as u8))
        .collect();

    let c = make_credential(&ek_pub, &ak_pub.name(), &secret).unwrap();
    let got = activate_credential_with(ctx, ak, ek, &c.blob, &c.encrypted_secret)
        .unwrap_or_else(|e| panic!("{label}: ActivateCredential refused a good challenge: {e}"));
    assert_eq!(got, secret, "{label}: the TPM recovered the secret");

    let wrong = make_credential(&ek_pub, other_name, &secret).unwrap();
    assert!(
        activate_credential_with(ctx, ak, ek, &wrong.blob, &wrong.encrypted_secret).is_err(),
        "{label}: a challenge for another key's Name must be refused"
    );

    let mut blob = c.blob.clone();
    let last = blob.len() - 1;
    blob[last] ^= 0x01;
    assert!(
        activate_credential_with(ctx, ak, ek, &blob, &c.encrypted_secret).is_err(),
        "{label}: an altered credential blob must be refused"
    );
    let mut blob = c.blob.clone();
    blob[4] ^= 0x80; // inside the integrity HMAC
    assert!(
        activate_credential_with(ctx, ak, ek, &blob, &c.encrypted_secret).is_err(),
        "{label}: altered HMAC"
    );

    let mut es = c.encrypted_secret.clone();
    es[10] ^= 0x01;
    assert!(
        activate_credential_with(ctx, ak, ek, &c.blob, &es).is_err(),
        "{label}: an altered encrypted secret must be refused"
    );

    // Still works afterwards (nothing leaked: sessions flushed on the error paths).
    let c2 = make_credential(&ek_pub, &ak_pub.name(), b"again").unwrap();
    assert_eq!(
        activate_credential_with(ctx, ak, ek, &c2.blob, &c2.encrypted_secret).unwrap(),
        b"again"
    );
}

#[test]
fn make_credential_is_accepted_by_swtpm() {
    let tpm = Swtpm::start().unwrap();
    let mut ctx = Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap();

    // The AK: an ECC restricted signing key under the RSA EK (ECC keeps the test fast).
    let rsa_ek = ek::create_ek_object(&mut ctx, AsymmetricAlgorithm::Rsa, None).unwrap();
    let created = ak::create_ak_2(
        &mut ctx,
        rsa_ek,
        HashingAlgorithm::Sha256,
        AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        SignatureSchemeAlgorithm::EcDsa,
        None,
        None,
    )
    .unwrap();
    let ak = ak::load_ak(
        &mut ctx,
        rsa_ek,
        None,
        created.out_private,
        created.out_public,
    )
    .unwrap();

    // The RSA EK recreated from the template is the one swtpm persisted (same Name), so its
    // certificate in NV belongs to it.
    let persisted_rsa = open_persistent(&mut ctx, 0x8101_0001).unwrap();
    assert_eq!(
        public_of(&mut ctx, rsa_ek).name(),
        public_of(&mut ctx, persisted_rsa).name()
    );

    let rsa_name = public_of(&mut ctx, rsa_ek).name();
    check_ek(&mut ctx, rsa_ek, ak, &rsa_name, "RSA-2048 EK");
    ctx.flush_context(ObjectHandle::from(rsa_ek)).unwrap();

    // ECC P-256 EK from the TCG default template (L-2).
    let ecc_ek = ek::create_ek_object(&mut ctx, AsymmetricAlgorithm::Ecc, None).unwrap();
    let ecc_pub = public_of(&mut ctx, ecc_ek);
    assert_eq!(ecc_pub.describe(), "ECC P-256");
    check_ek(&mut ctx, ecc_ek, ak, &rsa_name, "ECC P-256 EK");
    ctx.flush_context(ObjectHandle::from(ecc_ek)).unwrap();

    // ECC P-384 EK persisted by swtpm_setup (high-range template, SHA-384 name algorithm).
    let p384 = open_persistent(&mut ctx, 0x8101_0016).unwrap();
    let p384_pub = public_of(&mut ctx, p384);
    assert_eq!(p384_pub.describe(), "ECC P-384");
    check_ek(&mut ctx, p384, ak, &ecc_pub.name(), "ECC P-384 EK");

    ctx.flush_context(ObjectHandle::from(ak)).unwrap();
}
