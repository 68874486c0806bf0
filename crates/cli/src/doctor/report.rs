//! What `nodetrust doctor` prints: checks (PASS / WARN / FAIL, what was seen, the remedy, the
//! runbook section), and a summary with one line per unhealthy node naming its most likely root
//! cause and the one command to run next.
//!
//! The root cause of a node is its first failing check in the runbook's order: the checks of
//! one step that concern the whole cluster (the DaemonSet, the Trust Server, the Secret) come
//! before that node's own checks of the same step, and every check of an earlier step comes
//! before any of a later one. A failure of the cluster makes every node unhealthy.

use serde::Serialize;

use crate::output::{outln, printable, truncate};

/// Longest `saw` or `remedy` text printed, in characters.
pub const MAX_TEXT: usize = 1200;
/// Longest single quoted line (a log line, a reason), in characters.
pub const MAX_LINE: usize = 240;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// As it should be.
    Pass,
    /// Worth knowing, or not checkable; not a failure.
    Warn,
    /// Broken.
    Fail,
}

impl Status {
    /// `PASS`, `WARN`, `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

/// The sections of docs/runbook.md, in the runbook's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The trust agent pod is not visible on the worker node.
    PodMissing,
    /// The trust agent does not start (init-tcsd, run-trust-agent).
    AgentNotStarting,
    /// TPM problems.
    Tpm,
    /// Trust agent and Trust Server cannot talk.
    CannotTalk,
    /// The node does not have the trusted label set to true.
    NotLabelled,
}

impl Section {
    /// The heading's anchor in docs/runbook.md.
    pub fn anchor(self) -> &'static str {
        match self {
            Self::PodMissing => "the-trust-agent-pod-is-missing",
            Self::AgentNotStarting => "the-trust-agent-does-not-start",
            Self::Tpm => "tpm-problems",
            Self::CannotTalk => "the-trust-agent-and-the-trust-server-cannot-talk",
            Self::NotLabelled => "the-node-is-not-labelled-trusted",
        }
    }

    /// `docs/runbook.md#anchor`.
    pub fn reference(self) -> String {
        format!("docs/runbook.md#{}", self.anchor())
    }
}

/// One check.
#[derive(Debug, Clone)]
pub struct Check {
    /// Outcome.
    pub status: Status,
    /// Stable name (`daemonset`, `init container`, `verdict`, ...).
    pub name: &'static str,
    /// The node it concerns; `None` for the cluster.
    pub node: Option<String>,
    /// What was seen.
    pub saw: String,
    /// What to do (empty when nothing).
    pub remedy: String,
    /// Where docs/runbook.md explains it.
    pub section: Section,
    /// The runbook step (1-5) it belongs to: orders root causes.
    pub step: u8,
    /// For a failure: the root cause in a few words, for the summary.
    pub cause: Option<String>,
    /// For a failure: the one command to run next.
    pub next: Option<String>,
}

impl Check {
    /// A check of `step` with `status`; bounded texts.
    pub fn new(
        step: u8,
        name: &'static str,
        section: Section,
        status: Status,
        saw: impl AsRef<str>,
    ) -> Self {
        Self {
            status,
            name,
            node: None,
            saw: clean(saw.as_ref()),
            remedy: String::new(),
            section,
            step,
            cause: None,
            next: None,
        }
    }

    /// The node it concerns.
    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }

    /// The remedy.
    pub fn remedy(mut self, remedy: impl AsRef<str>) -> Self {
        self.remedy = clean(remedy.as_ref());
        self
    }

    /// The root cause for the summary, and the command to run next.
    pub fn cause(mut self, cause: impl AsRef<str>, next: impl AsRef<str>) -> Self {
        self.cause = Some(truncate(&printable(cause.as_ref(), false), 400));
        self.next = Some(truncate(&printable(next.as_ref(), false), 300));
        self
    }
}

/// Printable and bounded.
pub fn clean(s: &str) -> String {
    truncate(&printable(s, false), MAX_TEXT)
}

/// One line quoted from elsewhere (a log, a reason): printable, bounded.
pub fn quote(s: &str) -> String {
    truncate(&printable(s.trim(), false), MAX_LINE)
}

/// A summary line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RootCause {
    /// The node, or `None` when no node could be looked at.
    pub node: Option<String>,
    /// The most likely root cause.
    pub cause: String,
    /// The check that found it.
    pub check: String,
    /// The one command to run next.
    pub next: String,
    /// Where docs/runbook.md explains it.
    pub section: String,
}

/// The ordering key of a check in the root-cause search.
fn rank(c: &Check) -> (u8, u8) {
    (c.step, u8::from(c.node.is_some()))
}

