//! `studio-operator --apply-crds`: server-side applies the CRDs this build was made
//! with (StudioCluster, StudioBackup, StudioScheduledBackup) and waits until each is
//! Established. The chart runs it as a pre-install/pre-upgrade hook, because Helm
//! installs `crds/` only when absent and never upgrades them.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

/// Field manager of the CRD; `--force` takes over fields another manager (an earlier
/// `kubectl apply`, Helm's `crds/`) set.
const FIELD_MANAGER: &str = "studio-operator-crds";

/// Applies every CRD and waits up to `timeout` (in all) for them to be Established.
/// Returns their names.
pub async fn apply_crds(client: Client, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for (_, crd) in crate::crds() {
        let name = crd.name_any();
        api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
        names.push(name);
    }
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
    for name in &names {
        loop {
            let c = api.get(name).await?;
            if established(&c) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("CRD {name} applied but not Established after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(names)
}
