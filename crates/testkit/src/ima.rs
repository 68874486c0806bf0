//! IMA logs written to order: no machine here has IMA in its kernel.
//!
//! [`ImaLogBuilder`] writes entries as the kernel does (`ima`, `ima-ng`, `ima-sig`; file
//! digests in SHA-1, SHA-256, SHA-384 or SHA-512; SHA-1 template hashes; violations as zero
//! template hashes) and says what each entry extends into every PCR bank: the SHA-1 bank the
//! SHA-1 template hash, other banks the template data hashed by the bank's algorithm (as
//! Linux 5.1 and later do), violations all-ones. So a test can extend a swtpm's PCR 10 with
//! [`ImaLogBuilder::extend_values`] or [`ImaLogBuilder::pcrextend_args`]
//! (`tpm2_pcrextend 10:sha1=...,sha256=...`), hand the agent [`ImaLogBuilder::ascii`] or
//! [`ImaLogBuilder::binary`], and the log replays to what the TPM quotes.
//!
//! [`TestSigningKey`] signs files as `evmctl ima_sign` does: a `signature_v2_hdr` (type 3,
//! version 2, hash algorithm, key id = last 4 bytes of the SHA-1 of the public key, size)
//! followed by an RSA PKCS#1 v1.5 or ECDSA signature over the file digest.

use std::collections::BTreeMap;

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair, RsaKeyPair};
use nodetrust_eventlog::ima::{self, ImaEntry, Template};
use nodetrust_tpm_wire::{HashAlg, PcrValues};

use crate::Result;

fn ring(alg: HashAlg) -> &'static digest::Algorithm {
    match alg {
        HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
    }
}

/// The kind of a [`TestSigningKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKeyKind {
    /// RSA 2048, PKCS#1 v1.5 (SHA-256, SHA-384, SHA-512 file digests).
    Rsa2048,
    /// ECDSA P-256 (SHA-256 file digests).
    EcdsaP256,
    /// ECDSA P-384 (SHA-384 file digests).
    EcdsaP384,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A file-signing key, as an IMA key vendor's.
pub struct TestSigningKey {
    kind: TestKeyKind,
    pair: Pair,
    pkcs8: Vec<u8>,
    key_id: u32,
}

impl std::fmt::Debug for TestSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestSigningKey({:?}, 0x{:08x})", self.kind, self.key_id)
    }
}

