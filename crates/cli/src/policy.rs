//! `nodetrust policy`: runtime (IMA) policies: create, show, diff.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use nodetrust_appraise::runtime::{
    diff_policies, BootAggregateRule, FileDigest, RuntimePolicy, TrustedKey, ViolationRule,
};
use nodetrust_eventlog::ima::ImaLog;
use nodetrust_tpm_wire::HashAlg;

use crate::input;
use crate::output::{errln, outln};
use crate::{CliError, Format};

/// Most files hashed by `--from-dir`.
const MAX_DIR_FILES: usize = 4 << 20;
/// Deepest directory walked by `--from-dir`.
const MAX_DIR_DEPTH: usize = 256;

/// `nodetrust policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create a policy.
    #[command(subcommand)]
    Create(CreateCommand),
    /// Explain a runtime policy: settings, keys, excludes, allowlist size (`--digests` lists
    /// every path).
    Show(ShowArgs),
    /// What changed from policy A to policy B, one statement per line. Exit 0 when they are
    /// the same, 1 when they differ.
    Diff(DiffArgs),
}

/// `nodetrust policy create ...`
#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// A runtime (IMA) policy: the files a node may run.
    ///
    /// Learned from a gold host's IMA log (`--from-ima-log`, ascii or binary, every measured
    /// file's digest), from a file tree (`--from-dir ROOT`, e.g. a mounted image: ROOT/usr/bin/x
    /// is listed as /usr/bin/x), or brought over from a Keylime runtime policy
    /// (`--from-keylime`; what cannot be is said on stderr). Paths matching an `--exclude`
    /// glob are never appraised (`*` spans directories: `/var/log/*`); files signed
    /// (`ima-sig`) by a `--signing-key` (X.509 certificate or public key, PEM or DER) are
    /// allowed without an allowlist line.
    Runtime(RuntimeArgs),
}

/// Digest algorithms for `--from-dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DigestAlg {
    /// SHA-1 (`ima_hash=sha1`).
    Sha1,
    /// SHA-256 (the kernel's default).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlg {
    fn hash(self) -> HashAlg {
        match self {
            Self::Sha1 => HashAlg::Sha1,
            Self::Sha256 => HashAlg::Sha256,
            Self::Sha384 => HashAlg::Sha384,
            Self::Sha512 => HashAlg::Sha512,
        }
    }
}

/// Arguments of `policy create runtime`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from_ima_log", "from_dir", "from_keylime"])))]
pub struct RuntimeArgs {
    /// Learn from this IMA log (ascii_ or binary_runtime_measurements of a gold host).
    #[arg(long, value_name = "FILE")]
    pub from_ima_log: Option<PathBuf>,
    /// Hash every regular file under ROOT (symbolic links are not followed).
    #[arg(long, value_name = "ROOT")]
    pub from_dir: Option<PathBuf>,
    /// Bring over a Keylime runtime policy (JSON, format version 1).
    #[arg(long, value_name = "FILE")]
    pub from_keylime: Option<PathBuf>,
    /// Never appraise paths matching GLOB (`*` any characters including `/`, `?` one).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Trust ima-sig signatures by this key (X.509 certificate or public key, PEM or DER).
    #[arg(long, value_name = "PEM")]
    pub signing_key: Vec<PathBuf>,
    /// Digest algorithm(s) of `--from-dir` (the node's `ima_hash`); repeat for several.
    #[arg(long = "alg", value_enum, default_values_t = [DigestAlg::Sha256])]
    pub alg: Vec<DigestAlg>,
    /// A human name for the policy.
    #[arg(long)]
    pub label: Option<String>,
    /// Do not check the boot_aggregate entry against the quoted PCRs 0-9.
    #[arg(long)]
    pub ignore_boot_aggregate: bool,
    /// IMA violations (files measured while open for writing) are counted, not failures.
    #[arg(long)]
    pub allow_violations: bool,
    /// Where to write the policy (`-` for stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

/// Arguments of `policy show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The runtime policy file.
    pub file: PathBuf,
    /// Also list every path and its digests.
    #[arg(long)]
    pub digests: bool,
    /// Output format (`json` prints the policy, normalised).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `policy diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old policy.
    pub a: PathBuf,
    /// The new policy.
    pub b: PathBuf,
}

