//! Software MakeCredential round trips against a software ActivateCredential (RSA: OAEP
//! decryption with the EK's private key; ECC: ECDH with it). The proof against a real TPM
//! (swtpm) is in the nodetrust-tpm crate's tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use aws_lc_rs::{agreement, rsa};
use nodetrust_tpm_wire::alg::id;
use nodetrust_tpm_wire::codec::Reader;
use nodetrust_tpm_wire::credential::{kdfe, make_credential, unwrap_with_seed, CredentialError};
use nodetrust_tpm_wire::der::parse_spki;
use nodetrust_tpm_wire::public::{attr, EccCurve, Scheme, SymDef};
use nodetrust_tpm_wire::{HashAlg, Public, PublicKey};

const EK_ATTRS: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::ADMIN_WITH_POLICY
    | attr::RESTRICTED
    | attr::DECRYPT;
const AES128: SymDef = SymDef {
    algorithm: id::AES,
    key_bits: 128,
    mode: id::CFB,
};

fn ek(key: PublicKey) -> Public {
    Public::build(
        HashAlg::Sha256,
        EK_ATTRS,
        &[0u8; 32],
        AES128,
        Scheme {
            scheme: id::NULL,
            hash: None,
        },
        &key,
    )
    .unwrap()
}

#[test]
fn rsa_ek_round_trip_and_binding_to_the_name() {
    let kp = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).unwrap();
    let spki = {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair;
        kp.public_key().as_der().unwrap().as_ref().to_vec()
    };
    let ek = ek(parse_spki(&spki).unwrap());
    let ak_name = [&id::SHA256.to_be_bytes()[..], &[7u8; 32]].concat();
    let secret = b"0123456789abcdef0123456789abcdef";
    let cred = make_credential(&ek, &ak_name, secret).unwrap();

    let dec = rsa::OaepPrivateDecryptingKey::new(
        rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8(&kp)).unwrap(),
    )
    .unwrap();
    let mut out = vec![0u8; 256];
    let seed = dec
        .decrypt(
            &rsa::OAEP_SHA256_MGF1SHA256,
            &cred.encrypted_secret,
            &mut out,
            Some(b"IDENTITY\0"),
        )
        .unwrap()
        .to_vec();
    assert_eq!(
        unwrap_with_seed(HashAlg::Sha256, 128, &seed, &ak_name, &cred.blob).unwrap(),
        secret
    );

    let other_name = [&id::SHA256.to_be_bytes()[..], &[8u8; 32]].concat();
    assert_eq!(
        unwrap_with_seed(HashAlg::Sha256, 128, &seed, &other_name, &cred.blob),
        Err(CredentialError::Integrity)
    );
    let mut altered = cred.blob.clone();
    *altered.last_mut().unwrap() ^= 1;
    assert_eq!(
        unwrap_with_seed(HashAlg::Sha256, 128, &seed, &ak_name, &altered),
        Err(CredentialError::Integrity)
    );
    assert!(matches!(
        make_credential(&ek, &ak_name, &[0u8; 33]),
        Err(CredentialError::SecretTooLong { .. })
    ));
}

fn pkcs8(kp: &rsa::KeyPair) -> Vec<u8> {
    use aws_lc_rs::encoding::AsDer;
    let der: aws_lc_rs::encoding::Pkcs8V1Der = kp.as_der().unwrap();
    der.as_ref().to_vec()
}

#[test]
fn ecc_ek_round_trip_on_p256_and_p384() {
    for (alg, curve) in [
        (&agreement::ECDH_P256, EccCurve::NistP256),
        (&agreement::ECDH_P384, EccCurve::NistP384),
    ] {
        let ek_priv = agreement::PrivateKey::generate(alg).unwrap();
        let point = ek_priv.compute_public_key().unwrap().as_ref().to_vec();
        let n = curve.coordinate_size();
        let ek = ek(PublicKey::Ecc {
            curve,
            x: point[1..1 + n].to_vec(),
            y: point[1 + n..].to_vec(),
        });
        let ak_name = [&id::SHA256.to_be_bytes()[..], &[9u8; 32]].concat();
        let cred = make_credential(&ek, &ak_name, b"secret").unwrap();

        // ActivateCredential's ECC half: ECDH with the EK's private key, then KDFe.
        let mut r = Reader::new(&cred.encrypted_secret);
        let ex = r.tpm2b("x", 66).unwrap().to_vec();
        let ey = r.tpm2b("y", 66).unwrap().to_vec();
        let eph = [&[4u8][..], &ex, &ey].concat();
        let z = agreement::agree(
            &ek_priv,
            agreement::UnparsedPublicKey::new(alg, &eph),
            (),
            |z| Ok(z.to_vec()),
        )
        .unwrap();
        let seed = kdfe(HashAlg::Sha256, &z, b"IDENTITY", &ex, &point[1..1 + n], 256);
        assert_eq!(
            unwrap_with_seed(HashAlg::Sha256, 128, &seed, &ak_name, &cred.blob).unwrap(),
            b"secret"
        );
    }
}
