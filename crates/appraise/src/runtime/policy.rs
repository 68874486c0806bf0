//! The runtime policy file.
//!
//! ```json
//! {
//!   "version": 1,
//!   "label": "worker image 2025-06",
//!   "boot_aggregate": "require",
//!   "violations": "fail",
//!   "keys": [{"key_id": "0x1a2b3c4d", "public_key": "-----BEGIN PUBLIC KEY-----\n...", "label": "vendor"}],
//!   "excludes": ["/tmp/*", "/var/log/*"],
//!   "exclude_regexes": ["^/var/lib/containers/.*"],
//!   "digests": {"/usr/bin/bash": ["sha256:5b1c…", "sha256:77aa…"]}
//! }
//! ```
//! Every field but `version` may be left out. Unknown fields are refused (a misspelt
//! `exlcudes` must not silently allow nothing). Sizes are bounded ([`MAX_POLICY_BYTES`] and
//! the limits below); an operator's file is not an attacker's, but a policy is also stored
//! and sent over the API.

use std::collections::BTreeMap;

use nodetrust_eventlog::ima::{ImaEntry, Template};
use nodetrust_tpm_wire::HashAlg;
use serde::{Deserialize, Serialize};

use super::compiled::CompiledPolicy;
use super::glob::{Glob, GlobError, MAX_GLOB_LEN};
use super::keys::{KeyError, TrustedKey};

/// The policy format this crate writes and reads.
pub const RUNTIME_POLICY_VERSION: u32 = 1;
/// Largest policy file (a whole distribution is a few hundred thousand files, ~50 MB).
pub const MAX_POLICY_BYTES: usize = 256 << 20;
/// Most paths.
pub(crate) const MAX_PATHS: usize = 4 << 20;
/// Most digests for one path.
pub(crate) const MAX_DIGESTS_PER_PATH: usize = 64;
/// Longest path (Linux's `PATH_MAX`).
pub(crate) const MAX_PATH: usize = 4096;
/// Most exclude globs, and most exclude regular expressions.
pub(crate) const MAX_EXCLUDES: usize = 4096;
/// Most trusted keys.
pub(crate) const MAX_KEYS: usize = 1024;
/// Longest label.
const MAX_LABEL: usize = 1024;
/// Longest digest (SHA-512, Streebog-512, Whirlpool-512).
const MAX_DIGEST: usize = 64;

/// What the first entry, `boot_aggregate`, must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootAggregateRule {
    /// The log starts with `boot_aggregate`, whose digest equals the hash of the quoted PCRs
    /// 0–9 (or 0–7, kernels before 5.8) in the bank its digest algorithm names.
    #[default]
    Require,
    /// Not checked (the entry is still replayed).
    Ignore,
}

/// What an IMA violation (a file measured while open for writing, logged with a zero template
/// hash and extended as all-ones) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationRule {
    /// The host is untrusted, the reason names the file.
    #[default]
    Fail,
    /// Counted and reported, not a failure.
    Allow,
}

/// A file digest with its IMA algorithm name: `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileDigest {
    /// Algorithm as IMA names it (`sha1`, `sha256`, `sha512`, `sm3`, ...).
    pub alg: String,
    /// Digest bytes.
    pub digest: Vec<u8>,
}

/// Digest sizes of the algorithms IMA names.
fn known_size(alg: &str) -> Option<usize> {
    Some(match alg {
        "md4" | "md5" | "rmd128" | "tgr128" => 16,
        "sha1" | "rmd160" | "tgr160" => 20,
        "tgr192" => 24,
        "sha224" => 28,
        "sha256" | "rmd256" | "wp256" | "sm3" | "sm3-256" | "streebog256" | "sha3-256" => 32,
        "rmd320" => 40,
        "sha384" | "wp384" | "sha3-384" => 48,
        "sha512" | "wp512" | "streebog512" | "sha3-512" => 64,
        _ => return None,
    })
}

