//! nodetrust-deploy: no code, only the tests of `deploy/` (tests/manifests.rs).
//!
//! They parse every Kubernetes manifest into its k8s-openapi type and reject unknown fields,
//! resolve each container's settings with the real configuration code of `nodetrust-agent` and
//! `nodetrust-server` (so a misspelt variable or flag, or a missing required one, fails), check
//! that every key taken from a ConfigMap or Secret exists, that the runbook's
//! `cit-server-info` keys are all there, that the server's RBAC covers what the labeller does,
//! and that each Dockerfile builds and installs the binary it is named after.
#![forbid(unsafe_code)]