impl TestSigningKey {
    /// A new key.
    pub fn generate(kind: TestKeyKind) -> Result<Self> {
        let rng = SystemRandom::new();
        let (pair, pkcs8) = match kind {
            TestKeyKind::Rsa2048 => {
                let k = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| e.to_string())?;
                let der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k)
                    .map_err(|e| e.to_string())?
                    .as_ref()
                    .to_vec();
                (Pair::Rsa(k), der)
            }
            TestKeyKind::EcdsaP256 | TestKeyKind::EcdsaP384 => {
                let alg = if kind == TestKeyKind::EcdsaP256 {
                    &sig::ECDSA_P256_SHA256_ASN1_SIGNING
                } else {
                    &sig::ECDSA_P384_SHA384_ASN1_SIGNING
                };
                let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|e| e.to_string())?;
                let k = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).map_err(|e| e.to_string())?;
                (Pair::Ec(k), doc.as_ref().to_vec())
            }
        };
        // The key id: the last 4 bytes of SHA-1 over the subject public key bits
        // (`RSAPublicKey` DER, or the uncompressed EC point), as evmctl computes it.
        let bits = match &pair {
            Pair::Rsa(k) => k.public_key().as_ref().to_vec(),
            Pair::Ec(k) => k.public_key().as_ref().to_vec(),
        };
        let h = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &bits);
        let key_id = h
            .as_ref()
            .get(16..20)
            .map(|b| b.iter().fold(0u32, |a, x| (a << 8) | u32::from(*x)))
            .unwrap_or_default();
        Ok(Self {
            kind,
            pair,
            pkcs8,
            key_id,
        })
    }

    /// The kind.
    pub fn kind(&self) -> TestKeyKind {
        self.kind
    }

    /// The key id its signatures carry.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// `SubjectPublicKeyInfo` DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        let r = match &self.pair {
            Pair::Rsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Pair::Ec(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
        };
        r.unwrap_or_default()
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM.
    pub fn public_key_pem(&self) -> String {
        nodetrust_tpm_wire::der::pem("PUBLIC KEY", &self.public_key_der())
    }

    /// The private key, PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// A self-signed X.509 certificate of the key whose Subject Key Identifier is the SHA-1
    /// of the public key (so its last 4 bytes are [`key_id`](Self::key_id)), PEM.
    pub fn certificate_pem(&self) -> Result<String> {
        let kp = rcgen::KeyPair::try_from(self.pkcs8.as_slice()).map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nodetrust test IMA signing key");
        let bits = match &self.pair {
            Pair::Rsa(k) => k.public_key().as_ref().to_vec(),
            Pair::Ec(k) => k.public_key().as_ref().to_vec(),
        };
        let ski = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &bits);
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(ski.as_ref().to_vec());
        let cert = params.self_signed(&kp).map_err(|e| e.to_string())?;
        Ok(cert.pem())
    }

    /// The raw signature over a file digest by `alg`.
    pub fn sign_digest(&self, alg: HashAlg, file_digest: &[u8]) -> Result<Vec<u8>> {
        let d = Digest::import_less_safe(file_digest, ring(alg)).map_err(|e| e.to_string())?;
        match &self.pair {
            Pair::Rsa(k) => {
                let enc: &'static dyn sig::RsaEncoding = match alg {
                    HashAlg::Sha256 => &sig::RSA_PKCS1_SHA256,
                    HashAlg::Sha384 => &sig::RSA_PKCS1_SHA384,
                    HashAlg::Sha512 => &sig::RSA_PKCS1_SHA512,
                    HashAlg::Sha1 => return Err("no SHA-1 signing here".to_string()),
                };
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign_digest(enc, &d, &mut out)
                    .map_err(|e| e.to_string())?;
                Ok(out)
            }
            Pair::Ec(k) => Ok(k
                .sign_digest(&d)
                .map_err(|_| format!("{:?} cannot sign a {alg} digest", self.kind))?
                .as_ref()
                .to_vec()),
        }
    }

    /// The `ima-sig` field: `signature_v2_hdr` and the signature over `file_digest`.
    pub fn ima_signature(&self, alg: HashAlg, file_digest: &[u8]) -> Result<Vec<u8>> {
        let s = self.sign_digest(alg, file_digest)?;
        Ok(signature_field(alg, self.key_id, &s))
    }
}

/// The kernel's `hash_algo` number.
fn kernel_hash_number(alg: HashAlg) -> u8 {
    match alg {
        HashAlg::Sha1 => 2,
        HashAlg::Sha256 => 4,
        HashAlg::Sha384 => 5,
        HashAlg::Sha512 => 6,
    }
}

/// A `signature_v2_hdr` (type 3, version 2) followed by `signature`.
pub fn signature_field(alg: HashAlg, key_id: u32, signature: &[u8]) -> Vec<u8> {
    let mut out = vec![3, 2, kernel_hash_number(alg)];
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    out.extend_from_slice(signature);
    out
}

