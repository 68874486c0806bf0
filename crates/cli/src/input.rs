//! Reading evidence files given on the command line.

use std::path::Path;

use nodetrust_tpm_wire::{PcrValues, Public, PublicKey};

use crate::CliError;

/// Reads a whole file, or says which one could not be read.
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read {what} {}: {e}", path.display())))
}

/// An AK as given: a TPM public area, or a bare PEM key.
#[derive(Debug)]
pub enum Ak {
    /// `TPM2B_PUBLIC` / `TPMT_PUBLIC`: attributes are checked.
    Tpm(Public),
    /// A PEM `PUBLIC KEY`: only the signature can be checked.
    Bare(PublicKey),
}

/// Reads an AK: `TPM2B_PUBLIC` or `TPMT_PUBLIC` bytes, or a PEM public key.
pub fn read_ak(path: &Path, json: bool) -> Result<Ak, CliError> {
    let bytes = read(path, "AK")?;
    if bytes.starts_with(b"-----BEGIN") {
        let text = String::from_utf8_lossy(&bytes);
        let key = nodetrust_tpm_wire::der::pem_decode(&text, "PUBLIC KEY")
            .and_then(|der| nodetrust_tpm_wire::der::parse_spki(&der))
            .ok_or_else(|| CliError::Rejected {
                reason: "malformed_ak",
                message: format!(
                    "malformed AK {}: not a PEM RSA or P-256/P-384 PUBLIC KEY",
                    path.display()
                ),
                json,
            })?;
        return Ok(Ak::Bare(key));
    }
    Public::from_either(&bytes)
        .map(Ak::Tpm)
        .map_err(|e| CliError::Rejected {
            reason: "malformed_ak",
            message: format!("malformed AK {}: {e}", path.display()),
            json,
        })
}

/// Reads PCR values: `tpm2_pcrread` YAML or our JSON.
pub fn read_pcrs(path: &Path) -> Result<PcrValues, CliError> {
    let bytes = read(path, "PCR values")?;
    let text = String::from_utf8(bytes).map_err(|_| {
        CliError::Usage(format!(
            "PCR values {}: not text (YAML or JSON expected)",
            path.display()
        ))
    })?;
    PcrValues::parse(&text)
        .map_err(|e| CliError::Usage(format!("PCR values {}: {e}", path.display())))
}

/// Parses a hex nonce (an optional `0x` prefix is allowed).
pub fn parse_nonce(s: &str) -> Result<Vec<u8>, CliError> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(s).map_err(|e| CliError::Usage(format!("--nonce: not hex: {e}")))
}
