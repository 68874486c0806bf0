//! What changed between two runtime policies (`nodetrust policy diff`).

use std::collections::{BTreeMap, BTreeSet};

use super::keys::KeyId;
use super::policy::{FileDigest, RuntimePolicy};

/// One difference, from the old policy to the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDifference {
    /// A setting changed (`label`, `boot_aggregate`, `violations`).
    Setting {
        /// Its name.
        name: &'static str,
        /// Old value.
        old: String,
        /// New value.
        new: String,
    },
    /// A path the old policy did not list.
    PathAdded {
        /// The path.
        path: String,
        /// Its digests.
        digests: Vec<FileDigest>,
    },
    /// A path the new policy no longer lists.
    PathRemoved {
        /// The path.
        path: String,
        /// Its old digests.
        digests: Vec<FileDigest>,
    },
    /// A path listed by both, with other digests.
    DigestsChanged {
        /// The path.
        path: String,
        /// Digests only the new policy allows.
        added: Vec<FileDigest>,
        /// Digests only the old policy allowed.
        removed: Vec<FileDigest>,
    },
    /// An exclude (`glob PATTERN` or `regex PATTERN`) added.
    ExcludeAdded(String),
    /// An exclude removed.
    ExcludeRemoved(String),
    /// A trusted key added (`0x1a2b3c4d RSA 2048 (label)`).
    KeyAdded(KeyId, String),
    /// A trusted key removed.
    KeyRemoved(KeyId, String),
    /// A key id kept with another public key.
    KeyChanged(KeyId, String),
}

fn list(ds: &[FileDigest]) -> String {
    ds.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for PolicyDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Setting { name, old, new } => write!(f, "~ {name}: {old} -> {new}"),
            Self::PathAdded { path, digests } => write!(f, "+ {path} {}", list(digests)),
            Self::PathRemoved { path, digests } => write!(f, "- {path} {}", list(digests)),
            Self::DigestsChanged {
                path,
                added,
                removed,
            } => {
                write!(f, "~ {path}")?;
                if !added.is_empty() {
                    write!(f, " + {}", list(added))?;
                }
                if !removed.is_empty() {
                    write!(f, " - {}", list(removed))?;
                }
                Ok(())
            }
            Self::ExcludeAdded(e) => write!(f, "+ exclude {e}"),
            Self::ExcludeRemoved(e) => write!(f, "- exclude {e}"),
            Self::KeyAdded(id, what) => write!(f, "+ key {id} {what}"),
            Self::KeyRemoved(id, what) => write!(f, "- key {id} {what}"),
            Self::KeyChanged(id, what) => write!(f, "~ key {id} now {what}"),
        }
    }
}

fn excludes(p: &RuntimePolicy) -> BTreeSet<String> {
    p.excludes
        .iter()
        .map(|g| format!("glob {g}"))
        .chain(p.exclude_regexes.iter().map(|r| format!("regex {r}")))
        .collect()
}

/// The differences from `old` to `new`: settings, then excludes, keys, and paths in path
/// order. Empty when the policies allow the same.
pub fn diff_policies(old: &RuntimePolicy, new: &RuntimePolicy) -> Vec<PolicyDifference> {
    let mut out = Vec::new();
    let mut setting = |name, a: String, b: String| {
        if a != b {
            out.push(PolicyDifference::Setting {
                name,
                old: a,
                new: b,
            });
        }
    };
    setting(
        "label",
        format!("{:?}", old.label),
        format!("{:?}", new.label),
    );
    setting(
        "boot_aggregate",
        format!("{:?}", old.boot_aggregate).to_lowercase(),
        format!("{:?}", new.boot_aggregate).to_lowercase(),
    );
    setting(
        "violations",
        format!("{:?}", old.violations).to_lowercase(),
        format!("{:?}", new.violations).to_lowercase(),
    );
    let (eo, en) = (excludes(old), excludes(new));
    out.extend(
        en.difference(&eo)
            .map(|e| PolicyDifference::ExcludeAdded(e.clone())),
    );
    out.extend(
        eo.difference(&en)
            .map(|e| PolicyDifference::ExcludeRemoved(e.clone())),
    );
    let describe = |k: &super::keys::TrustedKey| {
        if k.label().is_empty() {
            k.kind()
        } else {
            format!("{} ({})", k.kind(), k.label())
        }
    };
    let ko: BTreeMap<KeyId, _> = old.keys.iter().map(|k| (k.key_id(), k)).collect();
    let kn: BTreeMap<KeyId, _> = new.keys.iter().map(|k| (k.key_id(), k)).collect();
    for (id, k) in &kn {
        match ko.get(id) {
            None => out.push(PolicyDifference::KeyAdded(*id, describe(k))),
            Some(o) if o.public_key() != k.public_key() => {
                out.push(PolicyDifference::KeyChanged(*id, describe(k)))
            }
            Some(_) => {}
        }
    }
    for (id, k) in &ko {
        if !kn.contains_key(id) {
            out.push(PolicyDifference::KeyRemoved(*id, describe(k)));
        }
    }
    let mut a = old.digests.iter().peekable();
    let mut b = new.digests.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((pa, da)), Some((pb, db))) if pa == pb => {
                let added: Vec<FileDigest> =
                    db.iter().filter(|d| !da.contains(d)).cloned().collect();
                let removed: Vec<FileDigest> =
                    da.iter().filter(|d| !db.contains(d)).cloned().collect();
                if !added.is_empty() || !removed.is_empty() {
                    out.push(PolicyDifference::DigestsChanged {
                        path: (*pa).clone(),
                        added,
                        removed,
                    });
                }
                a.next();
                b.next();
            }
            (Some((pa, da)), pb) if pb.is_none_or(|(pb, _)| pa < pb) => {
                out.push(PolicyDifference::PathRemoved {
                    path: (*pa).clone(),
                    digests: (*da).clone(),
                });
                a.next();
            }
            (_, Some((pb, db))) => {
                out.push(PolicyDifference::PathAdded {
                    path: (*pb).clone(),
                    digests: (*db).clone(),
                });
                b.next();
            }
            (Some(_), None) => {
                // Covered by the arm above (`pb.is_none_or`); kept for exhaustiveness.
                a.next();
            }
        }
    }
    out
}
