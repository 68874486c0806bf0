//! `TPMS_ATTEST`: what a TPM signs when it quotes.

use crate::codec::{Reader, Writer};
use crate::error::WireError;
use crate::pcr::PcrSelection;
use crate::public::MAX_DIGEST;

/// `TPM_GENERATED_VALUE`: the TPM puts it first in everything it signs.
pub const TPM_GENERATED: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// Largest `TPM2B_NAME`: a hash algorithm id plus a SHA-512 digest.
pub const MAX_NAME: usize = 2 + 64;
/// Largest `TPM2B_DATA` (extraData, the nonce).
pub const MAX_EXTRA_DATA: usize = 64;

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was made.
    pub clock: u64,
    /// Number of TPM resets (reboots) since the TPM was made.
    pub reset_count: u32,
    /// Number of TPM restarts (resume from hibernation) since the last reset.
    pub restart_count: u32,
    /// Whether the clock has not gone backwards.
    pub safe: bool,
}

/// A parsed `TPMS_ATTEST` of type quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// qualifiedSigner: the qualified name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// extraData: the verifier's nonce.
    pub extra_data: Vec<u8>,
    /// clockInfo.
    pub clock_info: ClockInfo,
    /// firmwareVersion, vendor-specific.
    pub firmware_version: u64,
    /// The quoted PCR selection.
    pub pcr_select: PcrSelection,
    /// The digest of the selected PCR values.
    pub pcr_digest: Vec<u8>,
}

impl Attest {
    /// Parses a `TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE` that fills `bytes` exactly.
    pub fn parse_quote(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED {
            return Err(WireError::InvalidValue {
                field: "magic",
                value: u64::from(magic),
            });
        }
        let ty = r.u16("type")?;
        if ty != ST_ATTEST_QUOTE {
            return Err(WireError::InvalidValue {
                field: "type",
                value: u64::from(ty),
            });
        }
        let qualified_signer = r.tpm2b("qualifiedSigner", MAX_NAME)?.to_vec();
        let extra_data = r.tpm2b("extraData", MAX_EXTRA_DATA)?.to_vec();
        let clock = r.u64("clockInfo.clock")?;
        let reset_count = r.u32("clockInfo.resetCount")?;
        let restart_count = r.u32("clockInfo.restartCount")?;
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            v => {
                return Err(WireError::InvalidValue {
                    field: "clockInfo.safe",
                    value: u64::from(v),
                })
            }
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let pcr_select = PcrSelection::read(&mut r)?;
        let pcr_digest = r.tpm2b("pcrDigest", MAX_DIGEST)?.to_vec();
        r.finish("TPMS_ATTEST")?;
        Ok(Self {
            qualified_signer,
            extra_data,
            clock_info: ClockInfo {
                clock,
                reset_count,
                restart_count,
                safe,
            },
            firmware_version,
            pcr_select,
            pcr_digest,
        })
    }
}

impl Attest {
    /// Marshals as a `TPMS_ATTEST` of type quote (for software attesters and tests).
    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        let mut w = Writer::new();
        w.u32(TPM_GENERATED).u16(ST_ATTEST_QUOTE);
        w.tpm2b(&self.qualified_signer)?;
        w.tpm2b(&self.extra_data)?;
        w.bytes(&self.clock_info.clock.to_be_bytes());
        w.u32(self.clock_info.reset_count)
            .u32(self.clock_info.restart_count);
        w.bytes(&[u8::from(self.clock_info.safe)]);
        w.bytes(&self.firmware_version.to_be_bytes());
        self.pcr_select.write(&mut w);
        w.tpm2b(&self.pcr_digest)?;
        Ok(w.into_bytes())
    }
}
