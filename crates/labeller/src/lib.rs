//! nodetrust-labeller: the node label `ibm-cloud.kubernetes.io/is-trusted` from the Trust
//! Server's verdicts. The same code runs inside `nodetrust-server` (following the store's
//! change feed) and as `nodetrust label` (polling the server's API with a reader account).
//!
//! # Layout
//! - [`desired`]: the pure desired-state function and the patch that applies it.
//! - [`controller`]: the loop: trust updates in, node watch, reconcile, resync.
//! - [`api`]: rate limit, patch with `resourceVersion`, retries and back-off.
//! - [`leader`]: one labeller among replicas (a `coordination.k8s.io/v1` Lease).
//! - [`metrics`]: Prometheus metrics.
//! - [`args`]: the flags shared by the server and `nodetrust label`.
//! - [`client`]: a Kubernetes client from a kubeconfig or the pod's service account.
#![forbid(unsafe_code)]

pub mod api;
pub mod args;
pub mod client;
pub mod controller;
pub mod desired;
pub mod leader;
pub mod metrics;

pub use controller::{run, sync_once, Clock, HostTrust, Settings, TrustUpdate};
pub use desired::{desired, patch_for, Desired, Policy};
pub use metrics::Metrics;
