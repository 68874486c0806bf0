//! The Kubernetes manifests and Dockerfiles in `deploy/`.
//!
//! - Every YAML document parses into the k8s-openapi type of its kind, with unknown fields an
//!   error: k8s-openapi ignores unknown fields, so the typed value is serialized again and every
//!   key of the input missing from the result is reported with its path.
//! - Each container of `nodetrust-agent` / `nodetrust-server` is resolved with the binary's own
//!   configuration code (its clap command and settings resolution) from the manifest's
//!   arguments and environment: a misspelt flag or variable, or a missing required one, fails.
//! - Every key taken from a ConfigMap or Secret exists there; the runbook's `cit-server-info`
//!   keys are all present; server and agent agree on the accounts and on where the server is.
//! - The server's RBAC covers what the labeller does.
//! - Each Dockerfile builds, copies and runs the binary it is named after.
//!
//! The `*_is_caught` tests break a copy of the manifests in one place and prove the check
//! reports it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PodSpec, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Loading and typed parsing

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

/// One YAML document.
#[derive(Debug, Clone)]
struct Doc {
    /// `file#index`.
    origin: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    files
}

fn parse_yaml(name: &str, text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    for (index, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).unwrap_or_else(|e| panic!("{name}#{index}: {e}"));
        if value.is_null() {
            continue;
        }
        docs.push(Doc {
            origin: format!("{name}#{index}"),
            value,
        });
    }
    docs
}

fn load() -> Vec<Doc> {
    let mut docs = Vec::new();
    for file in manifest_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        docs.extend(parse_yaml(&name, &text));
    }
    assert!(!docs.is_empty(), "no manifests under {:?}", deploy_dir());
    docs
}

/// Keys present in `input` and absent from `output` (the typed round trip), with their paths.
fn unknown_fields(input: &Value, output: &Value, path: &str, found: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (key, value) in i {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if value.is_null() {
                    continue;
                }
                match o.get(key) {
                    None => found.push(here),
                    Some(out) => unknown_fields(value, out, &here, found),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            if i.len() != o.len() {
                found.push(format!("{path} (list of {} became {})", i.len(), o.len()));
            }
            for (n, (a, b)) in i.iter().zip(o).enumerate() {
                unknown_fields(a, b, &format!("{path}[{n}]"), found);
            }
        }
        (Value::Object(_) | Value::Array(_), _) => {
            found.push(format!("{path} (structure not kept by the typed value)"));
        }
        _ => {}
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Doc) -> Result<(), String> {
    let typed: T = serde_json::from_value(doc.value.clone())
        .map_err(|e| format!("{}: not a valid {}: {e}", doc.origin, doc.kind()))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("{}: {e}", doc.origin))?;
    let mut found = Vec::new();
    unknown_fields(&doc.value, &back, "", &mut found);
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} ({}): unknown field(s): {}",
            doc.origin,
            doc.kind(),
            found.join(", ")
        ))
    }
}

/// Parses a document into the k8s-openapi type of its apiVersion and kind.
fn check_typed(doc: &Doc) -> Result<(), String> {
    match (doc.api_version(), doc.kind()) {
        ("v1", "Namespace") => round_trip::<Namespace>(doc),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(doc),
        ("v1", "Secret") => round_trip::<Secret>(doc),
        ("v1", "Service") => round_trip::<Service>(doc),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(doc),
        ("v1", "PersistentVolumeClaim") => round_trip::<PersistentVolumeClaim>(doc),
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(doc),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(doc),
        ("apps/v1", "StatefulSet") => round_trip::<StatefulSet>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(doc)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(doc),
        (v, k) => Err(format!(
            "{}: apiVersion {v:?} kind {k:?} is not a type this test knows",
            doc.origin
        )),
    }
}

