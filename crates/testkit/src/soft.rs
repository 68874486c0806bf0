//! A software TPM for verifier tests: real `TPMS_ATTEST` bytes, real ECDSA P-256 signatures by a
//! software AK whose public area is a restricted signing key, and an ECC P-256 EK that answers
//! MakeCredential challenges (software ActivateCredential).
//!
//! It lets server and appraisal tests exercise every check of the verifier without swtpm. It
//! is a test double: its "TPM-resident" attributes are claims, which is why verifiers must
//! treat software TPMs as untrusted unless a flavor allows them.

use std::collections::{BTreeMap, BTreeSet};

use aws_lc_rs::agreement;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use nodetrust_tpm_wire::alg::id;
use nodetrust_tpm_wire::attest::{Attest, ClockInfo};
use nodetrust_tpm_wire::codec::Reader;
use nodetrust_tpm_wire::credential::{kdfe, unwrap_with_seed};
use nodetrust_tpm_wire::pcr::{BankSelection, PcrSelection, PCR_COUNT};
use nodetrust_tpm_wire::public::{attr, EccCurve, PublicKey, Scheme, SymDef};
use nodetrust_tpm_wire::signature::Signature;
use nodetrust_tpm_wire::{HashAlg, PcrValues, Public};

use crate::Result;

/// The TCG default EK policy (PolicySecret(TPM_RH_ENDORSEMENT)), SHA-256.
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// What a quote returns: the signed bytes, the signature, and the PCR values quoted.
#[derive(Debug, Clone)]
pub struct SoftQuote {
    /// `TPMS_ATTEST`.
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// The quoted PCR values.
    pub pcrs: PcrValues,
}

/// A software TPM.
#[derive(Debug)]
pub struct SoftTpm {
    ak: EcdsaKeyPair,
    ak_public: Public,
    ek: agreement::PrivateKey,
    ek_public: Public,
    pcrs: BTreeMap<(HashAlg, u8), Vec<u8>>,
    reset_count: u32,
    restart_count: u32,
    clock: u64,
}

fn p256_xy(point: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let x = point.get(1..33).ok_or("short EC point")?.to_vec();
    let y = point.get(33..65).ok_or("short EC point")?.to_vec();
    Ok((x, y))
}

fn new_ak() -> Result<(EcdsaKeyPair, Public)> {
    let ak =
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|e| format!("AK: {e}"))?;
    let (x, y) = p256_xy(ak.public_key().as_ref())?;
    let public = Public::ak(&PublicKey::Ecc {
        curve: EccCurve::NistP256,
        x,
        y,
    })
    .map_err(|e| format!("AK public: {e}"))?;
    Ok((ak, public))
}

fn initial(bank: HashAlg, pcr: u8) -> Vec<u8> {
    if (17..=22).contains(&pcr) {
        vec![0xff; bank.size()]
    } else {
        vec![0; bank.size()]
    }
}

impl SoftTpm {
    /// A fresh software TPM with SHA-1 and SHA-256 banks at their reset values.
    pub fn new() -> Result<Self> {
        let (ak, ak_public) = new_ak()?;
        let ek = agreement::PrivateKey::generate(&agreement::ECDH_P256)
            .map_err(|e| format!("EK: {e}"))?;
        let ek_point = ek
            .compute_public_key()
            .map_err(|e| format!("EK public: {e}"))?;
        let (x, y) = p256_xy(ek_point.as_ref())?;
        let ek_public = Public::build(
            HashAlg::Sha256,
            attr::FIXED_TPM
                | attr::FIXED_PARENT
                | attr::SENSITIVE_DATA_ORIGIN
                | attr::ADMIN_WITH_POLICY
                | attr::RESTRICTED
                | attr::DECRYPT,
            &EK_POLICY,
            SymDef {
                algorithm: id::AES,
                key_bits: 128,
                mode: id::CFB,
            },
            Scheme {
                scheme: id::NULL,
                hash: None,
            },
            &PublicKey::Ecc {
                curve: EccCurve::NistP256,
                x,
                y,
            },
        )
        .map_err(|e| format!("EK public: {e}"))?;
        let mut tpm = Self {
            ak,
            ak_public,
            ek,
            ek_public,
            pcrs: BTreeMap::new(),
            reset_count: 0,
            restart_count: 0,
            clock: 1_000,
        };
        tpm.reset_pcrs();
        Ok(tpm)
    }

    fn reset_pcrs(&mut self) {
        self.pcrs.clear();
        for bank in [HashAlg::Sha1, HashAlg::Sha256] {
            for pcr in 0..PCR_COUNT {
                self.pcrs.insert((bank, pcr), initial(bank, pcr));
            }
        }
    }

    /// The AK public area.
    pub fn ak_public(&self) -> &Public {
        &self.ak_public
    }

    /// The EK public area.
    pub fn ek_public(&self) -> &Public {
        &self.ek_public
    }

