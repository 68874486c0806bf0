//! Quote verification: is this `TPMS_ATTEST` genuine, fresh, and about these PCR values?
//!
//! [`verify_quote`] is the one way to obtain a [`VerifiedQuote`]; code that decides trust takes
//! a `VerifiedQuote`, so it cannot be handed a quote that skipped a check.

use crate::alg::{id, HashAlg};
use crate::attest::Attest;
use crate::crypto::{self, SigFailure};
use crate::error::WireError;
use crate::pcr::{PcrSelection, PcrValues};
use crate::public::{attr, Public, PublicKey};
use crate::signature::Signature;

/// Why a quote is not accepted. Each variant has a stable [`reason`](QuoteError::reason) for
/// metrics and machine-readable output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The AK is not a restricted signing key, so it could sign data that only looks like a quote.
    #[error("the AK is not a restricted signing key (missing {missing}; decrypt set: {decrypt})")]
    AkNotRestrictedSigning {
        /// Attribute names that are missing.
        missing: String,
        /// Whether the decrypt attribute is (wrongly) set.
        decrypt: bool,
    },
    /// The signature bytes are not a `TPMT_SIGNATURE`.
    #[error("malformed signature: {0}")]
    MalformedSignature(WireError),
    /// The signature's scheme does not fit the AK.
    #[error("signature scheme mismatch: {0}")]
    SignatureSchemeMismatch(String),
    /// An algorithm combination this verifier does not check.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The signature does not verify with the AK.
    #[error("bad signature: the quote was not signed by this AK, or was altered")]
    BadSignature,
    /// The signed message is not a quote structure.
    #[error("malformed quote: {0}")]
    MalformedQuote(WireError),
    /// extraData is not the nonce the verifier sent.
    #[error("nonce mismatch: expected {expected}, quote has {found}")]
    NonceMismatch {
        /// Hex of the expected nonce.
        expected: String,
        /// Hex of the quote's extraData.
        found: String,
    },
    /// A PCR in the quote's selection has no supplied value.
    #[error(
        "missing PCR value: {bank} PCR {index} is in the quote's selection but was not supplied"
    )]
    MissingPcr {
        /// Bank.
        bank: HashAlg,
        /// Index.
        index: u8,
    },
    /// The supplied PCR values do not hash to the quote's pcrDigest.
    #[error("PCR digest mismatch: the supplied PCR values are not the ones the TPM quoted ({selection})")]
    PcrDigestMismatch {
        /// The quoted selection.
        selection: String,
    },
}

impl QuoteError {
    /// A stable machine-readable reason, e.g. for a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AkNotRestrictedSigning { .. } => "ak_not_restricted_signing",
            Self::MalformedSignature(_) => "malformed_signature",
            Self::SignatureSchemeMismatch(_) => "signature_scheme_mismatch",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::BadSignature => "bad_signature",
            Self::MalformedQuote(_) => "malformed_quote",
            Self::NonceMismatch { .. } => "nonce_mismatch",
            Self::MissingPcr { .. } => "missing_pcr",
            Self::PcrDigestMismatch { .. } => "pcr_digest_mismatch",
        }
    }
}

/// What a genuine quote says: its structure, how it was signed, and the PCR values it covers.
/// Reached through [`VerifiedQuote`] or [`InspectedQuote`], never built on its own.
#[derive(Debug, Clone)]
pub struct QuoteFacts {
    attest: Attest,
    signature_hash: HashAlg,
    scheme: &'static str,
    pcrs: PcrValues,
}

impl QuoteFacts {
    /// The quote structure.
    pub fn attest(&self) -> &Attest {
        &self.attest
    }

    /// The quoted PCR values (exactly the quote's selection).
    pub fn pcrs(&self) -> &PcrValues {
        &self.pcrs
    }

    /// The quoted selection.
    pub fn selection(&self) -> &PcrSelection {
        &self.attest.pcr_select
    }

