//! Flavors: the gold standard a host's measurements are compared with.
//!
//! Parts follow the split operators know from ISecL:
//! - [`FlavorPart::Platform`]: firmware, Secure Boot configuration, measured-launch ACM
//!   (PCRs 0-3, 5-7, 17).
//! - [`FlavorPart::Os`]: boot loader and kernel (PCRs 4, 8, 9, 18, 19).
//! - [`FlavorPart::HostUnique`]: what differs per host, such as the kernel command line or the
//!   initrd, measured into PCRs 8 and 9. A HOST_UNIQUE flavor belongs to one host.
//! - [`FlavorPart::Runtime`]: what may run after boot: a runtime (IMA) policy
//!   ([`RuntimePolicy`]) checked against the host's IMA log, which replays to PCR 10. A
//!   RUNTIME flavor holds no PCR rule; it applies to every host, or to its `host_name` only.
//!
//! A flavor holds [`PcrRule`]s. A rule with a `value` requires that exact quoted PCR value. A
//! rule without one requires the host's (replay-checked) log to hold exactly the rule's events
//! on that PCR, counting only the events of the rule's [`EventScope`]: that is how OS and
//! HOST_UNIQUE share PCRs 8 and 9 (the OS flavor checks the boot loader's and kernel's
//! measurements, the HOST_UNIQUE flavor the command line and initrd).

use std::collections::BTreeSet;

use nodetrust_tpm_wire::{HashAlg, VerifiedQuote};
use serde::{Deserialize, Serialize};

pub use crate::evidence::is_host_unique;
use crate::evidence::{EventLogEvidence, MeasuredEvent};
use crate::runtime::{RuntimePolicy, BOOT_AGGREGATE_PCRS, IMA_PCR};
use nodetrust_eventlog::ima::ImaEntry;

/// A flavor part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlavorPart {
    /// Firmware, Secure Boot, measured-launch ACM.
    Platform,
    /// Boot loader and kernel.
    Os,
    /// Per-host measurements (command line, initrd).
    HostUnique,
    /// Runtime integrity: a runtime (IMA) policy.
    Runtime,
}

impl FlavorPart {
    /// Every part.
    pub const ALL: [FlavorPart; 4] = [
        FlavorPart::Platform,
        FlavorPart::Os,
        FlavorPart::HostUnique,
        FlavorPart::Runtime,
    ];

    /// The PCRs the part covers.
    pub fn pcrs(self) -> &'static [u8] {
        match self {
            Self::Platform => &[0, 1, 2, 3, 5, 6, 7, 17],
            Self::Os => &[4, 8, 9, 18, 19],
            Self::HostUnique => &[8, 9],
            Self::Runtime => &[IMA_PCR],
        }
    }

    /// `PLATFORM`, `OS`, `HOST_UNIQUE`, `RUNTIME`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "PLATFORM",
            Self::Os => "OS",
            Self::HostUnique => "HOST_UNIQUE",
            Self::Runtime => "RUNTIME",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for FlavorPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of a PCR's events a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventScope {
    /// Every event.
    #[default]
    All,
    /// Events that are the same on every host built alike (not [`is_host_unique`]).
    Shared,
    /// Only per-host events ([`is_host_unique`]).
    HostUnique,
}

impl EventScope {
    /// Whether `event` counts for this scope ([`is_host_unique`] of its label).
    pub fn includes(self, event: &MeasuredEvent) -> bool {
        match self {
            Self::All => true,
            Self::Shared => !event.is_host_unique(),
            Self::HostUnique => event.is_host_unique(),
        }
    }
}

/// A named event digest the gold host's log held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    /// Label, for explanations.
    pub label: String,
    /// Digest, hex.
    #[serde(with = "hex_bytes")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "e551c902"))]
    pub digest: Vec<u8>,
}

/// What one PCR must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PcrRule {
    /// Bank (`sha256`, `sha1`, ...).
    #[serde(with = "bank_name")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "sha256"))]
    pub bank: HashAlg,
    /// PCR index.
    #[cfg_attr(feature = "openapi", schema(maximum = 23))]
    pub index: u8,
    /// The exact value, hex; absent when the rule checks events only.
    #[serde(with = "hex_opt", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub value: Option<Vec<u8>>,
    /// Which events the rule counts.
    #[serde(default)]
    pub scope: EventScope,
    /// The gold host's events on this PCR (in scope), in log order.
    #[serde(default)]
    pub events: Vec<EventRule>,
}