/// One line per unhealthy node (in `nodes` order), then, when no node is concerned, one for
/// the cluster.
pub fn summary(checks: &[Check], nodes: &[String]) -> Vec<RootCause> {
    let failing = |node: Option<&str>| -> Option<&Check> {
        checks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.status == Status::Fail)
            .filter(|(_, c)| c.node.is_none() || c.node.as_deref() == node)
            .min_by_key(|(i, c)| (rank(c), *i))
            .map(|(_, c)| c)
    };
    let line = |node: Option<&str>, c: &Check| RootCause {
        node: node.map(str::to_string),
        cause: c.cause.clone().unwrap_or_else(|| truncate(&c.saw, 300)),
        check: c.name.to_string(),
        next: c
            .next
            .clone()
            .unwrap_or_else(|| format!("read {}", c.section.reference())),
        section: c.section.reference(),
    };
    let mut out: Vec<RootCause> = nodes
        .iter()
        .filter_map(|n| failing(Some(n)).map(|c| line(Some(n), c)))
        .collect();
    if out.is_empty() {
        if let Some(c) = failing(None) {
            out.push(line(None, c));
        }
    }
    out
}

#[derive(Serialize)]
struct JsonCheck<'a> {
    status: Status,
    name: &'a str,
    node: Option<&'a str>,
    saw: &'a str,
    remedy: &'a str,
    section: String,
}

/// Prints the checks and the summary as text.
pub fn print_text(header: &str, checks: &[Check], summary: &[RootCause]) {
    outln!("{header}");
    for c in checks {
        let scope = c.node.as_deref().unwrap_or("cluster");
        outln!(
            "{} {} {}: {} [{}]",
            c.status.as_str(),
            truncate(&printable(scope, false), 64),
            c.name,
            c.saw,
            c.section.reference()
        );
        if !c.remedy.is_empty() && c.status != Status::Pass {
            outln!("     remedy: {}", c.remedy);
        }
    }
    outln!("");
    let (pass, warn, fail) = counts(checks);
    if summary.is_empty() {
        outln!("Summary: {pass} passed, {warn} warning(s), 0 failed: nothing is broken.");
        return;
    }
    outln!("Summary: {pass} passed, {warn} warning(s), {fail} failed. Most likely root causes:");
    for s in summary {
        outln!(
            "{}: ROOT CAUSE: {} (check `{}`, {}); next: {}",
            truncate(
                &printable(s.node.as_deref().unwrap_or("cluster"), false),
                64
            ),
            s.cause,
            s.check,
            s.section,
            s.next
        );
    }
}

fn counts(checks: &[Check]) -> (usize, usize, usize) {
    let n = |s: Status| checks.iter().filter(|c| c.status == s).count();
    (n(Status::Pass), n(Status::Warn), n(Status::Fail))
}

/// Prints one JSON document: `{"checks": [...], "summary": [...], "passed": N, "warnings": N,
/// "failed": N, "healthy": bool}`.
pub fn print_json(checks: &[Check], summary: &[RootCause], context: serde_json::Value) {
    let list: Vec<JsonCheck<'_>> = checks
        .iter()
        .map(|c| JsonCheck {
            status: c.status,
            name: c.name,
            node: c.node.as_deref(),
            saw: &c.saw,
            remedy: &c.remedy,
            section: c.section.reference(),
        })
        .collect();
    let (pass, warn, fail) = counts(checks);
    let doc = serde_json::json!({
        "context": context,
        "checks": list,
        "summary": summary,
        "passed": pass,
        "warnings": warn,
        "failed": fail,
        "healthy": fail == 0,
    });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
    outln!("{text}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    fn fail(step: u8, name: &'static str, node: Option<&str>) -> Check {
        let c = Check::new(step, name, Section::Tpm, Status::Fail, name).cause(name, "cmd");
        match node {
            Some(n) => c.node(n),
            None => c,
        }
    }

    #[test]
    fn root_cause_is_the_first_failure_in_runbook_order() {
        let checks = vec![
            fail(4, "verdict", Some("a")),
            fail(3, "server answers", None),
            fail(2, "init container", Some("b")),
            fail(3, "late", Some("b")),
        ];
        let s = summary(&checks, &["a".into(), "b".into(), "c".into()]);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].check, "server answers");
        assert_eq!(s[1].check, "init container");
        assert_eq!(s[2].check, "server answers");
    }

    #[test]
    fn cluster_failure_without_nodes_is_one_line() {
        let checks = vec![fail(1, "daemonset", None)];
        let s = summary(&checks, &[]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].node, None);
    }

    #[test]
    fn every_section_is_a_heading_of_the_runbook() {
        let runbook = include_str!("../../../../docs/runbook.md");
        let anchors: Vec<String> = runbook
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(|h| {
                h.to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect()
            })
            .collect();
        for s in [
            Section::PodMissing,
            Section::AgentNotStarting,
            Section::Tpm,
            Section::CannotTalk,
            Section::NotLabelled,
        ] {
            assert!(
                anchors.iter().any(|a| a == s.anchor()),
                "{} not in {anchors:?}",
                s.anchor()
            );
        }
    }

    #[test]
    fn texts_are_bounded_and_printable() {
        let long = format!("\x1b[31m{}", "x".repeat(10_000));
        let c = Check::new(1, "n", Section::Tpm, Status::Warn, &long).remedy(&long);
        assert!(c.saw.chars().count() <= MAX_TEXT);
        assert!(!c.saw.contains('\x1b'));
        assert!(quote(&long).chars().count() <= MAX_LINE);
    }
}