    /// Hash of the signature scheme (also the pcrDigest hash).
    pub fn signature_hash(&self) -> HashAlg {
        self.signature_hash
    }

    /// `rsassa`, `rsapss` or `ecdsa`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }
}

/// A quote that passed every check: signed by a TPM-resident restricted signing AK, over the
/// expected nonce, about these PCR values. Only [`verify_quote`] constructs one, so holding a
/// `VerifiedQuote` is the proof; there is nothing left to re-check.
///
/// An offline inspection cannot stand in for it:
///
/// ```compile_fail
/// fn decide_trust(_: &nodetrust_tpm_wire::VerifiedQuote) {}
/// fn offline(q: &nodetrust_tpm_wire::InspectedQuote) {
///     decide_trust(q);
/// }
/// ```
///
/// and code outside this crate cannot make one:
///
/// ```compile_fail
/// fn forge(facts: nodetrust_tpm_wire::QuoteFacts) -> nodetrust_tpm_wire::VerifiedQuote {
///     nodetrust_tpm_wire::VerifiedQuote(facts)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct VerifiedQuote(QuoteFacts);

impl std::ops::Deref for VerifiedQuote {
    type Target = QuoteFacts;

    fn deref(&self) -> &QuoteFacts {
        &self.0
    }
}

/// A quote whose signature and PCR digest were checked for offline inspection, where the nonce
/// may be unknown and the signer may be a bare public key. It says which of those checks were
/// made, and it is not a [`VerifiedQuote`]: it cannot be handed to code that decides trust.
#[derive(Debug, Clone)]
pub struct InspectedQuote {
    facts: QuoteFacts,
    nonce_checked: bool,
    ak_attributes_checked: bool,
}

impl std::ops::Deref for InspectedQuote {
    type Target = QuoteFacts;

    fn deref(&self) -> &QuoteFacts {
        &self.facts
    }
}

impl InspectedQuote {
    /// Whether the nonce was checked (false when the caller supplied none).
    pub fn nonce_checked(&self) -> bool {
        self.nonce_checked
    }

    /// Whether the signer was shown to be a TPM-resident restricted signing key (false when
    /// inspected with a bare public key).
    pub fn ak_attributes_checked(&self) -> bool {
        self.ak_attributes_checked
    }
}