/// A flavor: one part's reference measurements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    /// Identifier (assigned by the store).
    #[serde(default)]
    pub id: String,
    /// A human name, e.g. `gold-1 OS`.
    pub label: String,
    /// The part.
    pub part: FlavorPart,
    /// For HOST_UNIQUE: the host it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// The host the flavor was imported from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_host: Option<String>,
    /// Whether evidence from a software TPM may match. Off unless said so: a software TPM can
    /// claim any measurement.
    #[serde(default)]
    pub allow_software_tpm: bool,
    /// The rules (none for RUNTIME).
    #[serde(default)]
    pub pcrs: Vec<PcrRule>,
    /// For RUNTIME: the runtime (IMA) policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub runtime: Option<RuntimePolicy>,
}

/// Why a flavor is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlavorError {
    /// The flavor has no rule.
    #[error("flavor {0:?} has no PCR rule")]
    Empty(String),
    /// A rule is about a PCR outside the part.
    #[error("flavor {label:?}: PCR {index} is not part of {part} (PCRs {allowed:?})")]
    PcrOutsidePart {
        /// Flavor label.
        label: String,
        /// Part.
        part: FlavorPart,
        /// PCR.
        index: u8,
        /// The part's PCRs.
        allowed: &'static [u8],
    },
    /// A digest of the wrong length for its bank.
    #[error(
        "flavor {label:?}: {bank} PCR {index}: a digest has {len} bytes, the bank needs {expected}"
    )]
    BadDigest {
        /// Flavor label.
        label: String,
        /// Bank.
        bank: HashAlg,
        /// PCR.
        index: u8,
        /// Found.
        len: usize,
        /// Needed.
        expected: usize,
    },
    /// A rule with neither a value nor events checks nothing.
    #[error("flavor {label:?}: {bank} PCR {index} has neither a value nor events")]
    EmptyRule {
        /// Flavor label.
        label: String,
        /// Bank.
        bank: HashAlg,
        /// PCR.
        index: u8,
    },
    /// HOST_UNIQUE flavors must name their host.
    #[error("flavor {0:?}: a HOST_UNIQUE flavor needs host_name")]
    HostUniqueWithoutHost(String),
    /// A RUNTIME flavor needs a runtime policy, and only it has one.
    #[error("flavor {0:?}: a RUNTIME flavor holds a runtime policy (\"runtime\") and no PCR rule; other parts hold no runtime policy")]
    RuntimePolicyPlacement(String),
    /// The runtime policy is not valid.
    #[error("flavor {label:?}: runtime policy: {reason}")]
    BadRuntimePolicy {
        /// Flavor label.
        label: String,
        /// Why.
        reason: String,
    },
}

impl Flavor {
    /// Checks that the flavor is well formed.
    pub fn validate(&self) -> Result<(), FlavorError> {
        if self.part == FlavorPart::Runtime || self.runtime.is_some() {
            let Some(policy) = self.runtime.as_ref() else {
                return Err(FlavorError::RuntimePolicyPlacement(self.label.clone()));
            };
            if self.part != FlavorPart::Runtime || !self.pcrs.is_empty() {
                return Err(FlavorError::RuntimePolicyPlacement(self.label.clone()));
            }
            return policy
                .validate()
                .and_then(|()| policy.compile().map(|_| ()))
                .map_err(|e| FlavorError::BadRuntimePolicy {
                    label: self.label.clone(),
                    reason: e.to_string(),
                });
        }
        if self.pcrs.is_empty() {
            return Err(FlavorError::Empty(self.label.clone()));
        }
        if self.part == FlavorPart::HostUnique && self.host_name.is_none() {
            return Err(FlavorError::HostUniqueWithoutHost(self.label.clone()));
        }
        for r in &self.pcrs {
            if !self.part.pcrs().contains(&r.index) {
                return Err(FlavorError::PcrOutsidePart {
                    label: self.label.clone(),
                    part: self.part,
                    index: r.index,
                    allowed: self.part.pcrs(),
                });
            }
            let digests = r.value.iter().chain(r.events.iter().map(|e| &e.digest));
            for d in digests {
                if d.len() != r.bank.size() {
                    return Err(FlavorError::BadDigest {
                        label: self.label.clone(),
                        bank: r.bank,
                        index: r.index,
                        len: d.len(),
                        expected: r.bank.size(),
                    });
                }
            }
            if r.value.is_none() && r.events.is_empty() {
                return Err(FlavorError::EmptyRule {
                    label: self.label.clone(),
                    bank: r.bank,
                    index: r.index,
                });
            }
        }
        Ok(())
    }