fn objects<T: DeserializeOwned + k8s_openapi::Resource>(docs: &[Doc]) -> Vec<T> {
    docs.iter()
        .filter(|d| d.kind() == T::KIND && d.api_version() == T::API_VERSION)
        .map(|d| serde_json::from_value(d.value.clone()).unwrap())
        .collect()
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------------------------
// What the binaries read

/// Environment variables a binary reads, and the ones it requires.
#[derive(Debug, Default)]
struct Reads {
    names: BTreeSet<String>,
    required: BTreeSet<String>,
}

fn clap_env_names(cmd: &clap::Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// `std::env::var("X")` / `var_os("X")` literals in a crate's sources.
fn env_literals(src: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(env_literals(&path));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for pat in ["env::var(\"", "env::var_os(\""] {
            for (at, _) in text.match_indices(pat) {
                let rest = &text[at + pat.len()..];
                if let Some(end) = rest.find('"') {
                    out.insert(rest[..end].to_string());
                }
            }
        }
    }
    out
}

/// `RUST_LOG`, when the binary's tracing filter reads it.
fn rust_log(main_rs: &Path) -> Option<String> {
    let text = std::fs::read_to_string(main_rs).unwrap();
    text.contains("EnvFilter::try_from_default_env")
        .then(|| "RUST_LOG".to_string())
}

fn agent_reads() -> Reads {
    let cmd = nodetrust_agent::config::Cli::command();
    let mut names = clap_env_names(&cmd);
    let mut required = BTreeSet::new();
    // The environment-only variables (secrets have no flag) are listed in the help's epilogue:
    // `  NAME   what it is (required) ...`.
    let epilogue = cmd
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    for line in epilogue.lines() {
        let Some(rest) = line.strip_prefix("  ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || !rest[name.len()..].starts_with("  ") {
            continue;
        }
        if line.contains("(required)") {
            required.insert(name.clone());
        }
        names.insert(name);
    }
    assert!(
        names.contains("TPM_OWNER_SECRET") && required.contains("TRUSTAGENT_ADMIN_PASSWORD"),
        "the agent's help no longer lists its environment-only variables: {names:?}"
    );
    let crate_dir = repo().join("crates/agent");
    names.extend(env_literals(&crate_dir.join("src")));
    names.extend(rust_log(&crate_dir.join("src/main.rs")));
    Reads { names, required }
}

fn server_reads() -> Reads {
    let cmd = nodetrust_server::config::Config::command();
    let mut names = clap_env_names(&cmd);
    let required = cmd
        .get_arguments()
        .filter(|a| a.is_required_set())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    names.extend(env_literals(&repo().join("crates/server/src")));
    names.extend(env_literals(&repo().join("crates/labeller/src")));
    names.extend(rust_log(&repo().join("crates/server/src/main.rs")));
    assert!(names.contains("POD_NAMESPACE"), "{names:?}");
    Reads { names, required }
}

// ---------------------------------------------------------------------------------------------
// Containers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    Agent,
    Server,
    Other,
}

fn binary_of(image: &str) -> Binary {
    let repo = image.split(':').next().unwrap_or_default();
    match repo.rsplit('/').next().unwrap_or_default() {
        "nodetrust-agent" => Binary::Agent,
        "nodetrust-server" => Binary::Server,
        _ => Binary::Other,
    }
}

/// A container with the namespace and workload it runs in.
#[derive(Debug, Clone)]
struct Site {
    workload: String,
    namespace: String,
    container: Container,
}

fn sites(docs: &[Doc]) -> Vec<Site> {
    let mut out = Vec::new();
    let mut add = |kind: &str,
                   meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                   pod: Option<PodSpec>| {
        let (namespace, name) = name_of(meta);
        let pod = pod.unwrap_or_default();
        for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
            out.push(Site {
                workload: format!("{kind}/{name}"),
                namespace: namespace.clone(),
                container: container.clone(),
            });
        }
    };
    for d in objects::<DaemonSet>(docs) {
        add(
            "DaemonSet",
            &d.metadata,
            d.spec.and_then(|s| s.template.spec),
        );
    }
    for d in objects::<Deployment>(docs) {
        add(
            "Deployment",
            &d.metadata,
            d.spec.and_then(|s| s.template.spec),
        );
    }
    for d in objects::<StatefulSet>(docs) {
        add(
            "StatefulSet",
            &d.metadata,
            d.spec.and_then(|s| s.template.spec),
        );
    }
    out
}

fn config_maps(docs: &[Doc]) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    objects::<ConfigMap>(docs)
        .into_iter()
        .map(|c| (name_of(&c.metadata), c.data.unwrap_or_default()))
        .collect()
}

fn secrets(docs: &[Doc]) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    objects::<Secret>(docs)
        .into_iter()
        .map(|s| {
            let mut keys: BTreeMap<String, String> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            keys.extend(s.string_data.unwrap_or_default());
            (name_of(&s.metadata), keys)
        })
        .collect()
}

/// `$(NAME)` references in a string.
fn references(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("$(") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut s = s.to_string();
    for name in references(&s.clone()) {
        if let Some(v) = env.get(&name) {
            s = s.replace(&format!("$({name})"), v);
        }
    }
    s
}

