//! Event-data integrity: for the event types whose digest the specification defines as the hash
//! of the event data, check that it is.
//!
//! A failure is a [`Finding`], not a parse error: the log still replays, and replay against a
//! quote is what decides trust. A finding says the *data shown for an event* (its name, command
//! line, variable contents) cannot be believed, even when the digests replay correctly.
//!
//! # Rules
//! | event | digest must equal |
//! |---|---|
//! | `EV_S_CRTM_VERSION`, `EV_SEPARATOR`, `EV_EFI_VARIABLE_DRIVER_CONFIG`, `EV_EFI_GPT_EVENT`, `EV_EFI_ACTION`, `EV_ACTION`, `EV_OMIT_BOOT_DEVICE_EVENTS`, `EV_EFI_VARIABLE_BOOT2` | H(event data) |
//! | `EV_EFI_VARIABLE_BOOT` | H(event data), or H(VariableData) as older firmware measures |
//! | `EV_IPL` in PCR 8 (grub) | H(text after the first space) with or without its NUL; or H(event data) (systemd-boot < 251 command line) |
//! | `EV_IPL` in PCR 12 (systemd-stub) | H(event data) |
//!
//! `tpm2_eventlog` checks the first four types and grub's PCR 8 form; on every fixture log the
//! two agree on which events fail (the oracle test compares them). Event 24 of
//! `event-arch-linux.bin`, an old systemd-boot's UTF-16 command line in PCR 8, matches none of
//! the forms and is flagged by both. Digests of banks this crate cannot hash are not checked.

use crate::tcg::{Event, EventLog};
use crate::types as t;
use crate::uefi::VariableData;

/// One event whose digest is not the hash of its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Event number.
    pub event: usize,
    /// Its PCR.
    pub pcr: u32,
    /// Its type.
    pub event_type: u32,
    /// The bank whose digest does not match.
    pub alg: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {} (PCR {}, {}): the {} digest is not the hash of the event data",
            self.event,
            self.pcr,
            t::label(self.event_type),
            self.alg
        )
    }
}

/// Checks every event of `log`.
pub fn check(log: &EventLog<'_>) -> Vec<Finding> {
    log.measurements().flat_map(check_event).collect()
}

/// Checks one event (none for types with no rule).
pub fn check_event(ev: &Event<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let rule: fn(&Event<'_>, nodetrust_tpm_wire::HashAlg, &[u8]) -> bool =
        match (ev.event_type, ev.pcr) {
            (
                t::EV_S_CRTM_VERSION
                | t::EV_SEPARATOR
                | t::EV_EFI_VARIABLE_DRIVER_CONFIG
                | t::EV_EFI_GPT_EVENT
                | t::EV_EFI_ACTION
                | t::EV_ACTION
                | t::EV_OMIT_BOOT_DEVICE_EVENTS
                | t::EV_EFI_VARIABLE_BOOT2,
                _,
            )
            | (t::EV_IPL, 12) => |ev, alg, d| alg.digest(ev.data) == d,
            (t::EV_EFI_VARIABLE_BOOT, _) => |ev, alg, d| {
                alg.digest(ev.data) == d
                    || VariableData::parse(ev.data).is_some_and(|v| alg.digest(v.data) == d)
            },
            (t::EV_IPL, 8) => |ev, alg, d| {
                if alg.digest(ev.data) == d {
                    return true;
                }
                let Some(space) = ev.data.iter().position(|b| *b == b' ') else {
                    return false;
                };
                let Some(tail) = ev.data.get(space + 1..) else {
                    return false;
                };
                let without_nul = tail.strip_suffix(&[0]).unwrap_or(tail);
                alg.digest(without_nul) == d || alg.digest(tail) == d
            },
            _ => return out,
        };
    for d in &ev.digests {
        if let Some(alg) = d.hash() {
            if !rule(ev, alg, d.bytes) {
                out.push(Finding {
                    event: ev.number,
                    pcr: ev.pcr,
                    event_type: ev.event_type,
                    alg: alg.name().to_string(),
                });
            }
        }
    }
    out
}
