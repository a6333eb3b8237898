//! studio-operator: reconciles StudioCluster resources.

/// The StudioCluster CRD as YAML, as committed under `deploy/crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&studio_crds::StudioCluster::crd())
}
