//! Prometheus metrics, in the text exposition format.
//!
//! - `nodetrust_attestations_total{result,reason}`: attestations by result (the verdict, or
//!   `unreachable` when the agent gave no answer) and by the stable reason label of the first
//!   failed check: `ok`; a rejected quote (tpm-wire's `VerifyError::reason()`,
//!   `reset_count_backwards`, `event_log_unreadable`, ...); appraisal's `Failure`
//!   (`replay_mismatch`, `flavor_mismatch`, `no_flavor`); `agent_unreachable`, `agent_timeout`.
//! - `nodetrust_attestation_seconds`: latency histogram of one attestation (quote + checks).
//! - `nodetrust_agent_errors_total{reason}`: agents that gave no usable answer.
//! - `nodetrust_hosts{verdict}`: hosts per current verdict (computed when scraped).
//! - `nodetrust_pruned_rows_total{table}`: rows deleted by retention (`reports`, `changes`).
//! - `nodetrust_auth_failures_total{reason}`: refused logins (`bad_password`, `no_credentials`,
//!   `rate_limited`, `busy`).
//! - `nodetrust_registrations_refused_total{reason}`: refused registrations
//!   (`identity_conflict`, `ek_not_endorsed`, ...).
//! - `nodetrust_ima_entries_appraised_total`: IMA log entries appraised against RUNTIME flavors
//!   and kept (each entry once per boot and policy); `nodetrust_ima_entries_received_total`:
//!   entries agents sent (entries logged after a quote are sent again with the next);
//!   `nodetrust_ima_appraisals_restarted_total{reason}`: appraisals started over from entry 0
//!   (`new`, `reboot`, `policy_changed`).
//! - `nodetrust_password_checks_in_flight`, `nodetrust_password_checks_peak`: argon2 checks
//!   running now and the most that ever ran at once (rendered by the API with the
//!   authenticator's numbers).
//! - `nodetrust_report_commits_total`, `nodetrust_reports_committed_total`: the group commits
//!   of reports and the reports they wrote (their ratio is the reports per transaction; rendered
//!   by the API with the store's numbers).
//! - `nodetrust_registration_commits_total`, `nodetrust_registrations_committed_total`: the
//!   shared transactions of activations and the activations they decided (registered or
//!   refused; their ratio is the activations per transaction; rendered by the API with the
//!   store's numbers).
//! - `nodetrust_push_evidence_total{challenge}`: evidence push hosts posted, by the challenge it
//!   answered: `asked` (asked for just before), `ahead` (given ahead with the previous verdict:
//!   one request per attestation), `stale` (given ahead and refused: 409 `challenge_stale`,
//!   `event_log_needed` or `pcr_values_needed`, the agent asks for a new one). Each label
//!   rendered from 0.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
struct Inner {
    attestations: BTreeMap<(String, String), u64>,
    agent_errors: BTreeMap<String, u64>,
    latency_buckets: [u64; BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
    pruned: BTreeMap<String, u64>,
    auth_failures: BTreeMap<String, u64>,
    registrations_refused: BTreeMap<String, u64>,
    ima_appraised: u64,
    ima_received: u64,
    ima_restarts: BTreeMap<String, u64>,
    push_evidence: BTreeMap<&'static str, u64>,
}

/// The labels of `nodetrust_push_evidence_total` (each always rendered, from 0).
const PUSH_CHALLENGES: [&str; 3] = ["ahead", "asked", "stale"];

/// Tables retention prunes (each always rendered, from 0).
const PRUNED_TABLES: [&str; 2] = ["changes", "reports"];

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Counts one attestation.
    pub fn attestation(&self, result: &str, reason: &str, took: Duration) {
        if let Ok(mut m) = self.inner.lock() {
            *m.attestations
                .entry((result.to_string(), reason.to_string()))
                .or_default() += 1;
            let s = took.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    if let Some(c) = m.latency_buckets.get_mut(i) {
                        *c += 1;
                    }
                }
            }
            m.latency_count += 1;
            m.latency_sum += s;
        }
    }

    /// Counts an agent error.
    pub fn agent_error(&self, reason: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.agent_errors.entry(reason.to_string()).or_default() += 1;
        }
    }

    /// Counts rows deleted from `table` by retention.
    pub fn pruned(&self, table: &str, rows: u64) {
        if let Ok(mut m) = self.inner.lock() {
            let n = m.pruned.entry(table.to_string()).or_default();
            *n = n.saturating_add(rows);
        }
    }

    /// Counts a refused login.
    pub fn auth_failure(&self, reason: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.auth_failures.entry(reason.to_string()).or_default() += 1;
        }
    }

    /// Counts a refused registration.
    pub fn registration_refused(&self, reason: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.registrations_refused
                .entry(reason.to_string())
                .or_default() += 1;
        }
    }

    /// Counts evidence a push host posted, by the challenge it answered (`asked`, `ahead`,
    /// `stale`).
    pub fn push_evidence(&self, challenge: &'static str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.push_evidence.entry(challenge).or_default() += 1;
        }
    }

    /// Counts IMA entries appraised and kept.
    pub fn ima_appraised(&self, entries: u64) {
        if let Ok(mut m) = self.inner.lock() {
            m.ima_appraised = m.ima_appraised.saturating_add(entries);
        }
    }

    /// Counts IMA entries received from agents.
    pub fn ima_received(&self, entries: u64) {
        if let Ok(mut m) = self.inner.lock() {
            m.ima_received = m.ima_received.saturating_add(entries);
        }
    }

    /// Counts an IMA appraisal started over from entry 0.
    pub fn ima_restart(&self, reason: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.ima_restarts.entry(reason.to_string()).or_default() += 1;
        }
    }

    /// IMA entries appraised and kept, and received, so far.
    pub fn ima_entries(&self) -> (u64, u64) {
        self.inner
            .lock()
            .map(|m| (m.ima_appraised, m.ima_received))
            .unwrap_or_default()
    }

    /// Refused registrations with `reason` so far.
    pub fn registrations_refused(&self, reason: &str) -> u64 {
        self.inner
            .lock()
            .ok()
            .and_then(|m| m.registrations_refused.get(reason).copied())
            .unwrap_or(0)
    }

    /// The exposition text, with `hosts` (verdict → count) as a gauge.
    pub fn render(&self, hosts: &BTreeMap<&'static str, u64>) -> String {
        let mut out = String::new();
        let Ok(m) = self.inner.lock() else { return out };
        out.push_str("# HELP nodetrust_attestations_total Attestations by result and reason.\n");
        out.push_str("# TYPE nodetrust_attestations_total counter\n");
        for ((result, reason), n) in &m.attestations {
            let _ = writeln!(
                out,
                "nodetrust_attestations_total{{result=\"{result}\",reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP nodetrust_attestation_seconds Time to attest one host.\n");
        out.push_str("# TYPE nodetrust_attestation_seconds histogram\n");
        for (b, n) in BUCKETS.iter().zip(m.latency_buckets.iter()) {
            let _ = writeln!(
                out,
                "nodetrust_attestation_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "nodetrust_attestation_seconds_bucket{{le=\"+Inf\"}} {}",
            m.latency_count
        );
        let _ = writeln!(out, "nodetrust_attestation_seconds_sum {}", m.latency_sum);
        let _ = writeln!(
            out,
            "nodetrust_attestation_seconds_count {}",
            m.latency_count
        );
        out.push_str(
            "# HELP nodetrust_agent_errors_total Agents that gave no usable answer, by reason.\n",
        );
        out.push_str("# TYPE nodetrust_agent_errors_total counter\n");
        for (reason, n) in &m.agent_errors {
            let _ = writeln!(
                out,
                "nodetrust_agent_errors_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP nodetrust_pruned_rows_total Rows deleted by retention, by table.\n");
        out.push_str("# TYPE nodetrust_pruned_rows_total counter\n");
        let mut pruned: BTreeMap<&str, u64> = PRUNED_TABLES.iter().map(|t| (*t, 0)).collect();
        for (table, n) in &m.pruned {
            pruned.insert(table, *n);
        }
        for (table, n) in pruned {
            let _ = writeln!(out, "nodetrust_pruned_rows_total{{table=\"{table}\"}} {n}");
        }
        out.push_str("# HELP nodetrust_auth_failures_total Refused logins, by reason.\n");
        out.push_str("# TYPE nodetrust_auth_failures_total counter\n");
        for (reason, n) in &m.auth_failures {
            let _ = writeln!(
                out,
                "nodetrust_auth_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP nodetrust_registrations_refused_total Refused registrations, by reason.\n",
        );
        out.push_str("# TYPE nodetrust_registrations_refused_total counter\n");
        for (reason, n) in &m.registrations_refused {
            let _ = writeln!(
                out,
                "nodetrust_registrations_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP nodetrust_ima_entries_appraised_total IMA log entries appraised against RUNTIME flavors and kept.\n");
        out.push_str("# TYPE nodetrust_ima_entries_appraised_total counter\n");
        let _ = writeln!(
            out,
            "nodetrust_ima_entries_appraised_total {}",
            m.ima_appraised
        );
        out.push_str(
            "# HELP nodetrust_ima_entries_received_total IMA log entries received from agents.\n",
        );
        out.push_str("# TYPE nodetrust_ima_entries_received_total counter\n");
        let _ = writeln!(
            out,
            "nodetrust_ima_entries_received_total {}",
            m.ima_received
        );
        out.push_str("# HELP nodetrust_ima_appraisals_restarted_total IMA appraisals started over from entry 0, by reason.\n");
        out.push_str("# TYPE nodetrust_ima_appraisals_restarted_total counter\n");
        for (reason, n) in &m.ima_restarts {
            let _ = writeln!(
                out,
                "nodetrust_ima_appraisals_restarted_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP nodetrust_push_evidence_total Evidence posted by push hosts, by the challenge it answered.\n");
        out.push_str("# TYPE nodetrust_push_evidence_total counter\n");
        for challenge in PUSH_CHALLENGES {
            let n = m.push_evidence.get(challenge).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "nodetrust_push_evidence_total{{challenge=\"{challenge}\"}} {n}"
            );
        }
        out.push_str("# HELP nodetrust_hosts Hosts by current verdict.\n");
        out.push_str("# TYPE nodetrust_hosts gauge\n");
        for (verdict, n) in hosts {
            let _ = writeln!(out, "nodetrust_hosts{{verdict=\"{verdict}\"}} {n}");
        }
        out
    }
}