/// Runs a `policy` subcommand.
pub fn run(cmd: PolicyCommand) -> Result<(), CliError> {
    match cmd {
        PolicyCommand::Create(CreateCommand::Runtime(a)) => create_runtime(&a),
        PolicyCommand::Show(a) => show(&a),
        PolicyCommand::Diff(a) => diff(&a),
    }
}

/// Reads a runtime policy file; any problem is unreadable input (exit 2).
pub fn read_policy(path: &Path) -> Result<RuntimePolicy, CliError> {
    let bytes = input::read(path, "runtime policy")?;
    RuntimePolicy::from_json(&bytes)
        .map_err(|e| CliError::Usage(format!("runtime policy {}: {e}", path.display())))
}

fn create_runtime(a: &RuntimeArgs) -> Result<(), CliError> {
    let usage = |m: String| CliError::Usage(m);
    let mut policy = RuntimePolicy::new();
    // Excludes first: learning skips the paths they cover.
    for g in &a.exclude {
        policy
            .add_exclude(g)
            .map_err(|e| usage(format!("--exclude {g:?}: {e}")))?;
    }
    if let Some(path) = &a.from_keylime {
        let bytes = input::read(path, "Keylime runtime policy")?;
        let imp = RuntimePolicy::from_keylime(&bytes)
            .map_err(|e| usage(format!("{}: {e}", path.display())))?;
        for n in &imp.notes {
            errln!("nodetrust: note: {n}");
        }
        let excludes = std::mem::take(&mut policy.excludes);
        policy = imp.policy;
        for g in excludes {
            policy
                .add_exclude(g.as_str())
                .map_err(|e| usage(format!("--exclude: {e}")))?;
        }
    } else if let Some(path) = &a.from_ima_log {
        let bytes = input::read(path, "IMA log")?;
        let log =
            ImaLog::parse(&bytes).map_err(|e| usage(format!("IMA log {}: {e}", path.display())))?;
        let findings = log.check();
        if !findings.is_empty() {
            return Err(usage(format!(
                "IMA log {}: {} entries whose template hash is not the hash of their data \
                 (first: {}); a gold log must be intact",
                path.display(),
                findings.len(),
                findings
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )));
        }
        let added = policy
            .learn(&log.entries)
            .map_err(|e| usage(format!("IMA log {}: {e}", path.display())))?;
        errln!(
            "nodetrust: learned {added} digests of {} paths from {} entries",
            policy.digests.len(),
            log.entries.len()
        );
    } else if let Some(root) = &a.from_dir {
        let algs: Vec<HashAlg> = a.alg.iter().map(|x| x.hash()).collect();
        let (files, skipped) = hash_tree(root, &algs, &mut policy)?;
        errln!(
            "nodetrust: hashed {files} files under {}{}",
            root.display(),
            if skipped > 0 {
                format!(" ({skipped} unreadable, left out)")
            } else {
                String::new()
            }
        );
    }
    for k in &a.signing_key {
        let bytes = input::read(k, "signing key")?;
        let label = k
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = TrustedKey::from_pem_or_der(&bytes, &label)
            .map_err(|e| usage(format!("signing key {}: {e}", k.display())))?;
        policy
            .add_key(key)
            .map_err(|e| usage(format!("signing key {}: {e}", k.display())))?;
    }
    if let Some(l) = &a.label {
        policy.label = l.clone();
    }
    if a.ignore_boot_aggregate {
        policy.boot_aggregate = BootAggregateRule::Ignore;
    }
    if a.allow_violations {
        policy.violations = ViolationRule::Allow;
    }
    policy
        .compile()
        .map_err(|e| usage(format!("the policy would not be usable: {e}")))?;
    let mut json = policy.to_json();
    json.push('\n');
    if a.output.as_os_str() == "-" {
        crate::output::raw(&json);
    } else {
        std::fs::write(&a.output, json)
            .map_err(|e| usage(format!("cannot write {}: {e}", a.output.display())))?;
        outln!(
            "wrote {}: {} paths, {} digests, {} excludes, {} signing keys",
            a.output.display(),
            policy.digests.len(),
            policy.digest_count(),
            policy.excludes.len() + policy.exclude_regexes.len(),
            policy.keys.len()
        );
    }
    Ok(())
}

