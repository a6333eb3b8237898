//! studio-operator: reconciles StudioCluster resources into a running, self-healing
//! Studio cluster.

pub mod build;
pub mod cli;
pub mod controller;
pub mod crd_install;
pub mod error;
pub mod metrics;
pub mod node_client;
pub mod plan;
pub mod server;
pub mod support_bundle;
pub mod tls;
pub mod upgrade;

/// The StudioCluster CRD as YAML, as committed under `deploy/crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&studio_crds::StudioCluster::crd())
}
