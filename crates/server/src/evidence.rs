//! The agent's measured-boot log, parsed and replayed into what appraisal reads.
//!
//! Parsing, replay and naming are the event-log crate's; here each measurement becomes a
//! [`MeasuredEvent`] labelled with the boot component it measured (`boot application
//! \EFI\BOOT\grubx64.efi`, `kernel command line: ...`), so a mismatch reads as what changed.

use nodetrust_appraise::{EventLogEvidence, MeasuredEvent};
use nodetrust_eventlog::component::{self, ComponentKind};
use nodetrust_eventlog::{EventLog, Replay};
use nodetrust_tpm_wire::HashAlg;

/// Longest text shown from an event's data.
const MAX_LABEL_DATA: usize = 160;

fn data_text(data: &[u8]) -> Option<String> {
    let trimmed = data.strip_suffix(&[0]).unwrap_or(data);
    if trimmed.is_empty() || trimmed.len() > 4096 {
        return None;
    }
    let s = std::str::from_utf8(trimmed).ok()?;
    if !s.chars().all(|c| !c.is_control() || c == '\t') {
        return None;
    }
    Some(s.chars().take(MAX_LABEL_DATA).collect())
}

/// Parses a binary TCG event log and replays the banks in `banks` (those the quote covers: no
/// other is compared, and each costs a hash per event).
pub fn from_log(bytes: &[u8], banks: &[HashAlg]) -> Result<EventLogEvidence, String> {
    let log = EventLog::parse(bytes).map_err(|e| format!("the event log is unreadable: {e}"))?;
    let replayed = Replay::run_banks(&log, banks).values();
    let mut events = Vec::with_capacity(log.events.len());
    for ev in log.measurements() {
        if !ev.extends() {
            continue;
        }
        let Ok(pcr) = u8::try_from(ev.pcr) else {
            continue;
        };
        let c = component::describe(ev);
        let label = match c.kind {
            ComponentKind::KernelCommandLine | ComponentKind::GrubCommand => c.statement(),
            ComponentKind::Unknown => match data_text(ev.data) {
                Some(text) => format!("{} {text}", ev.type_label()),
                None => ev.type_label(),
            },
            _ => c.subject(),
        };
        let bytes = ev.digests.iter().map(|d| d.bytes.len()).sum();
        let mut event = MeasuredEvent::with_capacity(pcr, label, ev.digests.len(), bytes);
        for d in ev.digests.iter() {
            // The parser refuses an event naming a bank twice; kept first-wins regardless.
            if let Some(h) = d.hash() {
                event.push_digest(h, d.bytes);
            }
        }
        events.push(event);
    }
    Ok(EventLogEvidence { events, replayed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_data_is_shown_and_binary_is_not() {
        assert_eq!(
            data_text(b"kernel_cmdline: ro quiet\0").as_deref(),
            Some("kernel_cmdline: ro quiet")
        );
        assert_eq!(data_text(&[0x01, 0x02, 0xff]), None);
        assert_eq!(data_text(b""), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(from_log(&[0u8; 7], &[HashAlg::Sha256]).is_err());
        assert!(from_log(&[], &[HashAlg::Sha256]).is_err());
    }
}