/// The container's environment as the kubelet builds it (downward-API fields get example
/// values); problems are keys or objects that do not exist.
fn resolve_env(site: &Site, docs: &[Doc], problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let cms = config_maps(docs);
    let secs = secrets(docs);
    let at = format!("{} container {}", site.workload, site.container.name);
    let mut env = BTreeMap::new();
    let lookup = |what: &str,
                  store: &BTreeMap<(String, String), BTreeMap<String, String>>,
                  name: &str,
                  key: Option<&str>,
                  optional: bool,
                  problems: &mut Vec<String>|
     -> Option<BTreeMap<String, String>> {
        match store.get(&(site.namespace.clone(), name.to_string())) {
            None => {
                if !optional {
                    problems.push(format!(
                        "{at}: {what} {}/{name} is not in deploy/",
                        site.namespace
                    ));
                }
                None
            }
            Some(data) => {
                if let Some(key) = key {
                    if !data.contains_key(key) {
                        // Even an optional key must exist when the object is ours: a missing
                        // one is a misspelling that silently leaves the variable unset.
                        problems.push(format!(
                            "{at}: {what} {}/{name} has no key {key:?}",
                            site.namespace
                        ));
                    }
                }
                Some(data.clone())
            }
        }
    };
    for from in site.container.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            lookup(
                "ConfigMap",
                &cms,
                &r.name,
                None,
                r.optional == Some(true),
                problems,
            )
        } else if let Some(r) = &from.secret_ref {
            lookup(
                "Secret",
                &secs,
                &r.name,
                None,
                r.optional == Some(true),
                problems,
            )
        } else {
            None
        };
        for (k, v) in data.unwrap_or_default() {
            env.insert(format!("{prefix}{k}"), v);
        }
    }
    for var in site.container.env.clone().unwrap_or_default() {
        let value = if let Some(v) = &var.value {
            expand(v, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                lookup(
                    "ConfigMap",
                    &cms,
                    &r.name,
                    Some(&r.key),
                    r.optional == Some(true),
                    problems,
                )
                .and_then(|d| d.get(&r.key).cloned())
                .unwrap_or_default()
            } else if let Some(r) = &from.secret_key_ref {
                lookup(
                    "Secret",
                    &secs,
                    &r.name,
                    Some(&r.key),
                    r.optional == Some(true),
                    problems,
                )
                .and_then(|d| d.get(&r.key).cloned())
                .unwrap_or_default()
            } else if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "spec.nodeName" => "worker-1".into(),
                    "status.hostIP" | "status.podIP" => "10.0.0.1".into(),
                    "metadata.namespace" => site.namespace.clone(),
                    "metadata.name" => "pod-0".into(),
                    other => {
                        problems.push(format!("{at}: env {}: field {other:?}", var.name));
                        String::new()
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// The settings of the agent and server containers, resolved by the binaries' own code.
#[derive(Debug, Default)]
struct Resolved {
    agent: Vec<nodetrust_agent::config::Settings>,
    server: Vec<nodetrust_server::config::Config>,
}

/// argv: the binary name, then a `--flag=value` for every clap argument whose variable the
/// container sets (what clap does with the environment; flags given in args win), then args.
fn argv(
    cmd: &clap::Command,
    bin: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut argv = vec![bin.to_string()];
    for arg in cmd.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some(value) = env.get(&*var.to_string_lossy()) else {
            continue;
        };
        // clap ignores an empty variable.
        if value.is_empty()
            || args
                .iter()
                .any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")))
        {
            continue;
        }
        if arg.get_action().takes_values() {
            argv.push(format!("--{long}={value}"));
        } else if value == "true" || value == "1" {
            argv.push(format!("--{long}"));
        }
    }
    argv.extend(args.iter().cloned());
    argv
}

/// Checks each container's variable names against what its binary reads, and resolves its
/// settings with the binary's own code.
fn check_containers(docs: &[Doc]) -> (Vec<String>, Resolved) {
    let mut problems = Vec::new();
    let mut resolved = Resolved::default();
    let agent = agent_reads();
    let server = server_reads();
    for site in sites(docs) {
        let binary = binary_of(site.container.image.as_deref().unwrap_or_default());
        let env = resolve_env(&site, docs, &mut problems);
        let at = format!("{} container {}", site.workload, site.container.name);
        let reads = match binary {
            Binary::Agent => &agent,
            Binary::Server => &server,
            Binary::Other => continue,
        };
        if site.container.command.is_some() {
            problems.push(format!(
                "{at}: sets `command`; the image's entrypoint is the binary, give `args`"
            ));
        }
        let args: Vec<String> = site
            .container
            .args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| expand(a, &env))
            .collect();
        // Names set must be names the binary reads (or that another variable or an argument
        // of this container refers to as $(NAME)).
        let mut referred = BTreeSet::new();
        for var in site.container.env.clone().unwrap_or_default() {
            referred.extend(references(var.value.as_deref().unwrap_or_default()));
        }
        for a in site.container.args.clone().unwrap_or_default() {
            referred.extend(references(&a));
        }
        for name in env.keys() {
            if !reads.names.contains(name) && !referred.contains(name) {
                problems.push(format!(
                    "{at}: sets {name}, which {binary:?} does not read (misspelt?)"
                ));
            }
        }
        let check_mode = args.iter().any(|a| a == "check");
        if !check_mode {
            for name in &reads.required {
                if env.get(name).is_none_or(|v| v.is_empty()) {
                    problems.push(format!("{at}: {name} is required and not set"));
                }
            }
        }
        match binary {
            Binary::Agent => {
                let cmd = nodetrust_agent::config::Cli::command();
                let mut av = argv(&cmd, "nodetrust-agent", &args, &env);
                // The node's own config file is not part of the manifest.
                if !av.iter().any(|a| a.starts_with("--config")) {
                    av.insert(1, "--config=/dev/null".into());
                }
                let cli = match <nodetrust_agent::config::Cli as clap::Parser>::try_parse_from(&av)
                {
                    Ok(c) => c,
                    Err(e) => {
                        problems.push(format!("{at}: {av:?}: {e}"));
                        continue;
                    }
                };
                let get = |k: &str| env.get(k).cloned();
                if check_mode {
                    if let Err(e) = nodetrust_agent::check::CheckSettings::resolve(&cli, &get) {
                        problems.push(format!("{at}: `check` settings: {e}"));
                    }
                } else {
                    match nodetrust_agent::config::Settings::resolve(cli, &get) {
                        Ok(s) => resolved.agent.push(s),
                        Err(e) => problems.push(format!("{at}: agent settings: {e}")),
                    }
                }
            }
            Binary::Server => {
                let cmd = nodetrust_server::config::Config::command();
                let av = argv(&cmd, "nodetrust-server", &args, &env);
                match nodetrust_server::config::Config::load_from(av.clone()) {
                    Ok(c) => resolved.server.push(c),
                    Err(e) => problems.push(format!("{at}: {av:?}: {e}")),
                }
            }
            Binary::Other => {}
        }
    }
    (problems, resolved)
}

// ---------------------------------------------------------------------------------------------
// RBAC

fn rule_allows(rule: &PolicyRule, group: &str, resource: &str, verb: &str) -> bool {
    let any = |list: &[String], want: &str| list.iter().any(|x| x == want || x == "*");
    any(rule.api_groups.as_deref().unwrap_or_default(), group)
        && any(rule.resources.as_deref().unwrap_or_default(), resource)
        && any(&rule.verbs, verb)
        && rule.resource_names.as_ref().is_none_or(|n| n.is_empty())
}

/// Whether service account `ns/sa` may `verb` `group/resource` in namespace `in_ns`.
fn allowed(
    docs: &[Doc],
    ns: &str,
    sa: &str,
    group: &str,
    resource: &str,
    verb: &str,
    in_ns: &str,
) -> bool {
    let bound = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(ns)
        })
    };
    let cluster_roles = objects::<ClusterRole>(docs);
    let cluster_role_rules = |name: &str| -> Vec<PolicyRule> {
        cluster_roles
            .iter()
            .filter(|r| r.metadata.name.as_deref() == Some(name))
            .flat_map(|r| r.rules.clone().unwrap_or_default())
            .collect()
    };
    for b in objects::<ClusterRoleBinding>(docs) {
        if bound(&b.subjects)
            && b.role_ref.kind == "ClusterRole"
            && cluster_role_rules(&b.role_ref.name)
                .iter()
                .any(|r| rule_allows(r, group, resource, verb))
        {
            return true;
        }
    }
    let roles = objects::<Role>(docs);
    for b in objects::<RoleBinding>(docs) {
        let (b_ns, _) = name_of(&b.metadata);
        if b_ns != in_ns || !bound(&b.subjects) {
            continue;
        }
        let rules: Vec<PolicyRule> = match b.role_ref.kind.as_str() {
            "ClusterRole" => cluster_role_rules(&b.role_ref.name),
            "Role" => roles
                .iter()
                .filter(|r| name_of(&r.metadata) == (b_ns.clone(), b.role_ref.name.clone()))
                .flat_map(|r| r.rules.clone().unwrap_or_default())
                .collect(),
            _ => Vec::new(),
        };
        if rules.iter().any(|r| rule_allows(r, group, resource, verb)) {
            return true;
        }
    }
    false
}