fn field(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

/// Template data of an `ima-ng`/`ima-sig` entry.
fn ng_data(alg: &str, digest: &[u8], path: &str, sig: Option<&[u8]>) -> Vec<u8> {
    let mut d = Vec::with_capacity(alg.len() + 2 + digest.len());
    d.extend_from_slice(alg.as_bytes());
    d.extend_from_slice(b":\0");
    d.extend_from_slice(digest);
    let mut name = path.as_bytes().to_vec();
    name.push(0);
    let mut out = Vec::new();
    field(&mut out, &d);
    field(&mut out, &name);
    if let Some(s) = sig {
        field(&mut out, s);
    }
    out
}

/// Template data of an `ima` entry: SHA-1 digest, the name zero-padded to 256 bytes.
fn ima_data(digest: &[u8], path: &str) -> Vec<u8> {
    let mut d = digest.to_vec();
    let name = path.as_bytes();
    d.extend_from_slice(name.get(..255).unwrap_or(name));
    d.resize(digest.len() + 256, 0);
    d
}

/// Builds an IMA log and the PCR values it extends.
#[derive(Debug, Clone)]
pub struct ImaLogBuilder {
    entries: Vec<ImaEntry>,
    pcr10: BTreeMap<HashAlg, Vec<u8>>,
}

impl Default for ImaLogBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImaLogBuilder {
    /// An empty log; PCR values are followed in every bank (SHA-1, -256, -384, -512).
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            pcr10: HashAlg::ALL
                .iter()
                .map(|a| (*a, vec![0u8; a.size()]))
                .collect(),
        }
    }

    fn push(
        &mut self,
        template: Template,
        template_hash: Vec<u8>,
        data: Vec<u8>,
        fields: (String, Vec<u8>, String, Option<Vec<u8>>),
    ) -> &ImaEntry {
        let (file_alg, file_digest, path, signature) = fields;
        let e = ImaEntry {
            number: self.entries.len(),
            pcr: 10,
            template_hash,
            template,
            template_data: data,
            file_alg,
            file_digest,
            path,
            signature,
        };
        for (alg, v) in self.pcr10.iter_mut() {
            let d = e.extend_digest(*alg, ima::BankRule::Recompute);
            *v = alg.extend(v, &d);
        }
        self.entries.push(e);
        match self.entries.last() {
            Some(e) => e,
            None => unreachable!("an entry was just pushed"),
        }
    }

    /// The first entry of a boot: `boot_aggregate` (`ima-ng`), the hash of `pcrs` 0–9 in
    /// `bank` (Linux >= 5.8 on TPM 2.0). Errors when the bank lacks one of those PCRs.
    pub fn boot_aggregate(&mut self, pcrs: &PcrValues, bank: HashAlg) -> Result<&ImaEntry> {
        let d = ima::boot_aggregate(pcrs, bank, 9)
            .ok_or_else(|| format!("PCRs 0-9 of the {bank} bank are needed"))?;
        Ok(self.measurement_ng(Template::ImaNg, "boot_aggregate", bank.name(), d, None))
    }

    /// A `boot_aggregate` entry with a given digest (e.g. a wrong one).
    pub fn boot_aggregate_digest(&mut self, bank: HashAlg, digest: Vec<u8>) -> &ImaEntry {
        self.measurement_ng(Template::ImaNg, "boot_aggregate", bank.name(), digest, None)
    }

    /// An `ima-ng` entry for a file with `content`, digest SHA-256.
    pub fn file(&mut self, path: &str, content: &[u8]) -> &ImaEntry {
        self.file_alg(path, HashAlg::Sha256, content)
    }

    /// An `ima-ng` entry for a file with `content`, digest by `alg`.
    pub fn file_alg(&mut self, path: &str, alg: HashAlg, content: &[u8]) -> &ImaEntry {
        let d = alg.digest(content);
        self.measurement_ng(Template::ImaNg, path, alg.name(), d, None)
    }

    /// An `ima-ng` entry with a given digest (algorithm named as IMA names it).
    pub fn file_digest(&mut self, path: &str, alg: &str, digest: Vec<u8>) -> &ImaEntry {
        self.measurement_ng(Template::ImaNg, path, alg, digest, None)
    }

    /// An `ima` (legacy) entry: SHA-1 digest, name at most 255 bytes.
    pub fn file_ima(&mut self, path: &str, content: &[u8]) -> &ImaEntry {
        let d = HashAlg::Sha1.digest(content);
        let data = ima_data(&d, path);
        let th = HashAlg::Sha1.digest(&data);
        self.push(
            Template::Ima,
            th,
            data,
            ("sha1".to_string(), d, path.to_string(), None),
        )
    }

    /// An `ima-sig` entry for a file with `content`, signed by `key` (digest by `alg`).
    pub fn signed_file(
        &mut self,
        path: &str,
        alg: HashAlg,
        content: &[u8],
        key: &TestSigningKey,
    ) -> Result<&ImaEntry> {
        let d = alg.digest(content);
        let s = key.ima_signature(alg, &d)?;
        Ok(self.measurement_ng(Template::ImaSig, path, alg.name(), d, Some(s)))
    }

    /// An `ima-sig` entry with a given signature field (any bytes; empty for an unsigned
    /// file).
    pub fn sig_file(
        &mut self,
        path: &str,
        alg: HashAlg,
        content: &[u8],
        signature: Vec<u8>,
    ) -> &ImaEntry {
        let d = alg.digest(content);
        self.measurement_ng(Template::ImaSig, path, alg.name(), d, Some(signature))
    }

    /// A violation: the template hash is zero (extended as all-ones), the digest zero.
    pub fn violation(&mut self, path: &str) -> &ImaEntry {
        let d = vec![0u8; 32];
        let data = ng_data("sha256", &d, path, None);
        self.push(
            Template::ImaNg,
            vec![0u8; 20],
            data,
            ("sha256".to_string(), d, path.to_string(), None),
        )
    }

    fn measurement_ng(
        &mut self,
        template: Template,
        path: &str,
        alg: &str,
        digest: Vec<u8>,
        signature: Option<Vec<u8>>,
    ) -> &ImaEntry {
        let sig_field = if template == Template::ImaSig {
            Some(signature.clone().unwrap_or_default())
        } else {
            None
        };
        let data = ng_data(alg, &digest, path, sig_field.as_deref());
        let th = HashAlg::Sha1.digest(&data);
        let signature = signature.filter(|s| !s.is_empty());
        self.push(
            template,
            th,
            data,
            (alg.to_string(), digest, path.to_string(), signature),
        )
    }

    /// The entries so far.
    pub fn entries(&self) -> &[ImaEntry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// PCR 10 in `bank` after every entry so far.
    pub fn pcr10(&self, bank: HashAlg) -> Vec<u8> {
        self.pcr10.get(&bank).cloned().unwrap_or_default()
    }

    /// PCR 10 after every entry, in `banks`, as a quote would hold it.
    pub fn pcr10_values(&self, banks: &[HashAlg]) -> PcrValues {
        let mut v = PcrValues::new();
        for b in banks {
            // The value has the bank's size: insert cannot fail.
            let _ = v.insert(*b, 10, self.pcr10(*b));
        }
        v
    }

    /// What entries `from..` extend into `bank`, in order (for `TPM2_PCR_Extend`).
    pub fn extend_values(&self, bank: HashAlg, from: usize) -> Vec<Vec<u8>> {
        self.entries
            .iter()
            .skip(from)
            .map(|e| e.extend_digest(bank, ima::BankRule::Recompute))
            .collect()
    }

    /// `tpm2_pcrextend` arguments for entries `from..`, one per entry:
    /// `10:sha1=HEX,sha256=HEX`.
    pub fn pcrextend_args(&self, banks: &[HashAlg], from: usize) -> Vec<String> {
        self.entries
            .iter()
            .skip(from)
            .map(|e| {
                let parts: Vec<String> = banks
                    .iter()
                    .map(|b| {
                        format!(
                            "{}={}",
                            b.name(),
                            hex::encode(e.extend_digest(*b, ima::BankRule::Recompute))
                        )
                    })
                    .collect();
                format!("{}:{}", e.pcr, parts.join(","))
            })
            .collect()
    }

    /// `binary_runtime_measurements` of entries `from..`.
    pub fn binary_from(&self, from: usize) -> Vec<u8> {
        ima::to_binary(self.entries.get(from..).unwrap_or_default())
    }

    /// `binary_runtime_measurements`.
    pub fn binary(&self) -> Vec<u8> {
        self.binary_from(0)
    }

    /// `ascii_runtime_measurements` of entries `from..`.
    pub fn ascii_from(&self, from: usize) -> String {
        let mut out = String::new();
        for e in self.entries.iter().skip(from) {
            out.push_str(&ascii_line(e));
            out.push('\n');
        }
        out
    }

    /// `ascii_runtime_measurements`.
    pub fn ascii(&self) -> String {
        self.ascii_from(0)
    }
}

