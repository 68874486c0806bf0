//! A software attester: **never trustworthy**.
//!
//! It behaves like a TPM from the outside: its AK is an ECDSA P-256 key (or, with
//! [`SoftwareAttester::generate_with_rsa_ak`], an RSA key signing RSASSA-SHA256) with the
//! attributes of a restricted signing key, its quotes are real `TPMS_ATTEST` bytes with real signatures, and it
//! answers MakeCredential challenges for its ECC P-256 "EK" (ECDH, KDFe, then
//! [`unwrap_with_seed`]). But its keys live in
//! ordinary memory, so anything it signs proves nothing about a machine: the Trust Server's fleet
//! simulator and tests use it to stand up many hosts. It reports itself as a software TPM
//! ([`TpmFacts::software`]), and a verifier's default policy must reject its evidence.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_lc_rs::{agreement, rand, signature};
use nodetrust_tpm_wire::alg::id;
use nodetrust_tpm_wire::attest::{ST_ATTEST_QUOTE, TPM_GENERATED};
use nodetrust_tpm_wire::codec::{Reader, Writer};
use nodetrust_tpm_wire::credential::{kdfe, unwrap_with_seed};
use nodetrust_tpm_wire::pcr::{BankSelection, PCR_COUNT};
use nodetrust_tpm_wire::{HashAlg, PcrSelection, PcrValues, Public};

use crate::{check_selection, Attester, EkData, QuoteOutput, TpmError, TpmFacts};

/// TCG EK Credential Profile policy A (PolicySecret(TPM_RH_ENDORSEMENT)), SHA-256.
const POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];
/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign.
const AK_ATTRIBUTES: u32 = nodetrust_tpm_wire::public::attr::AK;
/// fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt.
const EK_ATTRIBUTES: u32 = 0x0003_00b2;
const P256: u16 = 0x0003;

struct State {
    pcrs: PcrValues,
    reset_count: u32,
    started: Instant,
}

/// The AK's private key.
enum AkKey {
    Ecdsa(signature::EcdsaKeyPair),
    /// RSA keys are slow to generate; a simulator may share one among many attesters.
    Rsa(Arc<signature::RsaKeyPair>),
}

/// A TPM made of software keys. See the module documentation: never trustworthy.
pub struct SoftwareAttester {
    ak: AkKey,
    ak_public: Vec<u8>,
    ak_name: Vec<u8>,
    ek: agreement::PrivateKey,
    ek_public: Vec<u8>,
    ek_x: Vec<u8>,
    ek_certificate: Option<Vec<u8>>,
    state: Mutex<State>,
}

impl std::fmt::Debug for SoftwareAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareAttester")
            .field("ak_name", &hex::encode(&self.ak_name))
            .finish_non_exhaustive()
    }
}

fn ecc_public(
    attributes: u32,
    auth_policy: &[u8],
    symmetric: bool,
    ecdsa: bool,
    point: &[u8],
) -> Result<Vec<u8>, TpmError> {
    let bad = |_| TpmError::Tpm {
        op: "software key",
        detail: "cannot encode public area".into(),
        rc: None,
    };
    let x = point.get(1..33).ok_or(TpmError::Tpm {
        op: "software key",
        detail: "bad point".into(),
        rc: None,
    })?;
    let y = point.get(33..65).ok_or(TpmError::Tpm {
        op: "software key",
        detail: "bad point".into(),
        rc: None,
    })?;
    let mut w = Writer::new();
    w.u16(id::ECC).u16(id::SHA256).u32(attributes);
    w.tpm2b(auth_policy).map_err(bad)?;
    if symmetric {
        w.u16(id::AES).u16(128).u16(id::CFB);
    } else {
        w.u16(id::NULL);
    }
    if ecdsa {
        w.u16(id::ECDSA).u16(id::SHA256);
    } else {
        w.u16(id::NULL);
    }
    w.u16(P256).u16(id::NULL);
    w.tpm2b(x).map_err(bad)?;
    w.tpm2b(y).map_err(bad)?;
    let tpmt = w.into_bytes();
    let mut out = Writer::new();
    out.tpm2b(&tpmt).map_err(bad)?;
    Ok(out.into_bytes())
}

fn crypto(what: &'static str) -> TpmError {
    TpmError::Tpm {
        op: "software attester",
        detail: what.into(),
        rc: None,
    }
}

