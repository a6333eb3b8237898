//! studio-operator: reconciles StudioCluster resources into a running, self-healing
//! Studio cluster.

pub mod backup;
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

/// The CRDs of this build, each with the file it is committed as under `deploy/crds/`
/// (and the chart's `crds/`).
pub fn crds() -> Vec<(
    &'static str,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
)> {
    use kube::CustomResourceExt;
    vec![
        ("studiocluster.yaml", studio_crds::StudioCluster::crd()),
        ("studiobackup.yaml", studio_crds::StudioBackup::crd()),
        (
            "studioscheduledbackup.yaml",
            studio_crds::StudioScheduledBackup::crd(),
        ),
    ]
}

/// One CRD as YAML, exactly as committed in its own file.
pub fn crd_file_yaml(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}

/// Every CRD as one multi-document YAML (`kubectl apply -f -` takes it as it is): the
/// files of `deploy/crds/` joined with `---`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let docs = crds()
        .iter()
        .map(|(_, c)| crd_file_yaml(c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}
