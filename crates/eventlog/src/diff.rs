//! A host's log against its gold machine's, as statements a verdict can quote:
//! `PCR 4: boot application \EFI\ubuntu\grubx64.efi changed (sha256 ab12cd34ef56.. -> ...)`.
//!
//! # Method
//! Events that are extended (not `EV_NO_ACTION`) are compared PCR by PCR on one bank both logs
//! carry (SHA-256 first, then SHA-384, SHA-512, SHA-1). The longest common subsequence of
//! digests is "the same"; what remains on each side is paired by component identity (a boot
//! application by its path, a variable by its name, positional kinds such as the kernel command
//! line or firmware blobs by kind) into *changed* (or *moved*, when only the position differs);
//! the rest is *added* or *removed*. [`diff_measurements`] is the same method for one PCR's
//! (component, digest) lists, e.g. a flavor's reference events against a host's.
//!
//! Logs with no bank in common that this crate knows (SHA-1/256/384/512) give one
//! [`Change::NoCommonBank`], even when identical: they cannot be replayed either.
//!
//! Digests decide what differs; the event data only names it, so a forged type or name can make
//! a statement misleading but cannot hide that a PCR's measurements differ.

use nodetrust_tpm_wire::HashAlg;

use crate::component::{describe, Component, ComponentKind};
use crate::tcg::{Event, EventLog, PCR_COUNT};

/// Largest LCS table (gold events × host events in one PCR); above it, events are paired by
/// identity only.
const MAX_LCS_CELLS: usize = 1 << 20;

/// One way the host's log differs from the gold log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// PCR index (0 for log-wide differences).
    pub pcr: u32,
    /// What differs.
    pub change: Change,
}

/// The kinds of difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The same component was measured with another digest.
    Changed {
        /// The gold log's component.
        gold: Component,
        /// The host's component.
        host: Component,
        /// Bank compared.
        alg: HashAlg,
        /// Gold digest.
        gold_digest: Vec<u8>,
        /// Host digest.
        host_digest: Vec<u8>,
    },
    /// Measured on the host only.
    Added {
        /// The component.
        component: Component,
        /// Bank compared.
        alg: HashAlg,
        /// Its digest.
        digest: Vec<u8>,
    },
    /// Measured on the gold machine only.
    Removed {
        /// The component.
        component: Component,
        /// Bank compared.
        alg: HashAlg,
        /// Its digest.
        digest: Vec<u8>,
    },
    /// The same component with the same digest, measured in another position: the PCR's
    /// value differs although every measurement is known.
    Moved {
        /// The component.
        component: Component,
        /// Bank compared.
        alg: HashAlg,
        /// Its digest.
        digest: Vec<u8>,
    },
    /// The logs share no bank this crate can compare.
    NoCommonBank,
}

impl Difference {
    /// A stable label for metrics and verdict reasons.
    pub fn reason(&self) -> &'static str {
        match &self.change {
            Change::Changed { gold, .. } => match gold.kind {
                ComponentKind::KernelCommandLine => "kernel_command_line_changed",
                ComponentKind::SecureBootVariable | ComponentKind::Authority => {
                    "secure_boot_changed"
                }
                ComponentKind::BootApplication
                | ComponentKind::BootDriver
                | ComponentKind::RuntimeDriver => "boot_image_changed",
                ComponentKind::Kernel | ComponentKind::Initrd => "kernel_changed",
                _ => "component_changed",
            },
            Change::Added { .. } => "component_added",
            Change::Removed { .. } => "component_removed",
            Change::Moved { .. } => "component_moved",
            Change::NoCommonBank => "no_common_bank",
        }
    }
}

