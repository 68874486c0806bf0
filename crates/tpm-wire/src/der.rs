//! Minimal DER encoding for the few structures other libraries and tools want from us:
//! `SubjectPublicKeyInfo` (PEM output, OAEP keys) and ECDSA `(r, s)` signatures.

use crate::public::{EccCurve, PublicKey};

fn len(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let tail = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | tail.len() as u8);
        out.extend_from_slice(tail);
    }
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(tag);
    len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A DER INTEGER holding the unsigned big-endian `v`.
pub fn uint(v: &[u8]) -> Vec<u8> {
    let skip = v.iter().take_while(|b| **b == 0).count();
    let v = v.get(skip..).unwrap_or_default();
    let mut body = Vec::with_capacity(v.len() + 1);
    if v.first().is_none_or(|b| *b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(v);
    tlv(0x02, &body)
}

/// A DER SEQUENCE of already-encoded parts.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// The ECDSA-Sig-Value `SEQUENCE { r INTEGER, s INTEGER }`.
pub fn ecdsa_sig(r: &[u8], s: &[u8]) -> Vec<u8> {
    seq(&[&uint(r), &uint(s)])
}

const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const NULL: &[u8] = &[0x05, 0x00];

/// An uncompressed SEC1 point `04 || x || y`, each coordinate left-padded to the curve size.
/// `None` when a coordinate is longer than the curve allows.
pub fn sec1_point(curve: EccCurve, x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    let n = curve.coordinate_size();
    let mut out = vec![0x04];
    for c in [x, y] {
        let c = c
            .get(c.iter().take_while(|b| **b == 0).count()..)
            .unwrap_or_default();
        if c.len() > n {
            return None;
        }
        out.resize(out.len() + n - c.len(), 0);
        out.extend_from_slice(c);
    }
    Some(out)
}

/// `SubjectPublicKeyInfo` DER for a TPM public key.
pub fn spki(key: &PublicKey) -> Vec<u8> {
    match key {
        PublicKey::Rsa {
            modulus, exponent, ..
        } => {
            let rsa = seq(&[&uint(modulus), &uint(&exponent.to_be_bytes())]);
            let mut bits = vec![0u8];
            bits.extend_from_slice(&rsa);
            seq(&[&seq(&[OID_RSA, NULL]), &tlv(0x03, &bits)])
        }
        PublicKey::Ecc { curve, x, y } => {
            let oid = match curve {
                EccCurve::NistP256 => OID_P256,
                EccCurve::NistP384 => OID_P384,
            };
            let mut bits = vec![0u8];
            bits.extend_from_slice(&sec1_point(*curve, x, y).unwrap_or_default());
            seq(&[&seq(&[OID_EC, oid]), &tlv(0x03, &bits)])
        }
    }
}

/// PEM armour.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes the first PEM block with `label`.
pub fn pem_decode(text: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let rest = text.get(start..)?;
    let stop = rest.find(&end)?;
    let body: String = rest
        .get(..stop)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// A bounded DER reader (definite lengths of at most 4 bytes) over the bytes not read yet,
/// for `SubjectPublicKeyInfo` here and for X.509 certificates in IMA signing keys.
#[derive(Debug)]
pub struct Der<'a>(pub &'a [u8]);

impl<'a> Der<'a> {
    /// The body of the next element, which must have `tag`.
    pub fn next(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.element(tag).map(|(body, _)| body)
    }

    /// The whole next element (tag and length included).
    pub fn raw(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.element(tag).map(|(_, raw)| raw)
    }

    fn element(&mut self, tag: u8) -> Option<(&'a [u8], &'a [u8])> {
        let start = self.0;
        let (&t, rest) = self.0.split_first()?;
        if t != tag {
            return None;
        }
        let (&l0, rest) = rest.split_first()?;
        let (len, rest) = if l0 < 0x80 {
            (usize::from(l0), rest)
        } else {
            let n = usize::from(l0 & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (lb, rest) = rest.split_at_checked(n)?;
            (
                lb.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
                rest,
            )
        };
        let (body, rest) = rest.split_at_checked(len)?;
        let used = start.len() - rest.len();
        self.0 = rest;
        Some((body, start.get(..used)?))
    }
}

/// Parses a `SubjectPublicKeyInfo` holding an RSA key or an EC key on P-256 / P-384.
pub fn parse_spki(der: &[u8]) -> Option<PublicKey> {
    let mut outer = Der(der);
    let mut spki = Der(outer.next(0x30)?);
    if !outer.0.is_empty() {
        return None;
    }
    let alg = spki.next(0x30)?;
    let bits = spki.next(0x03)?;
    let (&unused, key) = bits.split_first()?;
    if unused != 0 {
        return None;
    }
    if alg.starts_with(OID_RSA) {
        let mut seq = Der(key);
        let mut rsa = Der(seq.next(0x30)?);
        let n = rsa.next(0x02)?;
        let e = rsa.next(0x02)?;
        let n = n.get(n.iter().take_while(|b| **b == 0).count()..)?.to_vec();
        let e = e.get(e.iter().take_while(|b| **b == 0).count()..)?;
        if e.len() > 4 || n.is_empty() {
            return None;
        }
        let exponent = e.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b));
        let key_bits = u16::try_from(n.len() * 8).ok()?;
        return Some(PublicKey::Rsa {
            modulus: n,
            exponent,
            key_bits,
        });
    }
    let curve = if alg.ends_with(OID_P256) {
        EccCurve::NistP256
    } else if alg.ends_with(OID_P384) {
        EccCurve::NistP384
    } else {
        return None;
    };
    let n = curve.coordinate_size();
    let (&form, xy) = key.split_first()?;
    if form != 0x04 || xy.len() != 2 * n {
        return None;
    }
    let (x, y) = xy.split_at(n);
    Some(PublicKey::Ecc {
        curve,
        x: x.to_vec(),
        y: y.to_vec(),
    })
}