    /// The (bank, PCR) pairs the flavor needs quoted. A RUNTIME flavor needs PCR 10 and, for
    /// the `boot_aggregate` entry, PCRs 0-9, in the SHA-256 bank.
    pub fn needed_pcrs(&self) -> BTreeSet<(HashAlg, u8)> {
        let mut out: BTreeSet<(HashAlg, u8)> =
            self.pcrs.iter().map(|r| (r.bank, r.index)).collect();
        if self.part == FlavorPart::Runtime {
            out.extend(
                BOOT_AGGREGATE_PCRS
                    .chain([IMA_PCR])
                    .map(|i| (HashAlg::Sha256, i)),
            );
        }
        out
    }
}

/// Why flavors could not be imported from a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// No part was asked for.
    #[error("no flavor part requested")]
    NoParts,
    /// The quote does not cover the part's PCRs.
    #[error("{part}: the host's quote covers none of PCRs {pcrs:?}")]
    NotQuoted {
        /// Part.
        part: FlavorPart,
        /// The part's PCRs.
        pcrs: &'static [u8],
    },
    /// HOST_UNIQUE needs an event log to tell per-host events apart.
    #[error("HOST_UNIQUE: the host sent no event log, so its per-host measurements cannot be told apart")]
    NoEventLog,
    /// The log has no per-host events.
    #[error("HOST_UNIQUE: the host's event log has no per-host measurement (command line, initrd) on PCRs 8-9")]
    NoHostUniqueEvents,
    /// The log does not replay to the quoted PCRs, so its events cannot be used.
    #[error(
        "the host's event log does not replay to its quoted PCRs ({0}); refusing to import from it"
    )]
    LogDoesNotReplay(String),
    /// RUNTIME needs the host's IMA log.
    #[error("RUNTIME: the host sent no IMA log (a kernel without IMA, or the agent's --ima-log does not point at it)")]
    NoImaLog,
    /// The IMA log cannot be used.
    #[error("RUNTIME: {0}; refusing to import from it")]
    BadImaLog(String),
    /// The learned policy breaks a limit.
    #[error("RUNTIME: the learned runtime policy is not valid: {0}")]
    RuntimePolicy(String),
}

