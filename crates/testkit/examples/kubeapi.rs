//! The Kubernetes API stand-in as a process, for `make demo`: serves until killed.
//!
//! `kubeapi --kubeconfig FILE [--node NAME=SYSTEM_UUID[,tpm]]... [--objects FILE]` writes a
//! kubeconfig for it (plain `http://127.0.0.1:PORT`, no credentials), creates the nodes
//! (`,tpm` adds the label `ibm-cloud.kubernetes.io/tpm-enabled=true`) and the objects of a JSON
//! array file (status included, as a controller would have set it), prints
//! `kubeapi: serving at URL` and serves.
#![allow(clippy::print_stdout, reason = "a demo tool")]

use std::process::ExitCode;

use nodetrust_testkit::kubeapi::FakeApiServer;

fn main() -> ExitCode {
    let mut kubeconfig = None;
    let mut nodes = Vec::new();
    let mut objects = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--kubeconfig", Some(v)) => kubeconfig = Some(v),
            ("--node", Some(v)) => nodes.push(v),
            ("--objects", Some(v)) => objects = Some(v),
            _ => {
                eprintln!("usage: kubeapi --kubeconfig FILE [--node NAME=SYSTEM_UUID[,tpm]]... [--objects FILE]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(kubeconfig) = kubeconfig else {
        eprintln!("kubeapi: --kubeconfig FILE is required");
        return ExitCode::from(2);
    };
    let server = match FakeApiServer::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kubeapi: {e}");
            return ExitCode::FAILURE;
        }
    };
    for spec in &nodes {
        let (name, rest) = spec.split_once('=').unwrap_or((spec.as_str(), ""));
        let (uuid, tpm) = match rest.split_once(',') {
            Some((u, flag)) => (u, flag == "tpm"),
            None => (rest, false),
        };
        let labels: &[(&str, &str)] = if tpm {
            &[("ibm-cloud.kubernetes.io/tpm-enabled", "true")]
        } else {
            &[]
        };
        if let Err(e) = server.add_node(name, labels, uuid) {
            eprintln!("kubeapi: node {name}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = objects {
        let list: Vec<serde_json::Value> = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kubeapi: --objects {path}: {e}");
                return ExitCode::FAILURE;
            }
        };
        for obj in list {
            if let Err(e) = server.set_object(obj) {
                eprintln!("kubeapi: --objects {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = server.write_kubeconfig(std::path::Path::new(&kubeconfig)) {
        eprintln!("kubeapi: {e}");
        return ExitCode::FAILURE;
    }
    println!("kubeapi: serving at {}", server.url());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