    /// Replaces the AK with a new one (a different TPM, or an attacker's key).
    pub fn replace_ak(&mut self) -> Result<()> {
        let (ak, public) = new_ak()?;
        self.ak = ak;
        self.ak_public = public;
        Ok(())
    }

    /// Extends `digest` into `pcr` of `bank`.
    pub fn extend(&mut self, bank: HashAlg, pcr: u8, digest: &[u8]) {
        let cur = self
            .pcrs
            .remove(&(bank, pcr))
            .unwrap_or_else(|| initial(bank, pcr));
        self.pcrs.insert((bank, pcr), bank.extend(&cur, digest));
    }

    /// The current value of a PCR.
    pub fn pcr(&self, bank: HashAlg, pcr: u8) -> Option<&[u8]> {
        self.pcrs.get(&(bank, pcr)).map(Vec::as_slice)
    }

    /// A reboot: PCRs back to their reset values, resetCount up, restartCount to zero.
    pub fn reboot(&mut self) {
        self.reset_pcrs();
        self.reset_count = self.reset_count.wrapping_add(1);
        self.restart_count = 0;
    }

    /// A TPM restart (`restartCount` + 1: a resume from hibernation; PCRs kept here).
    pub fn restart(&mut self) {
        self.restart_count = self.restart_count.wrapping_add(1);
    }

    /// Advances the TPM clock (`clockInfo.clock`) by `ms` milliseconds (time passing).
    pub fn advance_clock(&mut self, ms: u64) {
        self.clock = self.clock.saturating_add(ms);
    }

    /// Sets the clock counters (to simulate a TPM whose counters went backwards).
    pub fn set_counters(&mut self, reset_count: u32, restart_count: u32) {
        self.reset_count = reset_count;
        self.restart_count = restart_count;
    }

    /// Quotes `selection` with `nonce`, signing with ECDSA P-256 / SHA-256.
    pub fn quote(
        &mut self,
        nonce: &[u8],
        selection: &BTreeMap<HashAlg, BTreeSet<u8>>,
    ) -> Result<SoftQuote> {
        self.clock = self.clock.wrapping_add(10);
        let mut sel = PcrSelection::default();
        let mut h = HashAlg::Sha256.hasher();
        let mut pcrs = PcrValues::new();
        for (bank, indices) in selection {
            let mut list = Vec::new();
            for &i in indices {
                let v = self
                    .pcrs
                    .get(&(*bank, i))
                    .ok_or_else(|| format!("no PCR {bank}:{i}"))?;
                h.update(v);
                pcrs.insert(*bank, i, v.clone())
                    .map_err(|e| e.to_string())?;
                list.push(i);
            }
            sel.banks.push(BankSelection {
                hash: *bank,
                pcrs: list,
            });
        }
        let attest = Attest {
            qualified_signer: self.ak_public.name(),
            extra_data: nonce.to_vec(),
            clock_info: ClockInfo {
                clock: self.clock,
                reset_count: self.reset_count,
                restart_count: self.restart_count,
                safe: true,
            },
            firmware_version: 0x2023_0101,
            pcr_select: sel,
            pcr_digest: h.finish(),
        };
        let attest = attest.to_bytes().map_err(|e| e.to_string())?;
        let sig = self
            .ak
            .sign(&SystemRandom::new(), &attest)
            .map_err(|e| format!("sign: {e}"))?;
        let rs = sig.as_ref();
        let signature = Signature::Ecdsa {
            hash: HashAlg::Sha256,
            r: rs.get(..32).ok_or("short signature")?.to_vec(),
            s: rs.get(32..64).ok_or("short signature")?.to_vec(),
        }
        .to_bytes()
        .map_err(|e| e.to_string())?;
        Ok(SoftQuote {
            attest,
            signature,
            pcrs,
        })
    }

    /// `TPM2_ActivateCredential` in software: recovers the secret of a MakeCredential made for
    /// this EK and the current AK's Name.
    pub fn activate_credential(&self, blob: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>> {
        let mut r = Reader::new(encrypted_secret);
        let ex = r.tpm2b("x", 32).map_err(|e| e.to_string())?;
        let ey = r.tpm2b("y", 32).map_err(|e| e.to_string())?;
        let mut point = vec![0x04];
        point.extend_from_slice(ex);
        point.extend_from_slice(ey);
        let z = agreement::agree(
            &self.ek,
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &point),
            "ECDH".to_string(),
            |z| Ok(z.to_vec()),
        )?;
        let PublicKey::Ecc { x: ek_x, .. } = &self.ek_public.key else {
            return Err("EK is not ECC".into());
        };
        let seed = kdfe(HashAlg::Sha256, &z, b"IDENTITY", ex, ek_x, 256);
        unwrap_with_seed(HashAlg::Sha256, 128, &seed, &self.ak_public.name(), blob)
            .map_err(|e| e.to_string())
    }
}