/// Boot-time PCR values of a PC Client TPM: 0-16 and 23 zero, 17-22 all-ones.
fn reset_pcrs() -> PcrValues {
    let mut pcrs = PcrValues::new();
    for bank in [HashAlg::Sha1, HashAlg::Sha256] {
        for i in 0..PCR_COUNT {
            let fill = if (17..=22).contains(&i) { 0xff } else { 0 };
            // Index < 24 and the length is the bank's size: insert cannot fail.
            let _ = pcrs.insert(bank, i, vec![fill; bank.size()]);
        }
    }
    pcrs
}

impl SoftwareAttester {
    /// A new software TPM with fresh keys (an ECDSA P-256 AK) and reset PCRs.
    pub fn generate() -> Result<Self, TpmError> {
        let ak = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| crypto("AK generation"))?;
        use signature::KeyPair as _;
        let ak_public = ecc_public(AK_ATTRIBUTES, &[], false, true, ak.public_key().as_ref())?;
        Self::with_ak(AkKey::Ecdsa(ak), ak_public)
    }

    /// A new software TPM with a fresh EK whose AK is `ak`, an RSA key (2048 bits or more)
    /// signing RSASSA-SHA256 as a TPM's default RSA AK does. RSA keys take long to generate, so
    /// a simulator may give one key to many attesters.
    pub fn generate_with_rsa_ak(ak: Arc<signature::RsaKeyPair>) -> Result<Self, TpmError> {
        use signature::KeyPair as _;
        let modulus = ak
            .public_key()
            .modulus()
            .big_endian_without_leading_zero()
            .to_vec();
        let key_bits = u16::try_from(modulus.len().saturating_mul(8))
            .map_err(|_| crypto("RSA AK too large"))?;
        let public = Public::ak(&nodetrust_tpm_wire::PublicKey::Rsa {
            modulus,
            exponent: 65537,
            key_bits,
        })
        .map_err(|_| crypto("RSA AK public area"))?;
        Self::with_ak(AkKey::Rsa(ak), public.tpm2b_bytes())
    }

    fn with_ak(ak: AkKey, ak_public: Vec<u8>) -> Result<Self, TpmError> {
        let ak_name = Public::from_tpm2b(&ak_public)
            .map_err(|_| crypto("AK public area"))?
            .name();
        let ek = agreement::PrivateKey::generate(&agreement::ECDH_P256)
            .map_err(|_| crypto("EK generation"))?;
        let ek_point = ek
            .compute_public_key()
            .map_err(|_| crypto("EK public key"))?;
        let ek_public = ecc_public(
            EK_ATTRIBUTES,
            &POLICY_A_SHA256,
            true,
            false,
            ek_point.as_ref(),
        )?;
        let ek_x = ek_point
            .as_ref()
            .get(1..33)
            .ok_or_else(|| crypto("EK point"))?
            .to_vec();
        Ok(Self {
            ak,
            ak_public,
            ak_name,
            ek,
            ek_public,
            ek_x,
            ek_certificate: None,
            state: Mutex::new(State {
                pcrs: reset_pcrs(),
                reset_count: 0,
                started: Instant::now(),
            }),
        })
    }

    /// The EK's public point, uncompressed SEC1 (`04 || x || y`): what an EK certificate
    /// certifies.
    pub fn ek_point(&self) -> Result<Vec<u8>, TpmError> {
        self.ek
            .compute_public_key()
            .map(|p| p.as_ref().to_vec())
            .map_err(|_| crypto("EK public key"))
    }

    /// Gives the EK a certificate (DER), returned by [`Attester::ek`] from now on.
    pub fn set_ek_certificate(&mut self, der: Vec<u8>) {
        self.ek_certificate = Some(der);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the PCR map half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Extends `digest` into PCR `index` of `bank`, as TPM2_PCR_Extend does.
    pub fn extend(&self, bank: HashAlg, index: u8, digest: &[u8]) -> Result<(), TpmError> {
        let mut st = self.state();
        let old = st
            .pcrs
            .get(bank, index)
            .ok_or_else(|| TpmError::InvalidInput(format!("no PCR {index} in bank {bank}")))?
            .to_vec();
        if digest.len() != bank.size() {
            return Err(TpmError::InvalidInput(format!(
                "a {bank} digest is {} bytes",
                bank.size()
            )));
        }
        st.pcrs
            .insert(bank, index, bank.extend(&old, digest))
            .map_err(|e| TpmError::InvalidInput(e.to_string()))
    }

    /// A simulated reboot: PCRs reset and resetCount increments.
    pub fn reboot(&self) {
        let mut st = self.state();
        st.pcrs = reset_pcrs();
        st.reset_count = st.reset_count.wrapping_add(1);
    }

    fn normalize(selection: &PcrSelection) -> PcrSelection {
        let mut banks: Vec<BankSelection> = Vec::new();
        for b in &selection.banks {
            if let Some(existing) = banks.iter_mut().find(|e| e.hash == b.hash) {
                existing.pcrs.extend_from_slice(&b.pcrs);
            } else {
                banks.push(b.clone());
            }
        }
        for b in &mut banks {
            b.pcrs.sort_unstable();
            b.pcrs.dedup();
        }
        PcrSelection { banks }
    }

    fn read(pcrs: &PcrValues, selection: &PcrSelection) -> Result<PcrValues, TpmError> {
        let mut out = PcrValues::new();
        for b in &selection.banks {
            for i in &b.pcrs {
                let v = pcrs
                    .get(b.hash, *i)
                    .ok_or_else(|| TpmError::BankNotAllocated(b.hash.name().to_string()))?;
                out.insert(b.hash, *i, v.to_vec())
                    .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
            }
        }
        Ok(out)
    }
}