fn check_rbac(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let accounts: BTreeSet<(String, String)> = objects::<ServiceAccount>(docs)
        .iter()
        .map(|s| name_of(&s.metadata))
        .collect();
    let mut labellers = 0;
    for d in objects::<Deployment>(docs) {
        let (ns, name) = name_of(&d.metadata);
        let pod = d.spec.and_then(|s| s.template.spec).unwrap_or_default();
        let runs_labeller = pod.containers.iter().any(|c| {
            binary_of(c.image.as_deref().unwrap_or_default()) == Binary::Server
                && c.args.iter().flatten().any(|a| a == "--labeller")
        });
        if !runs_labeller {
            continue;
        }
        labellers += 1;
        let Some(sa) = pod.service_account_name.clone() else {
            problems.push(format!("Deployment {ns}/{name}: no serviceAccountName"));
            continue;
        };
        if !accounts.contains(&(ns.clone(), sa.clone())) {
            problems.push(format!("ServiceAccount {ns}/{sa} is not in deploy/"));
        }
        // The labeller: nodes (cluster-wide), its Lease in the pod's namespace, Events on nodes
        // in `default`.
        let needs: [(&str, &str, &[&str], &str); 3] = [
            ("", "nodes", &["get", "list", "watch", "patch"], ""),
            (
                "coordination.k8s.io",
                "leases",
                &["get", "create", "update"],
                &ns,
            ),
            ("", "events", &["create"], "default"),
        ];
        for (group, resource, verbs, in_ns) in needs {
            for verb in verbs {
                if !allowed(docs, &ns, &sa, group, resource, verb, in_ns) {
                    problems.push(format!(
                        "ServiceAccount {ns}/{sa} may not {verb} {resource}{} (the labeller needs it)",
                        if in_ns.is_empty() {
                            String::new()
                        } else {
                            format!(" in namespace {in_ns}")
                        }
                    ));
                }
            }
        }
    }
    if labellers == 0 {
        problems.push("no Deployment runs nodetrust-server --labeller".into());
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The layout the runbook's commands rely on

/// The runbook's `cit-server-info` (bootstrap-cit-troubleshooting.md, "Trust agent/ CIT Server
/// can talk to each other"): `kubectl -n kubx-cit get cm cit-server-info -o yaml` and
/// `get secrets cit-server-info -o yaml`.
const RUNBOOK_CONFIGMAP_KEYS: &[&str] = &[
    "MTWILSON_API_USERNAME",
    "MTWILSON_SERVER",
    "MTWILSON_SERVER_PORT",
    "TRUSTAGENT_ADMIN_USERNAME",
    "server_url",
];
const RUNBOOK_SECRET_KEYS: &[&str] = &[
    "MTWILSON_API_PASSWORD",
    "TPM_OWNER_SECRET",
    "TRUSTAGENT_ADMIN_PASSWORD",
];

fn check_layout(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let key = ("kubx-cit".to_string(), "cit-server-info".to_string());
    match config_maps(docs).get(&key) {
        None => problems.push("no ConfigMap kubx-cit/cit-server-info".into()),
        Some(data) => {
            for k in RUNBOOK_CONFIGMAP_KEYS {
                if !data.contains_key(*k) {
                    problems.push(format!(
                        "ConfigMap cit-server-info lacks the runbook's key {k}"
                    ));
                }
            }
        }
    }
    match secrets(docs).get(&key) {
        None => problems.push("no Secret kubx-cit/cit-server-info".into()),
        Some(data) => {
            for k in RUNBOOK_SECRET_KEYS {
                if !data.contains_key(*k) {
                    problems.push(format!(
                        "Secret cit-server-info lacks the runbook's key {k}"
                    ));
                }
            }
        }
    }
    if !objects::<Namespace>(docs)
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some("kubx-cit"))
    {
        problems.push("no Namespace kubx-cit".into());
    }
    let ds: Vec<DaemonSet> = objects::<DaemonSet>(docs)
        .into_iter()
        .filter(|d| d.metadata.name.as_deref() == Some("cit-trust-agent"))
        .collect();
    let [ds] = ds.as_slice() else {
        problems.push(format!("{} DaemonSets named cit-trust-agent", ds.len()));
        return problems;
    };
    if ds.metadata.namespace.as_deref() != Some("kubx-cit") {
        problems.push(format!(
            "DaemonSet cit-trust-agent is in namespace {:?}, not kubx-cit",
            ds.metadata.namespace
        ));
    }
    let pod = ds
        .spec
        .clone()
        .and_then(|s| s.template.spec)
        .unwrap_or_default();
    let selector = pod.node_selector.clone().unwrap_or_default();
    if selector
        .get("ibm-cloud.kubernetes.io/tpm-enabled")
        .map(String::as_str)
        != Some("true")
        || selector.len() != 1
    {
        problems.push(format!(
            "DaemonSet cit-trust-agent nodeSelector is {selector:?}, not ibm-cloud.kubernetes.io/tpm-enabled=true"
        ));
    }
    let main = pod.containers.iter().find(|c| c.name == "run-trust-agent");
    let init = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "init-tcsd");
    match (main, init) {
        (Some(main), Some(init)) => {
            let flag = |c: &Container, name: &str| {
                c.args
                    .iter()
                    .flatten()
                    .find(|a| a.starts_with(&format!("--{name}=")))
                    .cloned()
            };
            if !init.args.iter().flatten().any(|a| a == "check") {
                problems.push("init-tcsd does not run `nodetrust-agent check`".into());
            }
            if init.image != main.image {
                problems.push("init-tcsd and run-trust-agent run different images".into());
            }
            for name in ["tcti", "state-dir"] {
                if flag(init, name) != flag(main, name) {
                    problems.push(format!(
                        "init-tcsd and run-trust-agent differ in --{name}: {:?} vs {:?}",
                        flag(init, name),
                        flag(main, name)
                    ));
                }
            }
            let mounts = |c: &Container| -> BTreeMap<String, String> {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .map(|m| (m.mount_path.clone(), m.name.clone()))
                    .collect()
            };
            let main_mounts = mounts(main);
            for (path, name) in mounts(init) {
                if main_mounts.get(&path) != Some(&name) {
                    problems.push(format!(
                        "init-tcsd mounts {name} at {path}, run-trust-agent does not"
                    ));
                }
            }
            let tcti = flag(main, "tcti").unwrap_or_default();
            if let Some(device) = tcti.strip_prefix("--tcti=device:") {
                if !main_mounts.contains_key(device) {
                    problems.push(format!("run-trust-agent uses {device} but does not mount it"));
                }
            }
        }
        _ => problems.push(
            "DaemonSet cit-trust-agent needs the init container init-tcsd and the container run-trust-agent"
                .into(),
        ),
    }
    problems
}