/// Builds flavors for `parts` from a gold host's verified quote and (replay-checked) log.
///
/// Takes a [`VerifiedQuote`] so that a flavor is never made from unverified claims. Flavors
/// made from a software TPM allow software TPMs (an operator who imports from one has chosen
/// to); the caller assigns ids.
pub fn flavors_from_evidence(
    verified: &VerifiedQuote,
    log: Option<&EventLogEvidence>,
    parts: &[FlavorPart],
    host_name: &str,
    software_tpm: bool,
) -> Result<Vec<Flavor>, ImportError> {
    if parts.is_empty() {
        return Err(ImportError::NoParts);
    }
    if let Some(log) = log {
        let bad = log.replay_mismatches(verified);
        if !bad.is_empty() {
            return Err(ImportError::LogDoesNotReplay(bad.join("; ")));
        }
    }
    let quoted = verified.pcrs();
    let mut out = Vec::new();
    let unique_parts: BTreeSet<FlavorPart> = parts.iter().copied().collect();
    for part in unique_parts {
        if part == FlavorPart::Runtime {
            // RUNTIME flavors come from the IMA log: `runtime_flavor_from_ima`.
            continue;
        }
        let mut rules = Vec::new();
        for bank in quoted.banks() {
            for &index in part.pcrs() {
                let Some(value) = quoted.get(bank, index) else {
                    continue;
                };
                let events_in = |scope: EventScope| -> Vec<EventRule> {
                    log.map(|l| {
                        l.events_for(bank, index)
                            .filter(|(e, _)| scope.includes(e))
                            .map(|(e, d)| EventRule {
                                label: e.label().to_string(),
                                digest: d.to_vec(),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
                };
                let has_unique = !events_in(EventScope::HostUnique).is_empty();
                let rule = match part {
                    FlavorPart::Platform => Some(PcrRule {
                        bank,
                        index,
                        value: Some(value.to_vec()),
                        scope: EventScope::All,
                        events: events_in(EventScope::All),
                    }),
                    FlavorPart::Os if has_unique => Some(PcrRule {
                        bank,
                        index,
                        value: None,
                        scope: EventScope::Shared,
                        events: events_in(EventScope::Shared),
                    }),
                    FlavorPart::Os => Some(PcrRule {
                        bank,
                        index,
                        value: Some(value.to_vec()),
                        scope: EventScope::All,
                        events: events_in(EventScope::All),
                    }),
                    FlavorPart::HostUnique if has_unique => Some(PcrRule {
                        bank,
                        index,
                        value: None,
                        scope: EventScope::HostUnique,
                        events: events_in(EventScope::HostUnique),
                    }),
                    FlavorPart::HostUnique | FlavorPart::Runtime => None,
                };
                rules.extend(rule);
            }
        }
        if rules.is_empty() {
            return Err(match part {
                FlavorPart::HostUnique if log.is_none() => ImportError::NoEventLog,
                FlavorPart::HostUnique => ImportError::NoHostUniqueEvents,
                _ => ImportError::NotQuoted {
                    part,
                    pcrs: part.pcrs(),
                },
            });
        }
        out.push(Flavor {
            id: String::new(),
            label: format!("{host_name} {part}"),
            part,
            host_name: (part == FlavorPart::HostUnique).then(|| host_name.to_string()),
            source_host: Some(host_name.to_string()),
            allow_software_tpm: software_tpm,
            pcrs: rules,
            runtime: None,
        });
    }
    Ok(out)
}

/// The entries of an IMA log (from entry 0) that a verified quote covers: the longest prefix
/// after which PCR 10 replays, in every bank the quote has it in, to the quoted value (entries
/// logged after the quote are left out). An error names what does not replay.
pub fn quoted_ima_prefix<'a>(
    verified: &VerifiedQuote,
    entries: &'a [ImaEntry],
) -> Result<&'a [ImaEntry], ImportError> {
    let quoted = verified.pcrs();
    let banks: Vec<HashAlg> = quoted
        .banks()
        .filter(|b| quoted.get(*b, IMA_PCR).is_some())
        .collect();
    if banks.is_empty() {
        return Err(ImportError::NotQuoted {
            part: FlavorPart::Runtime,
            pcrs: FlavorPart::Runtime.pcrs(),
        });
    }
    let mut replay = nodetrust_eventlog::ima::ImaReplay::new(&banks, Default::default());
    let holds = |r: &nodetrust_eventlog::ima::ImaReplay| {
        banks.iter().all(|b| {
            let zero = vec![0u8; b.size()];
            let v = r.value(*b, u32::from(IMA_PCR)).unwrap_or(&zero);
            quoted.get(*b, IMA_PCR) == Some(v)
        })
    };
    let mut covered = holds(&replay).then_some(0);
    for (i, e) in entries.iter().enumerate() {
        replay
            .extend(std::slice::from_ref(e))
            .map_err(|err| ImportError::BadImaLog(err.to_string()))?;
        if holds(&replay) {
            covered = Some(i + 1);
        }
    }
    let covered = covered.ok_or_else(|| {
        ImportError::BadImaLog(format!(
            "the host's IMA log ({} entries) does not replay to its quoted PCR 10",
            entries.len()
        ))
    })?;
    Ok(entries.get(..covered).unwrap_or_default())
}

/// Builds a RUNTIME flavor from a gold host's verified quote and its IMA log (from entry 0):
/// every file measured up to the quote is allowed with the digest it had
/// ([`RuntimePolicy::learn`]); `boot_aggregate` is required to match each host's own quote.
pub fn runtime_flavor_from_ima(
    verified: &VerifiedQuote,
    entries: &[ImaEntry],
    host_name: &str,
    software_tpm: bool,
) -> Result<Flavor, ImportError> {
    let covered = quoted_ima_prefix(verified, entries)?;
    let mut policy = RuntimePolicy::new();
    policy.label = format!("learned from {host_name}");
    policy
        .learn(covered)
        .map_err(|e| ImportError::RuntimePolicy(e.to_string()))?;
    policy
        .validate()
        .map_err(|e| ImportError::RuntimePolicy(e.to_string()))?;
    Ok(Flavor {
        id: String::new(),
        label: format!("{host_name} {}", FlavorPart::Runtime),
        part: FlavorPart::Runtime,
        host_name: None,
        source_host: Some(host_name.to_string()),
        allow_software_tpm: software_tpm,
        pcrs: Vec::new(),
        runtime: Some(policy),
    })
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > 128 {
            return Err(serde::de::Error::custom("digest longer than 64 bytes"));
        }
        hex::decode(s.trim()).map_err(serde::de::Error::custom)
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            if s.len() > 128 {
                return Err(serde::de::Error::custom("digest longer than 64 bytes"));
            }
            hex::decode(s.trim()).map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

mod bank_name {
    use nodetrust_tpm_wire::HashAlg;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &HashAlg, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashAlg, D::Error> {
        let s = String::deserialize(d)?;
        HashAlg::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown PCR bank {s:?}")))
    }
}
