//! `studio-operator --apply-crds`: server-side applies the StudioCluster CRD this build
//! was made with and waits until it is Established. The chart runs it as a
//! pre-install/pre-upgrade hook, because Helm installs `crds/` only when absent and
//! never upgrades them.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use studio_crds::StudioCluster;

/// Field manager of the CRD; `--force` takes over fields another manager (an earlier
/// `kubectl apply`, Helm's `crds/`) set.
const FIELD_MANAGER: &str = "studio-operator-crds";

/// Applies the CRD and waits up to `timeout` for it to be Established.
pub async fn apply_crd(client: Client, timeout: Duration) -> anyhow::Result<String> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let crd = StudioCluster::crd();
    let name = crd.name_any();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
    let established = |c: &CustomResourceDefinition| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let c = api.get(&name).await?;
        if established(&c) {
            return Ok(name);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("CRD {name} applied but not Established after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