impl Attester for SoftwareAttester {
    fn facts(&self) -> Result<TpmFacts, TpmError> {
        Ok(TpmFacts {
            manufacturer: "NTSW".into(),
            vendor: "nodetrust software attester (never trustworthy)".into(),
            firmware_version: "0.0.0.0".into(),
            pcr_banks: vec![HashAlg::Sha1, HashAlg::Sha256],
            measured_launch: false,
            software: true,
        })
    }

    fn ek(&self) -> Result<EkData, TpmError> {
        Ok(EkData {
            public: self.ek_public.clone(),
            certificate: self.ek_certificate.clone(),
        })
    }

    fn ak_public(&self) -> Result<Vec<u8>, TpmError> {
        Ok(self.ak_public.clone())
    }

    fn pcr_read(&self, selection: &PcrSelection) -> Result<PcrValues, TpmError> {
        check_selection(selection)?;
        Self::read(&self.state().pcrs, &Self::normalize(selection))
    }

    fn quote(&self, nonce: &[u8], selection: &PcrSelection) -> Result<QuoteOutput, TpmError> {
        check_selection(selection)?;
        if nonce.len() > 64 {
            return Err(TpmError::InvalidInput(format!(
                "nonce of {} bytes; at most 64",
                nonce.len()
            )));
        }
        let selection = Self::normalize(selection);
        let (pcrs, reset_count, clock) = {
            let st = self.state();
            (
                Self::read(&st.pcrs, &selection)?,
                st.reset_count,
                st.started.elapsed().as_millis() as u64,
            )
        };
        let (digest, _) =
            nodetrust_tpm_wire::verify::pcr_digest(&selection, &pcrs, HashAlg::Sha256)
                .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        let enc = |_| crypto("encode TPMS_ATTEST");
        let mut w = Writer::new();
        w.u32(TPM_GENERATED).u16(ST_ATTEST_QUOTE);
        w.tpm2b(&self.ak_name).map_err(enc)?;
        w.tpm2b(nonce).map_err(enc)?;
        w.bytes(&clock.to_be_bytes())
            .u32(reset_count)
            .u32(0)
            .bytes(&[1]);
        w.bytes(&0u64.to_be_bytes());
        selection.write(&mut w);
        w.tpm2b(&digest).map_err(enc)?;
        let attest = w.into_bytes();

        let rng = rand::SystemRandom::new();
        let mut w = Writer::new();
        match &self.ak {
            AkKey::Ecdsa(key) => {
                let sig = key.sign(&rng, &attest).map_err(|_| crypto("sign"))?;
                let (r, s) = sig.as_ref().split_at(32);
                w.u16(id::ECDSA).u16(id::SHA256);
                w.tpm2b(r).map_err(enc)?;
                w.tpm2b(s).map_err(enc)?;
            }
            AkKey::Rsa(key) => {
                let mut sig = vec![0u8; key.public_modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, &attest, &mut sig)
                    .map_err(|_| crypto("sign"))?;
                w.u16(id::RSASSA).u16(id::SHA256);
                w.tpm2b(&sig).map_err(enc)?;
            }
        }
        Ok(QuoteOutput {
            attest,
            signature: w.into_bytes(),
            pcrs,
        })
    }