fn short(d: &[u8]) -> String {
    let h = hex::encode(d);
    match h.get(..12) {
        Some(p) if h.len() > 12 => format!("{p}.."),
        _ => h,
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.change {
            Change::NoCommonBank => f.write_str("the logs share no digest bank to compare"),
            Change::Changed {
                gold,
                host,
                alg,
                gold_digest,
                host_digest,
            } => {
                let digests = format!("{alg} {} -> {}", short(gold_digest), short(host_digest));
                let p = self.pcr;
                match gold.kind {
                    ComponentKind::KernelCommandLine | ComponentKind::GrubCommand => {
                        write!(
                            f,
                            "PCR {p}: {} differs: `{}` -> `{}`",
                            gold.kind.label(),
                            gold.name,
                            host.name
                        )
                    }
                    _ if gold.name != host.name || gold.detail != host.detail => {
                        let g = with_detail(&gold.name, gold.detail.as_deref());
                        let h = with_detail(&host.name, host.detail.as_deref());
                        write!(
                            f,
                            "PCR {p}: {} differs: {g} -> {h} ({digests})",
                            gold.kind.label()
                        )
                    }
                    _ => write!(f, "PCR {p}: {} changed ({digests})", gold.subject()),
                }
            }
            Change::Added {
                component,
                alg,
                digest,
            } => write!(
                f,
                "PCR {}: {} measured on the host but not on the gold machine ({alg} {})",
                self.pcr,
                component,
                short(digest)
            ),
            Change::Removed {
                component,
                alg,
                digest,
            } => write!(
                f,
                "PCR {}: {} measured on the gold machine but not on the host ({alg} {})",
                self.pcr,
                component,
                short(digest)
            ),
            Change::Moved {
                component,
                alg,
                digest,
            } => write!(
                f,
                "PCR {}: {} measured in another order than on the gold machine ({alg} {})",
                self.pcr,
                component,
                short(digest)
            ),
        }
    }
}

fn with_detail(name: &str, detail: Option<&str>) -> String {
    match (name.is_empty(), detail) {
        (true, Some(d)) => d.to_string(),
        (false, Some(d)) => format!("{name} ({d})"),
        (_, None) => name.to_string(),
    }
}

/// The bank both logs carry, preferring SHA-256.
fn common_bank(gold: &EventLog<'_>, host: &EventLog<'_>) -> Option<HashAlg> {
    let has = |log: &EventLog<'_>, h: HashAlg| log.algorithms().iter().any(|a| a.id == h.id());
    [
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Sha1,
    ]
    .into_iter()
    .find(|h| has(gold, *h) && has(host, *h))
}

/// Identity used to pair unmatched events: kinds that occur once per boot step pair by
/// position, the others by name.
fn key(c: &Component) -> (ComponentKind, &str) {
    use ComponentKind as K;
    match c.kind {
        K::FirmwareBlob
        | K::KernelCommandLine
        | K::GrubCommand
        | K::Kernel
        | K::Initrd
        | K::Separator
        | K::PartitionTable
        | K::CrtmVersion
        | K::PostCode
        | K::PlatformConfig
        | K::TaggedEvent
        | K::MeasuredLaunch => (c.kind, ""),
        _ => (c.kind, c.name.as_str()),
    }
}

/// Compares a host's log with its gold machine's.
pub fn diff(gold: &EventLog<'_>, host: &EventLog<'_>) -> Vec<Difference> {
    let Some(alg) = common_bank(gold, host) else {
        return vec![Difference {
            pcr: 0,
            change: Change::NoCommonBank,
        }];
    };
    let mut out = Vec::new();
    for pcr in 0..PCR_COUNT {
        let g = events(gold, pcr);
        let h = events(host, pcr);
        if g.is_empty() && h.is_empty() {
            continue;
        }
        let gd: Vec<&[u8]> = g
            .iter()
            .map(|e| e.digest(alg).unwrap_or_default())
            .collect();
        let hd: Vec<&[u8]> = h
            .iter()
            .map(|e| e.digest(alg).unwrap_or_default())
            .collect();
        diff_pcr(
            pcr,
            alg,
            (&gd, |i| g.get(i).map(|e| describe(e))),
            (&hd, |i| h.get(i).map(|e| describe(e))),
            &mut out,
        );
    }
    out
}

/// Compares the measurements of one PCR with the same method as [`diff`], for callers that
/// keep measurements rather than logs (a flavor's reference events): `gold` and `host` are
/// (component, digest in `alg`) in log order.
pub fn diff_measurements(
    pcr: u32,
    alg: HashAlg,
    gold: &[(Component, &[u8])],
    host: &[(Component, &[u8])],
) -> Vec<Difference> {
    let gd: Vec<&[u8]> = gold.iter().map(|(_, d)| *d).collect();
    let hd: Vec<&[u8]> = host.iter().map(|(_, d)| *d).collect();
    let mut out = Vec::new();
    diff_pcr(
        pcr,
        alg,
        (&gd, |i| gold.get(i).map(|(c, _)| c.clone())),
        (&hd, |i| host.get(i).map(|(c, _)| c.clone())),
        &mut out,
    );
    out
}