/// Hashes every regular file under `root` into `policy` as `/relative/path`. Returns (files
/// hashed, files that could not be read).
fn hash_tree(
    root: &Path,
    algs: &[HashAlg],
    policy: &mut RuntimePolicy,
) -> Result<(usize, usize), CliError> {
    let meta = std::fs::metadata(root)
        .map_err(|e| CliError::Usage(format!("--from-dir {}: {e}", root.display())))?;
    if !meta.is_dir() {
        return Err(CliError::Usage(format!(
            "--from-dir {}: not a directory",
            root.display()
        )));
    }
    let compiled_excludes = policy
        .compile()
        .map_err(|e| CliError::Usage(format!("--exclude: {e}")))?;
    let (mut files, mut skipped) = (0usize, 0usize);
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    let mut buf = vec![0u8; 1 << 16];
    while let Some((dir, prefix, depth)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                errln!("nodetrust: skipped {}: {e}", dir.display());
                skipped += 1;
                continue;
            }
        };
        let mut names: Vec<_> = rd.filter_map(Result::ok).collect();
        names.sort_by_key(|e| e.file_name());
        for ent in names {
            let name = ent.file_name().to_string_lossy().into_owned();
            let ima_path = format!("{prefix}/{name}");
            let Ok(ft) = ent.file_type() else {
                skipped += 1;
                continue;
            };
            if compiled_excludes.is_excluded(&ima_path) {
                continue;
            }
            if ft.is_dir() {
                if depth + 1 < MAX_DIR_DEPTH {
                    stack.push((ent.path(), ima_path, depth + 1));
                }
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            if files >= MAX_DIR_FILES {
                return Err(CliError::Usage(format!(
                    "--from-dir {}: more than {MAX_DIR_FILES} files",
                    root.display()
                )));
            }
            let mut f = match std::fs::File::open(ent.path()) {
                Ok(f) => f,
                Err(e) => {
                    errln!("nodetrust: skipped {}: {e}", ent.path().display());
                    skipped += 1;
                    continue;
                }
            };
            let mut hashers: Vec<_> = algs.iter().map(|a| a.hasher()).collect();
            let ok = loop {
                match f.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => {
                        let chunk = buf.get(..n).unwrap_or_default();
                        for h in &mut hashers {
                            h.update(chunk);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        errln!("nodetrust: skipped {}: {e}", ent.path().display());
                        break false;
                    }
                }
            };
            if !ok {
                skipped += 1;
                continue;
            }
            for (alg, h) in algs.iter().zip(hashers) {
                let d = FileDigest::new(alg.name(), h.finish())
                    .map_err(|e| CliError::Usage(e.to_string()))?;
                policy
                    .add_digest(&ima_path, d)
                    .map_err(|e| CliError::Usage(format!("{ima_path}: {e}")))?;
            }
            files += 1;
        }
    }
    Ok((files, skipped))
}

fn show(a: &ShowArgs) -> Result<(), CliError> {
    let policy = read_policy(&a.file)?;
    if a.format == Format::Json {
        outln!("{}", policy.to_json());
        return Ok(());
    }
    for line in policy.describe() {
        outln!("{}", crate::output::printable(&line, false));
    }
    if a.digests {
        for (path, ds) in &policy.digests {
            let list: Vec<String> = ds.iter().map(ToString::to_string).collect();
            outln!(
                "  {} {}",
                crate::output::printable(path, false),
                list.join(" ")
            );
        }
    }
    Ok(())
}

fn diff(a: &DiffArgs) -> Result<(), CliError> {
    let old = read_policy(&a.a)?;
    let new = read_policy(&a.b)?;
    let d = diff_policies(&old, &new);
    if d.is_empty() {
        outln!("the policies allow the same");
        return Ok(());
    }
    for x in &d {
        outln!("{}", crate::output::printable(&x.to_string(), false));
    }
    Err(CliError::Rejected {
        reason: "policy_differs",
        message: format!(
            "{} difference{} from {}",
            d.len(),
            if d.len() == 1 { "" } else { "s" },
            a.a.display()
        ),
        json: false,
    })
}