/// Server and agent agree: the accounts, and the server URL names the server's Service.
fn check_agreement(docs: &[Doc], resolved: &Resolved) -> Vec<String> {
    let mut problems = Vec::new();
    let (Some(server), Some(agent)) = (resolved.server.first(), resolved.agent.first()) else {
        return vec!["need one resolved server and one resolved agent container".into()];
    };
    match &agent.server {
        None => problems.push("the agent is not configured to register with a server".into()),
        Some(s) => {
            if server.agent_username.as_deref() != Some(s.credentials.username.as_str())
                || server.agent_password.as_deref() != Some(s.credentials.password.as_str())
            {
                problems.push(
                    "the agent's account (MTWILSON_API_USERNAME/PASSWORD) differs between server and agent".into(),
                );
            }
            // https://NAME.NAMESPACE.svc[.cluster.local]:PORT
            let rest = s.url.trim_start_matches("https://");
            let (host, port) = rest
                .split('/')
                .next()
                .unwrap_or_default()
                .rsplit_once(':')
                .unwrap_or((rest, "443"));
            let mut labels = host.split('.');
            let (name, ns) = (
                labels.next().unwrap_or_default(),
                labels.next().unwrap_or_default(),
            );
            let port: i32 = port.parse().unwrap_or(0);
            let service = objects::<Service>(docs)
                .into_iter()
                .find(|svc| name_of(&svc.metadata) == (ns.to_string(), name.to_string()));
            match service {
                None => problems.push(format!("server URL {}: no Service {ns}/{name}", s.url)),
                Some(svc) => {
                    let ports = svc.spec.and_then(|s| s.ports).unwrap_or_default();
                    if !ports.iter().any(|p| p.port == port) {
                        problems.push(format!("Service {ns}/{name} does not expose port {port}"));
                    }
                }
            }
        }
    }
    if server.trustagent_username.as_deref() != Some(agent.admin.username.as_str())
        || server.trustagent_password.as_deref() != Some(agent.admin.password.as_str())
    {
        problems.push(
            "TRUSTAGENT_ADMIN_USERNAME/PASSWORD differ between server and agent: the server could not call the agents"
                .into(),
        );
    }
    problems
}