/// Checks that `ak` is a restricted signing key made inside a TPM.
pub fn check_ak_attributes(ak: &Public) -> Result<(), QuoteError> {
    let needed = [
        (attr::FIXED_TPM, "fixedTPM"),
        (attr::FIXED_PARENT, "fixedParent"),
        (attr::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (attr::RESTRICTED, "restricted"),
        (attr::SIGN, "sign"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(bit, _)| !ak.has(*bit))
        .map(|(_, n)| *n)
        .collect();
    let decrypt = ak.has(attr::DECRYPT);
    if missing.is_empty() && !decrypt {
        Ok(())
    } else {
        Err(QuoteError::AkNotRestrictedSigning {
            missing: missing.join(","),
            decrypt,
        })
    }
}

fn check_scheme(ak: &Public, sig: &Signature) -> Result<(), QuoteError> {
    let sig_alg = match sig {
        Signature::RsaSsa { .. } => id::RSASSA,
        Signature::RsaPss { .. } => id::RSAPSS,
        Signature::Ecdsa { .. } => id::ECDSA,
    };
    let key_ok = matches!(
        (&ak.key, sig),
        (
            PublicKey::Rsa { .. },
            Signature::RsaSsa { .. } | Signature::RsaPss { .. }
        ) | (PublicKey::Ecc { .. }, Signature::Ecdsa { .. })
    );
    if !key_ok {
        return Err(QuoteError::SignatureSchemeMismatch(format!(
            "{} signature from a {} AK",
            sig.scheme_name(),
            ak.describe()
        )));
    }
    if ak.scheme.scheme != id::NULL
        && (ak.scheme.scheme != sig_alg || ak.scheme.hash != Some(sig.hash().id()))
    {
        return Err(QuoteError::SignatureSchemeMismatch(format!(
            "the AK is fixed to scheme {:#06x} hash {:#06x}, the signature is {} with {}",
            ak.scheme.scheme,
            ak.scheme.hash.unwrap_or(0),
            sig.scheme_name(),
            sig.hash()
        )));
    }
    Ok(())
}

/// The digest of `pcrs` over `selection`, in selection order, with `hash`.
pub fn pcr_digest(
    selection: &PcrSelection,
    pcrs: &PcrValues,
    hash: HashAlg,
) -> Result<(Vec<u8>, PcrValues), QuoteError> {
    let mut h = hash.hasher();
    let mut quoted = PcrValues::new();
    for bank in &selection.banks {
        for index in &bank.pcrs {
            let v = pcrs.get(bank.hash, *index).ok_or(QuoteError::MissingPcr {
                bank: bank.hash,
                index: *index,
            })?;
            h.update(v);
            // The value came out of a PcrValues, so index and length are already valid.
            let _ = quoted.insert(bank.hash, *index, v.to_vec());
        }
    }
    Ok((h.finish(), quoted))
}

/// Verifies a quote: the only way to make a [`VerifiedQuote`].
///
/// * `ak`: the attestation key, from registration (never from the quote's sender this time);
///   it must be a restricted signing key made inside a TPM.
/// * `attest`: the exact `TPMS_ATTEST` bytes that were signed.
/// * `signature`: `TPMT_SIGNATURE` bytes.
/// * `pcrs`: PCR values claimed for the quote; values outside its selection are ignored.
/// * `nonce`: the fresh extraData the verifier asked for.
pub fn verify_quote(
    ak: &Public,
    attest: &[u8],
    signature: &[u8],
    pcrs: &PcrValues,
    nonce: &[u8],
) -> Result<VerifiedQuote, QuoteError> {
    check_ak_attributes(ak)?;
    let sig = Signature::parse(signature).map_err(QuoteError::MalformedSignature)?;
    check_scheme(ak, &sig)?;
    verify_signed(&ak.key, &sig, attest, pcrs, Some(nonce)).map(VerifiedQuote)
}

/// Inspects a quote offline with a TPM public area: every check of [`verify_quote`], except
/// that the freshness check is skipped when `nonce` is `None`.
pub fn inspect_quote(
    ak: &Public,
    attest: &[u8],
    signature: &[u8],
    pcrs: &PcrValues,
    nonce: Option<&[u8]>,
) -> Result<InspectedQuote, QuoteError> {
    check_ak_attributes(ak)?;
    let sig = Signature::parse(signature).map_err(QuoteError::MalformedSignature)?;
    check_scheme(ak, &sig)?;
    let facts = verify_signed(&ak.key, &sig, attest, pcrs, nonce)?;
    Ok(InspectedQuote {
        facts,
        nonce_checked: nonce.is_some(),
        ak_attributes_checked: true,
    })
}

/// Inspects a quote against a bare public key (a PEM key, as `tpm2_checkquote` takes).
///
/// A bare key carries no TPM attributes, so nothing shows it is a restricted signing key that
/// only signs TPM-generated structures: [`InspectedQuote::ak_attributes_checked`] is false.
pub fn inspect_quote_with_bare_key(
    key: &PublicKey,
    attest: &[u8],
    signature: &[u8],
    pcrs: &PcrValues,
    nonce: Option<&[u8]>,
) -> Result<InspectedQuote, QuoteError> {
    let sig = Signature::parse(signature).map_err(QuoteError::MalformedSignature)?;
    let facts = verify_signed(key, &sig, attest, pcrs, nonce)?;
    Ok(InspectedQuote {
        facts,
        nonce_checked: nonce.is_some(),
        ak_attributes_checked: false,
    })
}

fn verify_signed(
    key: &PublicKey,
    sig: &Signature,
    attest: &[u8],
    pcrs: &PcrValues,
    nonce: Option<&[u8]>,
) -> Result<QuoteFacts, QuoteError> {
    check_signed(
        crypto::verify(key, attest, sig),
        key,
        sig,
        attest,
        pcrs,
        nonce,
    )
}

/// The checks after the signature's: `signed` is the signature check's outcome.
fn check_signed(
    signed: Result<(), SigFailure>,
    key: &PublicKey,
    sig: &Signature,
    attest: &[u8],
    pcrs: &PcrValues,
    nonce: Option<&[u8]>,
) -> Result<QuoteFacts, QuoteError> {
    check_signed_message(signed, key, sig, attest, nonce)?.facts(pcrs)
}

/// The checks after the signature's but the PCR values': the quote's structure and nonce.
fn check_signed_message(
    signed: Result<(), SigFailure>,
    key: &PublicKey,
    sig: &Signature,
    attest: &[u8],
    nonce: Option<&[u8]>,
) -> Result<SignedQuote, QuoteError> {
    match signed {
        Ok(()) => {}
        Err(SigFailure::Invalid) => return Err(QuoteError::BadSignature),
        Err(SigFailure::Unsupported(what)) => return Err(QuoteError::UnsupportedAlgorithm(what)),
        Err(SigFailure::KeyMismatch) => {
            return Err(QuoteError::SignatureSchemeMismatch(format!(
                "{} signature from a {} key",
                sig.scheme_name(),
                match key {
                    PublicKey::Rsa { .. } => "RSA",
                    PublicKey::Ecc { .. } => "ECC",
                }
            )))
        }
    }
    let parsed = Attest::parse_quote(attest).map_err(QuoteError::MalformedQuote)?;
    if let Some(expected) = nonce {
        if parsed.extra_data != expected {
            return Err(QuoteError::NonceMismatch {
                expected: hex::encode(expected),
                found: hex::encode(&parsed.extra_data),
            });
        }
    }
    Ok(SignedQuote {
        attest: parsed,
        signature_hash: sig.hash(),
        scheme: sig.scheme_name(),
    })
}

/// A quote whose signature by a prepared AK, structure and nonce were checked, before the PCR
/// values sent with it are ([`verify_signed_prepared`]). It is not a [`VerifiedQuote`]: it says
/// which PCRs were quoted and their signed digest, not their values, and code that decides
/// trust cannot take it. [`SignedQuote::with_pcrs`] checks the values and makes the
/// [`VerifiedQuote`]. A verifier that already holds the values of a quote with the same
/// selection and digest knows them without the values sent (equal digests are equal values).
#[derive(Debug, Clone)]
pub struct SignedQuote {
    attest: Attest,
    signature_hash: HashAlg,
    scheme: &'static str,
}

impl SignedQuote {
    /// The signed quote structure (selection, `pcrDigest`, clock, nonce).
    pub fn attest(&self) -> &Attest {
        &self.attest
    }

    /// Checks `pcrs` against the signed digest: the [`VerifiedQuote`], with exactly the
    /// answers of [`verify_quote_prepared`].
    pub fn with_pcrs(self, pcrs: &PcrValues) -> Result<VerifiedQuote, QuoteError> {
        self.facts(pcrs).map(VerifiedQuote)
    }

    fn facts(self, pcrs: &PcrValues) -> Result<QuoteFacts, QuoteError> {
        let (digest, quoted) = pcr_digest(&self.attest.pcr_select, pcrs, self.signature_hash)?;
        if digest != self.attest.pcr_digest {
            return Err(QuoteError::PcrDigestMismatch {
                selection: self.attest.pcr_select.describe(),
            });
        }
        Ok(QuoteFacts {
            attest: self.attest,
            signature_hash: self.signature_hash,
            scheme: self.scheme,
            pcrs: quoted,
        })
    }
}

/// An AK made ready for many quotes: its public area, the outcome of its attribute check, and
/// its key as the crypto library parses it (kept after the first signature for the one
/// algorithm the AK signs with), so a verifier attesting a host again and again parses and
/// checks the key once, not at every quote. [`verify_quote_prepared`] gives exactly the
/// answers of [`verify_quote`] with the same public area.
pub struct PreparedAk {
    public: Public,
    name: Vec<u8>,
    attributes: Result<(), QuoteError>,
    parsed: std::sync::OnceLock<Option<ParsedKey>>,
}

impl std::fmt::Debug for PreparedAk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedAk")
            .field("public", &self.public.describe())
            .field("parsed", &self.parsed.get().is_some_and(Option::is_some))
            .finish_non_exhaustive()
    }
}