fn events<'e, 'a>(log: &'e EventLog<'a>, pcr: u32) -> Vec<&'e Event<'a>> {
    log.measurements()
        .filter(|e| e.pcr == pcr && e.extends())
        .collect()
}

/// One side of a PCR's comparison: digests in log order, and how to name event `i` (asked
/// only for events outside the common subsequence).
type Side<'s, F> = (&'s [&'s [u8]], F);

fn diff_pcr<G, H>(
    pcr: u32,
    alg: HashAlg,
    (g, name_g): Side<'_, G>,
    (h, name_h): Side<'_, H>,
    out: &mut Vec<Difference>,
) where
    G: Fn(usize) -> Option<Component>,
    H: Fn(usize) -> Option<Component>,
{
    if g == h {
        // Every event in the common subsequence: no difference.
        return;
    }
    let (g_same, h_same) = lcs(g, h);
    let g_left: Vec<(usize, Component)> = (0..g.len())
        .filter(|i| !g_same.get(*i).copied().unwrap_or(false))
        .filter_map(|i| name_g(i).map(|c| (i, c)))
        .collect();
    let mut h_left: Vec<(usize, Component, bool)> = (0..h.len())
        .filter(|i| !h_same.get(*i).copied().unwrap_or(false))
        .filter_map(|i| name_h(i).map(|c| (i, c, false)))
        .collect();
    let mut found: Vec<(usize, Difference)> = Vec::new();
    for (gi, gc) in g_left {
        let gd = g.get(gi).copied().unwrap_or_default();
        let partner = h_left
            .iter_mut()
            .find(|(_, hc, used)| !*used && key(hc) == key(&gc));
        let change = match partner {
            Some((hi, hc, used)) => {
                *used = true;
                let hd = h.get(*hi).copied().unwrap_or_default();
                if gd == hd {
                    Change::Moved {
                        component: gc,
                        alg,
                        digest: gd.to_vec(),
                    }
                } else {
                    Change::Changed {
                        gold: gc,
                        host: hc.clone(),
                        alg,
                        gold_digest: gd.to_vec(),
                        host_digest: hd.to_vec(),
                    }
                }
            }
            None => Change::Removed {
                component: gc,
                alg,
                digest: gd.to_vec(),
            },
        };
        found.push((gi, Difference { pcr, change }));
    }
    for (hi, hc, used) in h_left {
        if !used {
            let hd = h.get(hi).copied().unwrap_or_default();
            found.push((
                hi,
                Difference {
                    pcr,
                    change: Change::Added {
                        component: hc,
                        alg,
                        digest: hd.to_vec(),
                    },
                },
            ));
        }
    }
    found.sort_by_key(|(i, _)| *i);
    out.extend(found.into_iter().map(|(_, d)| d));
}

/// Marks the events in a longest common subsequence of digests.
fn lcs(g: &[&[u8]], h: &[&[u8]]) -> (Vec<bool>, Vec<bool>) {
    let (n, m) = (g.len(), h.len());
    let mut gs = vec![false; n];
    let mut hs = vec![false; m];
    if n.saturating_mul(m) > MAX_LCS_CELLS {
        return (gs, hs);
    }
    let w = m + 1;
    let mut t = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let v = if g.get(i) == h.get(j) {
                t.get((i + 1) * w + j + 1).copied().unwrap_or(0) + 1
            } else {
                let a = t.get((i + 1) * w + j).copied().unwrap_or(0);
                let b = t.get(i * w + j + 1).copied().unwrap_or(0);
                a.max(b)
            };
            if let Some(cell) = t.get_mut(i * w + j) {
                *cell = v;
            }
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if g.get(i) == h.get(j) {
            if let Some(x) = gs.get_mut(i) {
                *x = true;
            }
            if let Some(x) = hs.get_mut(j) {
                *x = true;
            }
            i += 1;
            j += 1;
        } else if t.get((i + 1) * w + j).copied().unwrap_or(0)
            >= t.get(i * w + j + 1).copied().unwrap_or(0)
        {
            i += 1;
        } else {
            j += 1;
        }
    }
    (gs, hs)
}
