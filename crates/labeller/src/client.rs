//! A Kubernetes client: from a kubeconfig file (`--kubeconfig`; a plain `http://` server with
//! no credentials works, which is how tests point it at a stand-in), or in a pod from its
//! service account (`--labeller`).

use std::path::Path;

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// File.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Not in a pod, or its service account is unusable.
    #[error("in-cluster configuration (is this running in a pod with a service account?): {0}")]
    InCluster(String),
    /// The client could not be built.
    #[error("Kubernetes client: {0}")]
    Build(String),
}

/// A client from a kubeconfig file (its current context).
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, ClientError> {
    let err = |message: String| ClientError::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| ClientError::Build(e.to_string()))
}

/// A client from the pod's service account.
pub fn in_cluster() -> Result<kube::Client, ClientError> {
    let cfg = kube::Config::incluster().map_err(|e| ClientError::InCluster(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| ClientError::Build(e.to_string()))
}