/// A parsed key and the signature kind it verifies.
struct ParsedKey {
    kind: SigKind,
    key: aws_lc_rs::signature::ParsedPublicKey,
}

/// The signatures a parsed key is kept for: RSASSA and ECDSA with one hash (RSAPSS, whose
/// salt length may vary, always takes the general path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigKind {
    RsaSsa(HashAlg),
    Ecdsa(HashAlg),
}

impl SigKind {
    fn of(sig: &Signature) -> Option<Self> {
        match sig {
            Signature::RsaSsa { hash, .. } => Some(Self::RsaSsa(*hash)),
            Signature::Ecdsa { hash, .. } => Some(Self::Ecdsa(*hash)),
            Signature::RsaPss { .. } => None,
        }
    }
}

/// Leading zero bytes removed.
fn strip_zeros(v: &[u8]) -> &[u8] {
    v.get(v.iter().take_while(|b| **b == 0).count()..)
        .unwrap_or_default()
}

/// Parses `key` for signatures of `kind`; `None` when this key and kind take the general path
/// (a combination the crypto library does not check, or a key it rejects: the general path
/// then gives the same refusal).
fn parse_key(key: &PublicKey, kind: SigKind) -> Option<aws_lc_rs::signature::ParsedPublicKey> {
    use crate::public::EccCurve;
    use aws_lc_rs::signature as s;
    match (key, kind) {
        (
            PublicKey::Rsa {
                modulus, exponent, ..
            },
            SigKind::RsaSsa(hash),
        ) => {
            let params: &'static s::RsaParameters = match hash {
                HashAlg::Sha1 => &s::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                HashAlg::Sha256 => &s::RSA_PKCS1_2048_8192_SHA256,
                HashAlg::Sha384 => &s::RSA_PKCS1_2048_8192_SHA384,
                HashAlg::Sha512 => &s::RSA_PKCS1_2048_8192_SHA512,
            };
            let e = exponent.to_be_bytes();
            s::RsaPublicKeyComponents {
                n: strip_zeros(modulus),
                e: strip_zeros(&e),
            }
            .to_parsed_public_key(params)
            .ok()
        }
        (PublicKey::Ecc { curve, x, y }, SigKind::Ecdsa(hash)) => {
            let alg: &'static s::EcdsaVerificationAlgorithm = match (curve, hash) {
                (EccCurve::NistP256, HashAlg::Sha1) => &s::ECDSA_P256_SHA1_ASN1,
                (EccCurve::NistP256, HashAlg::Sha256) => &s::ECDSA_P256_SHA256_ASN1,
                (EccCurve::NistP256, HashAlg::Sha384) => &s::ECDSA_P256_SHA384_ASN1,
                (EccCurve::NistP256, HashAlg::Sha512) => &s::ECDSA_P256_SHA512_ASN1,
                (EccCurve::NistP384, HashAlg::Sha1) => return None,
                (EccCurve::NistP384, HashAlg::Sha256) => &s::ECDSA_P384_SHA256_ASN1,
                (EccCurve::NistP384, HashAlg::Sha384) => &s::ECDSA_P384_SHA384_ASN1,
                (EccCurve::NistP384, HashAlg::Sha512) => &s::ECDSA_P384_SHA512_ASN1,
            };
            let point = crate::der::sec1_point(*curve, x, y)?;
            s::ParsedPublicKey::new(alg, point).ok()
        }
        _ => None,
    }
}

