//! `nodetrust quote verify`: the offline counterpart of `tpm2_checkquote`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use nodetrust_tpm_wire::{inspect_quote, inspect_quote_with_bare_key, InspectedQuote, QuoteError};

use crate::input::{self, Ak};
use crate::output::outln;
use crate::{CliError, Format};

/// `nodetrust quote ...`
#[derive(Debug, Subcommand)]
pub enum QuoteCommand {
    /// Check that a quote is genuine: signed by the AK, over these PCR values, with this nonce.
    ///
    /// Takes the files tpm2-tools writes: `tpm2_createak -u` / `tpm2_readpublic -o` (AK),
    /// `tpm2_quote -m` (message), `tpm2_quote -s` (signature), `tpm2_pcrread` output (PCRs).
    /// Exit 0 and a summary when genuine; exit 1 and one line naming the reason when not;
    /// exit 2 on unreadable files or bad arguments.
    Verify(Evidence),
}

/// The evidence of one quote, as files.
#[derive(Debug, Args, Clone)]
pub struct Evidence {
    /// AK public key: TPM2B_PUBLIC or TPMT_PUBLIC bytes, or a PEM public key (with a PEM key
    /// the AK's TPM attributes cannot be checked, and the output says so).
    #[arg(long, value_name = "AK")]
    pub ak: PathBuf,
    /// The quoted TPMS_ATTEST bytes (`tpm2_quote -m`).
    #[arg(long, value_name = "QUOTE")]
    pub message: PathBuf,
    /// The TPMT_SIGNATURE bytes (`tpm2_quote -s`).
    #[arg(long, value_name = "SIG")]
    pub signature: PathBuf,
    /// PCR values: `tpm2_pcrread` YAML (`sha256:` then `  4 : 0x...` lines) or JSON
    /// `{"sha256": {"4": "hex"}}`. Values outside the quote's selection are ignored; missing
    /// ones are an error.
    #[arg(long, value_name = "PCRS")]
    pub pcrs: PathBuf,
    /// Expected nonce (qualifying data), hex. Without it the nonce is shown, not checked.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// A measured-boot event log (TCG PC Client, SHA-1 or crypto-agile). After the quote
    /// verifies, the log must replay to the quoted value of every PCR it extends that the quote
    /// covers; otherwise exit 1 (`eventlog_mismatch`) naming each PCR that differs.
    #[arg(long, value_name = "FILE")]
    pub eventlog: Option<PathBuf>,
}

/// Evidence read from files, ready to verify repeatedly.
#[derive(Debug)]
pub struct LoadedEvidence {
    ak: Ak,
    message: Vec<u8>,
    signature: Vec<u8>,
    pcrs: nodetrust_tpm_wire::PcrValues,
    nonce: Option<Vec<u8>>,
}

impl LoadedEvidence {
    /// Reads every file named by `e`.
    pub fn load(e: &Evidence) -> Result<Self, CliError> {
        let json = e.format == Format::Json;
        let nonce = e.nonce.as_deref().map(input::parse_nonce).transpose()?;
        let message = input::read(&e.message, "quote message")?;
        let signature = input::read(&e.signature, "signature")?;
        let pcrs = input::read_pcrs(&e.pcrs)?;
        let ak = input::read_ak(&e.ak, json)?;
        Ok(Self {
            ak,
            message,
            signature,
            pcrs,
            nonce,
        })
    }

    /// Verifies the evidence.
    pub fn verify(&self) -> Result<InspectedQuote, QuoteError> {
        match &self.ak {
            Ak::Tpm(p) => inspect_quote(
                p,
                &self.message,
                &self.signature,
                &self.pcrs,
                self.nonce.as_deref(),
            ),
            Ak::Bare(k) => inspect_quote_with_bare_key(
                k,
                &self.message,
                &self.signature,
                &self.pcrs,
                self.nonce.as_deref(),
            ),
        }
    }

    fn signer(&self) -> String {
        match &self.ak {
            Ak::Tpm(p) => format!("{} AK, name {}", p.describe(), hex::encode(p.name())),
            Ak::Bare(k) => match k {
                nodetrust_tpm_wire::PublicKey::Rsa { modulus, .. } => {
                    format!("RSA-{} public key (PEM)", modulus.len() * 8)
                }
                nodetrust_tpm_wire::PublicKey::Ecc { curve, .. } => {
                    format!("ECC {} public key (PEM)", curve.name())
                }
            },
        }
    }
}

/// Maps a verification failure to the CLI's exit-1 error.
pub fn rejected(e: &QuoteError, json: bool) -> CliError {
    CliError::Rejected {
        reason: e.reason(),
        message: e.to_string(),
        json,
    }
}

/// Runs a `quote` subcommand.
pub fn run(cmd: QuoteCommand) -> Result<(), CliError> {
    match cmd {
        QuoteCommand::Verify(e) => verify(&e),
    }
}

fn verify(e: &Evidence) -> Result<(), CliError> {
    let json = e.format == Format::Json;
    let loaded = LoadedEvidence::load(e)?;
    let q = loaded.verify().map_err(|err| rejected(&err, json))?;
    let eventlog = match &e.eventlog {
        Some(path) => Some(crate::eventlog::check_quote(path, q.pcrs(), json)?),
        None => None,
    };
    print_summary(&loaded, &q, json, eventlog.as_deref());
    Ok(())
}

fn print_summary(loaded: &LoadedEvidence, q: &InspectedQuote, json: bool, eventlog: Option<&str>) {
    let a = q.attest();
    let nonce_state = if q.nonce_checked() {
        "checked"
    } else {
        "not checked (no --nonce given)"
    };
    if json {
        let mut v = serde_json::json!({
            "valid": true,
            "signer": loaded.signer(),
            "ak_attributes_checked": q.ak_attributes_checked(),
            "signature_scheme": q.scheme(),
            "signature_hash": q.signature_hash().name(),
            "pcr_selection": a.pcr_select.describe(),
            "pcrs": q.pcrs().to_json(),
            "pcr_digest": hex::encode(&a.pcr_digest),
            "nonce": hex::encode(&a.extra_data),
            "nonce_checked": q.nonce_checked(),
            "clock": a.clock_info.clock,
            "reset_count": a.clock_info.reset_count,
            "restart_count": a.clock_info.restart_count,
            "safe": a.clock_info.safe,
            "firmware_version": format!("{:#018x}", a.firmware_version),
            "qualified_signer": hex::encode(&a.qualified_signer),
        });
        if let (Some(ev), Some(obj)) = (eventlog, v.as_object_mut()) {
            obj.insert(
                "eventlog".to_string(),
                serde_json::Value::String(ev.to_string()),
            );
        }
        outln!("{v}");
        return;
    }
    outln!("quote: genuine");
    outln!("signer: {}", loaded.signer());
    if !q.ak_attributes_checked() {
        outln!("warning: a bare public key was given; that it is a TPM restricted signing key was not checked");
    }
    outln!("signature: {} with {}", q.scheme(), q.signature_hash());
    outln!("pcr selection: {}", a.pcr_select.describe());
    outln!("pcr digest: {}", hex::encode(&a.pcr_digest));
    outln!("nonce: {} ({nonce_state})", hex::encode(&a.extra_data));
    outln!(
        "clock: {} ms, reset count {}, restart count {}, safe {}",
        a.clock_info.clock,
        a.clock_info.reset_count,
        a.clock_info.restart_count,
        a.clock_info.safe
    );
    outln!("firmware: {:#018x}", a.firmware_version);
    if let Some(ev) = eventlog {
        outln!("event log: {ev}");
    }
}