fn all_problems(docs: &[Doc]) -> Vec<String> {
    let mut problems: Vec<String> = docs.iter().filter_map(|d| check_typed(d).err()).collect();
    let (container_problems, resolved) = check_containers(docs);
    problems.extend(container_problems);
    problems.extend(check_rbac(docs));
    problems.extend(check_layout(docs));
    problems.extend(check_agreement(docs, &resolved));
    problems
}

fn assert_clean(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "problems:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Tests of the shipped manifests

#[test]
fn every_manifest_parses_into_its_kubernetes_type_without_unknown_fields() {
    let docs = load();
    let problems: Vec<String> = docs.iter().filter_map(|d| check_typed(d).err()).collect();
    assert_clean(&problems);
    let kinds: BTreeSet<&str> = docs.iter().map(Doc::kind).collect();
    for kind in [
        "Namespace",
        "ConfigMap",
        "Secret",
        "DaemonSet",
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "PersistentVolumeClaim",
        "StatefulSet",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/: {kinds:?}");
    }
}

#[test]
fn containers_set_only_variables_and_flags_their_binary_reads_and_every_required_one() {
    let (problems, resolved) = check_containers(&load());
    assert_clean(&problems);
    assert_eq!(resolved.server.len(), 1, "one server container");
    assert_eq!(
        resolved.agent.len(),
        1,
        "one agent container (init-tcsd is `check`)"
    );
    let server = &resolved.server[0];
    assert!(server.labeller, "the server runs the labeller");
    assert!(
        server.admin_password.is_some(),
        "the first admin account is set"
    );
}

#[test]
fn runbook_layout_namespace_configmap_secret_and_daemonset() {
    assert_clean(&check_layout(&load()));
}

#[test]
fn server_rbac_covers_what_the_labeller_does() {
    assert_clean(&check_rbac(&load()));
}

#[test]
fn server_and_agents_agree_on_accounts_and_server_address() {
    let docs = load();
    let (problems, resolved) = check_containers(&docs);
    assert_clean(&problems);
    assert_clean(&check_agreement(&docs, &resolved));
}

#[test]
fn secrets_shipped_are_placeholders_marked_change_me() {
    let docs = load();
    for ((ns, name), data) in secrets(&docs) {
        for (k, v) in data {
            let allowed_empty = k == "TPM_OWNER_SECRET";
            let user = k.ends_with("_USER") || k.ends_with("_DB") || k.ends_with("USERNAME");
            assert!(
                user || (allowed_empty && v.is_empty()) || v.contains("CHANGE-ME"),
                "Secret {ns}/{name} key {k}: a shipped secret must be a CHANGE-ME placeholder"
            );
        }
    }
}

#[test]
fn kustomization_lists_the_manifests() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "fields read only by serde's unknown-field check")]
    struct Kustomization {
        api_version: String,
        kind: String,
        resources: Vec<String>,
    }
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap();
    let k: Kustomization = serde_norway::from_str(&text).unwrap();
    assert_eq!(k.kind, "Kustomization");
    let listed: BTreeSet<String> = k.resources.iter().cloned().collect();
    for r in &k.resources {
        assert!(
            deploy_dir().join(r).is_file(),
            "kustomization lists {r}, which does not exist"
        );
    }
    for file in manifest_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // postgres.yaml is opt-in (several server replicas).
        if name != "postgres.yaml" {
            assert!(
                listed.contains(&name),
                "kustomization.yaml does not list {name}"
            );
        }
    }
}