/// Checks `sig` over `msg` with a parsed key of the signature's kind (the checks of the
/// general path for these kinds, on a key parsed once).
fn verify_parsed(
    parsed: &ParsedKey,
    key: &PublicKey,
    msg: &[u8],
    sig: &Signature,
) -> Result<(), SigFailure> {
    match sig {
        Signature::RsaSsa { sig, .. } => parsed
            .key
            .verify_sig(msg, sig)
            .map_err(|_| SigFailure::Invalid),
        Signature::Ecdsa { r, s, .. } => {
            let n = match key {
                PublicKey::Ecc { curve, .. } => curve.coordinate_size(),
                PublicKey::Rsa { .. } => return Err(SigFailure::KeyMismatch),
            };
            if strip_zeros(r).len() > n || strip_zeros(s).len() > n {
                return Err(SigFailure::Invalid);
            }
            parsed
                .key
                .verify_sig(msg, &crate::der::ecdsa_sig(r, s))
                .map_err(|_| SigFailure::Invalid)
        }
        Signature::RsaPss { .. } => crypto::verify(key, msg, sig),
    }
}

impl PreparedAk {
    /// Prepares `ak` (its attributes are checked here, once).
    pub fn new(ak: Public) -> Self {
        Self {
            attributes: check_ak_attributes(&ak),
            name: ak.name(),
            public: ak,
            parsed: std::sync::OnceLock::new(),
        }
    }