impl FileDigest {
    /// Checks the algorithm name (1 to 32 of `[a-z0-9_-]`) and, for a known algorithm, the
    /// digest's length.
    pub fn new(alg: &str, digest: Vec<u8>) -> Result<Self, PolicyError> {
        let bad = || PolicyError::BadDigest(format!("{alg}:{}", hex::encode(&digest)));
        if alg.is_empty()
            || alg.len() > 32
            || !alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(bad());
        }
        if digest.is_empty() || digest.len() > MAX_DIGEST {
            return Err(bad());
        }
        if known_size(alg).is_some_and(|n| n != digest.len()) {
            return Err(bad());
        }
        Ok(Self {
            alg: alg.to_string(),
            digest,
        })
    }

    /// A digest by one of the PCR-bank hashes.
    pub fn of(alg: HashAlg, data: &[u8]) -> Self {
        Self {
            alg: alg.name().to_string(),
            digest: alg.digest(data),
        }
    }

    /// The digest an IMA entry logs for its file.
    pub fn of_entry(e: &ImaEntry) -> Result<Self, PolicyError> {
        Self::new(&e.file_alg, e.file_digest.clone())
    }
}

impl std::str::FromStr for FileDigest {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::BadDigest(s.chars().take(160).collect());
        let (alg, h) = s.split_once(':').ok_or_else(bad)?;
        if h.len() > 2 * MAX_DIGEST {
            return Err(bad());
        }
        let d = hex::decode(h).map_err(|_| bad())?;
        Self::new(alg, d)
    }
}

impl TryFrom<String> for FileDigest {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, PolicyError> {
        s.parse()
    }
}

impl From<FileDigest> for String {
    fn from(d: FileDigest) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for FileDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.alg, hex::encode(&self.digest))
    }
}

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not JSON of the policy's shape.
    #[error("not a runtime policy: {0}")]
    Json(String),
    /// Larger than [`MAX_POLICY_BYTES`].
    #[error("policy of {0} bytes, more than {MAX_POLICY_BYTES}")]
    TooLarge(usize),
    /// A format version this crate does not read.
    #[error("runtime policy version {0} is not supported (version {RUNTIME_POLICY_VERSION} is)")]
    Version(u32),
    /// A digest that is not `alg:hex` of the algorithm's length.
    #[error("bad file digest {0:?} (expected alg:hex, e.g. sha256:<64 hex digits>)")]
    BadDigest(String),
    /// A path that is empty, too long or holds a NUL byte.
    #[error("bad path {0:?} (1 to 4096 bytes, no NUL)")]
    BadPath(String),
    /// A path with no digest.
    #[error("path {0:?} lists no digest")]
    NoDigest(String),
    /// A limit.
    #[error("too many {what}: {count} (at most {max})")]
    TooMany {
        /// Of what.
        what: &'static str,
        /// Found.
        count: usize,
        /// Allowed.
        max: usize,
    },
    /// An exclude glob.
    #[error(transparent)]
    Glob(#[from] GlobError),
    /// An exclude regular expression that does not compile.
    #[error("exclude regular expression {pattern:?}: {reason}")]
    Regex {
        /// The expression.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Two keys with one key id.
    #[error("two trusted keys have key id {0}")]
    DuplicateKeyId(super::keys::KeyId),
    /// A label that is too long.
    #[error("policy label longer than {MAX_LABEL} bytes")]
    LabelTooLong,
    /// A Keylime policy that cannot be brought over.
    #[error("Keylime runtime policy: {0}")]
    Keylime(String),
}

/// A runtime policy (see the [module documentation](super) for the rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimePolicy {
    /// Format version, [`RUNTIME_POLICY_VERSION`].
    pub version: u32,
    /// A human name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// The `boot_aggregate` rule.
    #[serde(default)]
    pub boot_aggregate: BootAggregateRule,
    /// What IMA violations do.
    #[serde(default)]
    pub violations: ViolationRule,
    /// Keys whose `ima-sig` signatures allow a file without an allowlist line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<TrustedKey>,
    /// Paths never appraised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<Glob>,
    /// Paths never appraised, as regular expressions anchored at the path's start (Keylime's
    /// `excludes`, Python `re.match`); Rust `regex` syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_regexes: Vec<String>,
    /// The allowlist: path → the digests its file may have.
    #[serde(default)]
    pub digests: BTreeMap<String, Vec<FileDigest>>,
}