/// One line of the ascii log, as the kernel prints it.
pub fn ascii_line(e: &ImaEntry) -> String {
    match &e.template {
        Template::Ima => format!(
            "{} {} ima {} {}",
            e.pcr,
            hex::encode(&e.template_hash),
            hex::encode(&e.file_digest),
            e.path
        ),
        Template::ImaSig => format!(
            "{} {} ima-sig {}:{} {} {}",
            e.pcr,
            hex::encode(&e.template_hash),
            e.file_alg,
            hex::encode(&e.file_digest),
            e.path,
            e.signature.as_deref().map(hex::encode).unwrap_or_default()
        ),
        _ => format!(
            "{} {} {} {}:{} {}",
            e.pcr,
            hex::encode(&e.template_hash),
            e.template.name(),
            e.file_alg,
            hex::encode(&e.file_digest),
            e.path
        ),
    }
}

/// PCRs 0–9 of a made-up boot in `banks` (each PCR a hash of its index), for logs that are
/// not tied to a real TPM.
pub fn fake_boot_pcrs(banks: &[HashAlg]) -> PcrValues {
    let mut v = PcrValues::new();
    for b in banks {
        for i in 0u8..10 {
            let _ = v.insert(*b, i, b.digest(&[b'p', b'c', b'r', i]));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use nodetrust_eventlog::ima::{ImaLog, ImaReplay};

    #[test]
    fn builder_logs_parse_and_replay_to_its_pcr10() {
        let key = TestSigningKey::generate(TestKeyKind::EcdsaP256).unwrap();
        let mut b = ImaLogBuilder::new();
        let pcrs = fake_boot_pcrs(&[HashAlg::Sha256]);
        b.boot_aggregate(&pcrs, HashAlg::Sha256).unwrap();
        b.file("/usr/bin/bash", b"bash");
        b.file_alg("/usr/bin/sha1", HashAlg::Sha1, b"x");
        b.file_ima("/usr/bin/old", b"old");
        b.signed_file("/usr/lib/libc.so.6", HashAlg::Sha256, b"libc", &key)
            .unwrap();
        b.sig_file("/usr/bin/unsigned", HashAlg::Sha256, b"u", Vec::new());
        b.violation("/var/lib/db");
        for bytes in [b.ascii().into_bytes(), b.binary()] {
            let log = ImaLog::parse(&bytes).unwrap();
            assert_eq!(log.entries.len(), 7);
            assert!(log.check().is_empty());
            assert_eq!(log.boot_aggregate_matches(&pcrs), Some(true));
            let mut r = ImaReplay::new(&[HashAlg::Sha1, HashAlg::Sha256], ima::BankRule::Recompute);
            r.extend(&log.entries).unwrap();
            assert_eq!(r.value(HashAlg::Sha1, 10).unwrap(), b.pcr10(HashAlg::Sha1));
            assert_eq!(
                r.value(HashAlg::Sha256, 10).unwrap(),
                b.pcr10(HashAlg::Sha256)
            );
            assert_eq!(log.entries[4].signature.as_ref().unwrap()[..3], [3, 2, 4]);
            assert_eq!(log.entries[5].signature, None);
        }
        assert_eq!(b.pcrextend_args(&[HashAlg::Sha1], 6).len(), 1);
        assert!(b.pcrextend_args(&[HashAlg::Sha1], 6)[0].starts_with("10:sha1=ffff"));
    }
}