    fn activate_credential(
        &self,
        blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let rejected = |d: &str| TpmError::CredentialRejected {
            detail: d.to_string(),
        };
        let mut r = Reader::new(encrypted_secret);
        let x = r
            .tpm2b("x", 32)
            .map_err(|_| rejected("malformed encrypted secret"))?;
        let y = r
            .tpm2b("y", 32)
            .map_err(|_| rejected("malformed encrypted secret"))?;
        r.finish("encrypted secret")
            .map_err(|_| rejected("malformed encrypted secret"))?;
        let point = nodetrust_tpm_wire::der::sec1_point(
            nodetrust_tpm_wire::public::EccCurve::NistP256,
            x,
            y,
        )
        .ok_or_else(|| rejected("ephemeral point too long"))?;
        let z = agreement::agree(
            &self.ek,
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &point),
            rejected("ephemeral point not on the curve"),
            |z| Ok(z.to_vec()),
        )?;
        let seed = kdfe(HashAlg::Sha256, &z, b"IDENTITY", x, &self.ek_x, 256);
        unwrap_with_seed(HashAlg::Sha256, 128, &seed, &self.ak_name, blob)
            .map_err(|e| rejected(&e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodetrust_tpm_wire::credential::make_credential;

    fn sel() -> PcrSelection {
        PcrSelection {
            banks: vec![
                BankSelection {
                    hash: HashAlg::Sha256,
                    pcrs: vec![0, 7, 17],
                },
                BankSelection {
                    hash: HashAlg::Sha1,
                    pcrs: vec![0],
                },
            ],
        }
    }

    #[test]
    fn quote_verifies() -> Result<(), TpmError> {
        let a = SoftwareAttester::generate()?;
        a.extend(HashAlg::Sha256, 7, &[1u8; 32])?;
        let q = a.quote(b"nonce", &sel())?;
        let ak = Public::from_tpm2b(&a.ak_public()?)
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        let v = nodetrust_tpm_wire::verify_quote(&ak, &q.attest, &q.signature, &q.pcrs, b"nonce")
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        assert_eq!(v.pcrs().len(), 4);
        assert!(
            nodetrust_tpm_wire::verify_quote(&ak, &q.attest, &q.signature, &q.pcrs, b"other")
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn rsa_ak_quote_verifies_and_activates() -> Result<(), TpmError> {
        let key = signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| crypto("RSA generation"))?;
        let a = SoftwareAttester::generate_with_rsa_ak(Arc::new(key))?;
        let ak = Public::from_tpm2b(&a.ak_public()?)
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        nodetrust_tpm_wire::verify::check_ak_attributes(&ak)
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        let q = a.quote(b"nonce", &sel())?;
        let v = nodetrust_tpm_wire::verify_quote(&ak, &q.attest, &q.signature, &q.pcrs, b"nonce")
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        assert_eq!(v.pcrs().len(), 4);
        let mut tampered = q.attest.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        assert!(
            nodetrust_tpm_wire::verify_quote(&ak, &tampered, &q.signature, &q.pcrs, b"nonce")
                .is_err()
        );
        let ek = Public::from_tpm2b(&a.ek()?.public)
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        let c = make_credential(&ek, &ak.name(), b"0123456789abcdef")
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        assert_eq!(
            a.activate_credential(&c.blob, &c.encrypted_secret)?,
            b"0123456789abcdef"
        );
        Ok(())
    }

    #[test]
    fn activation() -> Result<(), TpmError> {
        let a = SoftwareAttester::generate()?;
        let ek = Public::from_tpm2b(&a.ek()?.public)
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        let ak = Public::from_tpm2b(&a.ak_public()?)
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        let c = make_credential(&ek, &ak.name(), b"0123456789abcdef")
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        assert_eq!(
            a.activate_credential(&c.blob, &c.encrypted_secret)?,
            b"0123456789abcdef"
        );
        let wrong = make_credential(&ek, &ek.name(), b"x")
            .map_err(|e| TpmError::InvalidInput(e.to_string()))?;
        assert!(matches!(
            a.activate_credential(&wrong.blob, &wrong.encrypted_secret),
            Err(TpmError::CredentialRejected { .. })
        ));
        Ok(())
    }
}