#[test]
fn each_dockerfile_builds_copies_and_runs_its_binary() {
    let images = deploy_dir().join("images");
    let mut seen = BTreeSet::new();
    // Binary name -> the package that defines it.
    let mut bins: BTreeMap<String, String> = BTreeMap::new();
    for krate in ["agent", "server", "cli"] {
        let manifest =
            std::fs::read_to_string(repo().join("crates").join(krate).join("Cargo.toml")).unwrap();
        let package = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .unwrap()
            .trim_end_matches('"')
            .to_string();
        let mut in_bin = false;
        for line in manifest.lines() {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin {
                if let Some(n) = line.strip_prefix("name = \"") {
                    bins.insert(n.trim_end_matches('"').to_string(), package.clone());
                }
            }
        }
    }
    assert_eq!(bins.len(), 3, "{bins:?}");
    for (bin, package) in &bins {
        let path = images.join(format!("{bin}.Dockerfile"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .collect();
        let from: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
        assert!(
            from.len() == 2
                && from[0].starts_with("FROM rust:")
                && from[0].contains("bookworm")
                && from[0].ends_with(" AS build")
                && from[1].starts_with("FROM debian:bookworm-slim"),
            "{bin}: a rust:bookworm build stage and a debian:bookworm-slim runtime: {from:?}"
        );
        let build = lines
            .iter()
            .find(|l| l.contains("cargo build"))
            .unwrap_or_else(|| panic!("{bin}: no cargo build"));
        for part in [
            "--release",
            "--locked",
            &format!("-p {package}"),
            &format!("--bin {bin}"),
        ] {
            assert!(
                build
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .contains(part),
                "{bin}: `{build}` lacks {part}"
            );
        }
        let copy = format!("COPY --from=build /src/target/release/{bin} /usr/local/bin/{bin}");
        assert!(lines.contains(&copy.as_str()), "{bin}: no `{copy}`");
        let entry = format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]");
        assert!(lines.contains(&entry.as_str()), "{bin}: no `{entry}`");
        let tss = lines.iter().any(|l| l.contains("libtss2-esys"));
        assert_eq!(
            tss,
            bin == "nodetrust-agent",
            "{bin}: libtss2 runtime only in the agent image"
        );
        if bin != "nodetrust-agent" {
            assert!(
                lines.iter().any(|l| l.starts_with("USER 10001")),
                "{bin}: runs as non-root"
            );
        }
        seen.insert(bin.clone());
        // The manifests run the image of this binary at the workspace's version.
    }
    let version = env!("CARGO_PKG_VERSION");
    for site in sites(&load()) {
        let image = site.container.image.clone().unwrap_or_default();
        if binary_of(&image) != Binary::Other {
            let (repo_name, tag) = image.split_once(':').unwrap();
            let bin = repo_name.rsplit('/').next().unwrap();
            assert!(seen.contains(bin), "{image}: no Dockerfile for {bin}");
            assert_eq!(tag, version, "{image}: tag is not the workspace version");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks catch real mistakes

fn with_edit(file_origin_prefix: &str, kind: &str, edit: impl Fn(&mut Value)) -> Vec<Doc> {
    let mut docs = load();
    let doc = docs
        .iter_mut()
        .find(|d| d.origin.starts_with(file_origin_prefix) && d.kind() == kind)
        .unwrap();
    edit(&mut doc.value);
    docs
}

fn expect_problem(docs: &[Doc], needle: &str) {
    let problems = all_problems(docs);
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem containing {needle:?}, got:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn misspelt_field_is_caught_with_its_path() {
    let docs = with_edit("agent-daemonset.yaml", "DaemonSet", |v| {
        let spec = &mut v["spec"]["template"]["spec"];
        let sel = spec["nodeSelector"].take();
        spec.as_object_mut().unwrap().remove("nodeSelector");
        spec["nodeSelecter"] = sel;
    });
    expect_problem(&docs, "unknown field(s): spec.template.spec.nodeSelecter");
}

#[test]
fn misspelt_nested_container_field_is_caught() {
    let docs = with_edit("server.yaml", "Deployment", |v| {
        v["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["shceme"] =
            Value::String("HTTPS".into());
    });
    expect_problem(
        &docs,
        "spec.template.spec.containers[0].readinessProbe.httpGet.shceme",
    );
}

#[test]
fn misspelt_environment_variable_is_caught() {
    let docs = with_edit("agent-daemonset.yaml", "DaemonSet", |v| {
        let env = v["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap();
        let var = env
            .iter_mut()
            .find(|e| e["name"] == "TRUSTAGENT_ADMIN_PASSWORD")
            .unwrap();
        var["name"] = Value::String("TRUSTAGENT_ADMIN_PASSWROD".into());
    });
    expect_problem(
        &docs,
        "sets TRUSTAGENT_ADMIN_PASSWROD, which Agent does not read",
    );
    expect_problem(&docs, "TRUSTAGENT_ADMIN_PASSWORD is required and not set");
}

#[test]
fn misspelt_flag_is_caught() {
    let docs = with_edit("server.yaml", "Deployment", |v| {
        v["spec"]["template"]["spec"]["containers"][0]["args"][0] =
            Value::String("--labeler".into());
    });
    expect_problem(&docs, "--labeler");
}

#[test]
fn key_missing_from_the_configmap_is_caught() {
    let docs = with_edit("cit-server-info.yaml", "ConfigMap", |v| {
        v["data"]
            .as_object_mut()
            .unwrap()
            .remove("TRUSTAGENT_ADMIN_USERNAME");
    });
    expect_problem(
        &docs,
        "ConfigMap kubx-cit/cit-server-info has no key \"TRUSTAGENT_ADMIN_USERNAME\"",
    );
    expect_problem(&docs, "lacks the runbook's key TRUSTAGENT_ADMIN_USERNAME");
}

#[test]
fn server_admin_password_in_an_envfrom_of_the_agent_is_caught() {
    // envFrom of the whole Secret would hand the server's admin password to every node.
    let docs = with_edit("agent-daemonset.yaml", "DaemonSet", |v| {
        v["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
            serde_json::json!([{"secretRef": {"name": "cit-server-info"}}]);
    });
    expect_problem(
        &docs,
        "sets NODETRUST_ADMIN_PASSWORD, which Agent does not read",
    );
}

#[test]
fn agent_without_a_way_to_trust_the_server_is_caught() {
    let docs = with_edit("agent-daemonset.yaml", "DaemonSet", |v| {
        let env = v["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap();
        env.retain(|e| e["name"] != "TRUSTAGENT_SERVER_CA");
    });
    expect_problem(&docs, "how to trust its TLS certificate");
}

#[test]
fn missing_rbac_verb_is_caught() {
    let docs = with_edit("server.yaml", "ClusterRole", |v| {
        v["rules"][0]["verbs"] = serde_json::json!(["get", "list", "watch"]);
    });
    expect_problem(&docs, "may not patch nodes");
    let docs = with_edit("server.yaml", "Role", |v| {
        v["metadata"]["namespace"] = Value::String("default".into());
    });
    expect_problem(&docs, "may not create leases in namespace kubx-cit");
}

#[test]
fn wrong_node_selector_and_namespace_are_caught() {
    let docs = with_edit("agent-daemonset.yaml", "DaemonSet", |v| {
        v["spec"]["template"]["spec"]["nodeSelector"] =
            serde_json::json!({"ibm-cloud.kubernetes.io/tpm-enabled": "yes"});
        v["metadata"]["namespace"] = Value::String("kube-system".into());
    });
    expect_problem(&docs, "not ibm-cloud.kubernetes.io/tpm-enabled=true");
    expect_problem(&docs, "not kubx-cit");
}

#[test]
fn init_container_with_another_tpm_is_caught() {
    let docs = with_edit("agent-daemonset.yaml", "DaemonSet", |v| {
        v["spec"]["template"]["spec"]["initContainers"][0]["args"][0] =
            Value::String("--tcti=device:/dev/tpm0".into());
    });
    expect_problem(&docs, "differ in --tcti");
}

#[test]
fn mismatched_agent_account_between_server_and_agent_is_caught() {
    let docs = with_edit("server.yaml", "Deployment", |v| {
        let env = v["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap();
        let var = env
            .iter_mut()
            .find(|e| e["name"] == "MTWILSON_API_USERNAME")
            .unwrap();
        *var = serde_json::json!({"name": "MTWILSON_API_USERNAME", "value": "someone-else"});
    });
    expect_problem(&docs, "differs between server and agent");
}