    /// The AK's public area.
    pub fn public(&self) -> &Public {
        &self.public
    }

    /// The AK's Name ([`Public::name`]), computed once.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// Whether a parsed key is kept (after the first signature of a kind that keeps one).
    pub fn is_parsed(&self) -> bool {
        self.parsed.get().is_some_and(Option::is_some)
    }

    fn check_signature(&self, msg: &[u8], sig: &Signature) -> Result<(), SigFailure> {
        let Some(kind) = SigKind::of(sig) else {
            return crypto::verify(&self.public.key, msg, sig);
        };
        let parsed = self
            .parsed
            .get_or_init(|| parse_key(&self.public.key, kind).map(|key| ParsedKey { kind, key }));
        match parsed {
            Some(p) if p.kind == kind => verify_parsed(p, &self.public.key, msg, sig),
            // Another kind than the one kept, or a key the library rejects: the general path.
            _ => crypto::verify(&self.public.key, msg, sig),
        }
    }
}

/// [`verify_quote`] with a [`PreparedAk`]: the same checks and answers, without parsing the
/// AK's key again.
pub fn verify_quote_prepared(
    ak: &PreparedAk,
    attest: &[u8],
    signature: &[u8],
    pcrs: &PcrValues,
    nonce: &[u8],
) -> Result<VerifiedQuote, QuoteError> {
    verify_signed_prepared(ak, attest, signature, nonce)?.with_pcrs(pcrs)
}

/// The checks of [`verify_quote_prepared`] but the PCR values' ([`SignedQuote`]), in the same
/// order with the same answers.
pub fn verify_signed_prepared(
    ak: &PreparedAk,
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
) -> Result<SignedQuote, QuoteError> {
    ak.attributes.clone()?;
    let sig = Signature::parse(signature).map_err(QuoteError::MalformedSignature)?;
    check_scheme(&ak.public, &sig)?;
    let signed = ak.check_signature(attest, &sig);
    check_signed_message(signed, &ak.public.key, &sig, attest, Some(nonce))
}