impl Default for RuntimePolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks a path as policies and logs hold them.
pub(crate) fn check_path(p: &str) -> Result<(), PolicyError> {
    if p.is_empty() || p.len() > MAX_PATH || p.contains('\0') {
        return Err(PolicyError::BadPath(p.chars().take(160).collect()));
    }
    Ok(())
}

/// Writes bytes into a hash (for the fingerprint, without building the JSON).
struct HashWriter(nodetrust_tpm_wire::alg::Hasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl RuntimePolicy {
    /// An empty policy: nothing allowed, boot aggregate required, violations fail.
    pub fn new() -> Self {
        Self {
            version: RUNTIME_POLICY_VERSION,
            label: String::new(),
            boot_aggregate: BootAggregateRule::Require,
            violations: ViolationRule::Fail,
            keys: Vec::new(),
            excludes: Vec::new(),
            exclude_regexes: Vec::new(),
            digests: BTreeMap::new(),
        }
    }

    /// Reads a policy file and [validates](Self::validate) it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge(bytes.len()));
        }
        // The version first, so a newer file says so rather than "unknown field".
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        if let Ok(v) = serde_json::from_slice::<Version>(bytes) {
            if v.version != RUNTIME_POLICY_VERSION {
                return Err(PolicyError::Version(v.version));
            }
        }
        let p: Self =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Json(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// The policy as pretty-printed JSON (keys sorted, digests by path).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every limit and field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.version != RUNTIME_POLICY_VERSION {
            return Err(PolicyError::Version(self.version));
        }
        if self.label.len() > MAX_LABEL {
            return Err(PolicyError::LabelTooLong);
        }
        let too_many = |what, count, max| {
            if count > max {
                Err(PolicyError::TooMany { what, count, max })
            } else {
                Ok(())
            }
        };
        too_many("paths", self.digests.len(), MAX_PATHS)?;
        too_many("exclude globs", self.excludes.len(), MAX_EXCLUDES)?;
        too_many(
            "exclude regular expressions",
            self.exclude_regexes.len(),
            MAX_EXCLUDES,
        )?;
        too_many("trusted keys", self.keys.len(), MAX_KEYS)?;
        for (path, ds) in &self.digests {
            check_path(path)?;
            if ds.is_empty() {
                return Err(PolicyError::NoDigest(path.clone()));
            }
            too_many("digests for one path", ds.len(), MAX_DIGESTS_PER_PATH)?;
        }
        for r in &self.exclude_regexes {
            if r.is_empty() || r.len() > MAX_GLOB_LEN {
                return Err(PolicyError::Regex {
                    pattern: r.chars().take(160).collect(),
                    reason: format!("1 to {MAX_GLOB_LEN} bytes"),
                });
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for k in &self.keys {
            if !ids.insert(k.key_id()) {
                return Err(PolicyError::DuplicateKeyId(k.key_id()));
            }
        }
        Ok(())
    }

    /// The indexed form appraisal uses.
    pub fn compile(&self) -> Result<CompiledPolicy, PolicyError> {
        CompiledPolicy::new(self)
    }

    /// `sha256:<hex>` of the policy's canonical JSON: equal for equal contents.
    pub fn fingerprint(&self) -> String {
        let mut w = HashWriter(HashAlg::Sha256.hasher());
        // Writing into a hash cannot fail; a policy always serialises.
        let _ = serde_json::to_writer(&mut w, self);
        format!("sha256:{}", hex::encode(w.0.finish()))
    }

    /// Allows `digest` for `path` (no duplicate). Returns whether it was new.
    pub fn add_digest(&mut self, path: &str, digest: FileDigest) -> Result<bool, PolicyError> {
        check_path(path)?;
        let list = self.digests.entry(path.to_string()).or_default();
        if list.contains(&digest) {
            return Ok(false);
        }
        if list.len() >= MAX_DIGESTS_PER_PATH {
            return Err(PolicyError::TooMany {
                what: "digests for one path",
                count: list.len() + 1,
                max: MAX_DIGESTS_PER_PATH,
            });
        }
        list.push(digest);
        Ok(true)
    }

    /// Adds an exclude glob (no duplicate).
    pub fn add_exclude(&mut self, pattern: &str) -> Result<(), PolicyError> {
        let g = Glob::new(pattern)?;
        if !self.excludes.contains(&g) {
            if self.excludes.len() >= MAX_EXCLUDES {
                return Err(PolicyError::TooMany {
                    what: "exclude globs",
                    count: self.excludes.len() + 1,
                    max: MAX_EXCLUDES,
                });
            }
            self.excludes.push(g);
        }
        Ok(())
    }

    /// Adds a trusted key; a key with the same key id is replaced.
    pub fn add_key(&mut self, key: TrustedKey) -> Result<(), PolicyError> {
        self.keys.retain(|k| k.key_id() != key.key_id());
        if self.keys.len() >= MAX_KEYS {
            return Err(PolicyError::TooMany {
                what: "trusted keys",
                count: self.keys.len() + 1,
                max: MAX_KEYS,
            });
        }
        self.keys.push(key);
        Ok(())
    }

    /// Learns from a gold host's log: every measured file's digest, except `boot_aggregate`
    /// (checked against the quote, not listed), violations, templates other than `ima`,
    /// `ima-ng` and `ima-sig`, and paths this policy excludes. Returns the number of
    /// (path, digest) pairs added.
    pub fn learn(&mut self, entries: &[ImaEntry]) -> Result<usize, PolicyError> {
        let mut added = 0;
        let regexes =
            regex::RegexSet::new(self.exclude_regexes.iter().map(|r| format!("^(?:{r})")))
                .map_err(|e| PolicyError::Regex {
                    pattern: "(exclude regular expressions)".to_string(),
                    reason: e.to_string(),
                })?;
        for e in entries {
            if e.is_violation()
                || matches!(e.template, Template::Other(_))
                || e.path == "boot_aggregate"
                || self.excludes.iter().any(|g| g.matches(&e.path))
                || regexes.is_match(&e.path)
            {
                continue;
            }
            if self.add_digest(&e.path, FileDigest::of_entry(e)?)? {
                added += 1;
            }
        }
        if self.digests.len() > MAX_PATHS {
            return Err(PolicyError::TooMany {
                what: "paths",
                count: self.digests.len(),
                max: MAX_PATHS,
            });
        }
        Ok(added)
    }

    /// Number of (path, digest) pairs.
    pub fn digest_count(&self) -> usize {
        self.digests.values().map(Vec::len).sum()
    }

    /// A summary for people: one statement per line (`nodetrust policy show`).
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!(
            "runtime policy version {}{}",
            self.version,
            if self.label.is_empty() {
                String::new()
            } else {
                format!(" {:?}", self.label)
            }
        )];
        out.push(format!("fingerprint: {}", self.fingerprint()));
        out.push(match self.boot_aggregate {
            BootAggregateRule::Require => {
                "boot_aggregate: required to equal the quoted PCRs 0-9 (or 0-7) of its bank"
                    .to_string()
            }
            BootAggregateRule::Ignore => "boot_aggregate: not checked".to_string(),
        });
        out.push(match self.violations {
            ViolationRule::Fail => "violations: make the host untrusted".to_string(),
            ViolationRule::Allow => "violations: counted, allowed".to_string(),
        });
        out.push(format!("trusted signing keys: {}", self.keys.len()));
        for k in &self.keys {
            out.push(format!(
                "  key {} {}{}",
                k.key_id(),
                k.kind(),
                if k.label().is_empty() {
                    String::new()
                } else {
                    format!(" ({})", k.label())
                }
            ));
        }
        out.push(format!(
            "excludes: {}",
            self.excludes.len() + self.exclude_regexes.len()
        ));
        for g in &self.excludes {
            out.push(format!("  glob  {g}"));
        }
        for r in &self.exclude_regexes {
            out.push(format!("  regex {r}"));
        }
        let mut by_alg: BTreeMap<&str, usize> = BTreeMap::new();
        for d in self.digests.values().flatten() {
            *by_alg.entry(d.alg.as_str()).or_default() += 1;
        }
        let algs: Vec<String> = by_alg.iter().map(|(a, n)| format!("{a}: {n}")).collect();
        out.push(format!(
            "allowlist: {} paths, {} digests{}",
            self.digests.len(),
            self.digest_count(),
            if algs.is_empty() {
                String::new()
            } else {
                format!(" ({})", algs.join(", "))
            }
        ));
        out
    }
}
