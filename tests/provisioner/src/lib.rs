//! The local cluster's "dynamic provisioner" for PVCs (`studio-provisioner`, its own
//! process since the real node joined: it serves every kind of Node).
//!
//! Ensures a default StorageClass `standard` (provisioner `studio.cms.io/local`, as scripts/cluster-up.sh makes it,
//! Immediate binding, reclaim Delete) exists. For every Pending PVC whose class is
//! unset, empty, `standard` or any class with our provisioner, it makes the directory
//! `<volumes dir>/pvc-<pvc-uid>` and creates PV `pvc-<pvc-uid>` (`local` volume of that
//! directory, capacity = request, claimRef to the PVC, reclaim Delete); kcm's
//! persistentvolume-binder then binds the two. When such a PV is Released/Failed (its
//! PVC was deleted) the directory and the PV are deleted. The directory belongs to the
//! PVC, not to a pod: it survives pod restarts, deletion and re-creation.
//!
//! `local`, not `hostPath`: a real kubelet applies a pod's `fsGroup` to a local volume
//! (a non-root node can write it) and ignores it for hostPath. Every Node of the local
//! cluster runs on this machine, so the node affinity admits any Linux node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

pub const PROVISIONER: &str = "studio.cms.io/local";
pub const DEFAULT_CLASS: &str = "standard";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

pub fn pv_name(pvc_uid: &str) -> String {
    format!("pvc-{pvc_uid}")
}

pub fn pvc_dir(volumes_root: &Path, pvc_uid: &str) -> PathBuf {
    volumes_root.join(pv_name(pvc_uid))
}

/// Should we provision this PVC? `our_classes` are classes whose provisioner is ours.
pub fn wants_provisioning(pvc: &PersistentVolumeClaim, our_classes: &[String]) -> bool {
    let Some(spec) = &pvc.spec else { return false };
    if pvc.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if spec.volume_mode.as_deref() == Some("Block")
        || spec.selector.is_some()
        || spec.data_source.is_some()
    {
        return false;
    }
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if phase != "Pending" {
        return false;
    }
    match spec.storage_class_name.as_deref() {
        None | Some("") | Some(DEFAULT_CLASS) => true,
        Some(c) => our_classes.iter().any(|o| o == c),
    }
}

/// The PV for a PVC.
pub fn pv_for(pvc: &PersistentVolumeClaim, dir: &Path) -> Option<PersistentVolume> {
    let uid = pvc.metadata.uid.clone()?;
    let spec = pvc.spec.as_ref()?;
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or_else(|| Quantity("1Gi".to_string()));
    let access_modes = spec
        .access_modes
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".to_string()]);
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name(&uid)),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), storage)])),
            access_modes: Some(access_modes),
            local: Some(LocalVolumeSource {
                path: dir.display().to_string(),
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/os".to_string(),
                            operator: "In".to_string(),
                            values: Some(vec!["linux".to_string()]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some("Delete".to_string()),
            storage_class_name: spec.storage_class_name.clone().filter(|c| !c.is_empty()),
            volume_mode: Some("Filesystem".to_string()),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("PersistentVolumeClaim".to_string()),
                namespace: pvc.metadata.namespace.clone(),
                name: pvc.metadata.name.clone(),
                uid: Some(uid),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn is_ours(pv: &PersistentVolume) -> bool {
    pv.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER)
}

async fn ensure_default_class(client: &Client) -> Result<(), kube::Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    if api.get_opt(DEFAULT_CLASS).await?.is_some() {
        return Ok(());
    }
    let sc = StorageClass {
        metadata: ObjectMeta {
            name: Some(DEFAULT_CLASS.to_string()),
            annotations: Some(BTreeMap::from([(
                "storageclass.kubernetes.io/is-default-class".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        provisioner: PROVISIONER.to_string(),
        reclaim_policy: Some("Delete".to_string()),
        volume_binding_mode: Some("Immediate".to_string()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sc).await {
        Ok(_) => {
            tracing::info!("created default StorageClass {DEFAULT_CLASS}");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_dir(volumes_root: &Path, path: &str) {
    let p = Path::new(path);
    // Only ever delete our own directories.
    if p.parent() == Some(volumes_root)
        && p.file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with("pvc-"))
    {
        if let Err(e) = std::fs::remove_dir_all(p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %p.display(), error = %e, "removing volume directory");
            }
        } else {
            tracing::info!(dir = %p.display(), "removed volume directory");
        }
    }
}

async fn reconcile(
    client: &Client,
    volumes_root: &Path,
    pvcs: &Store<PersistentVolumeClaim>,
    pvs: &Store<PersistentVolume>,
    classes: &Store<StorageClass>,
) {
    let our_classes: Vec<String> = classes
        .state()
        .iter()
        .filter(|c| c.provisioner == PROVISIONER)
        .map(|c| c.name_any())
        .collect();
    let pv_api: Api<PersistentVolume> = Api::all(client.clone());
    let existing: std::collections::HashSet<String> =
        pvs.state().iter().map(|p| p.name_any()).collect();
    for pvc in pvcs.state() {
        if !wants_provisioning(&pvc, &our_classes) {
            continue;
        }
        let Some(uid) = pvc.metadata.uid.clone() else {
            continue;
        };
        if existing.contains(&pv_name(&uid)) {
            continue;
        }
        let dir = pvc_dir(volumes_root, &uid);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "creating volume directory");
            continue;
        }
        let Some(pv) = pv_for(&pvc, &dir) else {
            continue;
        };
        match pv_api.create(&PostParams::default(), &pv).await {
            Ok(_) => tracing::info!(
                pvc = %format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any()),
                pv = %pv_name(&uid), "provisioned volume"
            ),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!(pvc = %pvc.name_any(), error = %e, "creating PV"),
        }
    }
    for pv in pvs.state() {
        if !is_ours(&pv) {
            continue;
        }
        let phase = pv
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        let spec = pv.spec.clone().unwrap_or_default();
        let reclaim = spec
            .persistent_volume_reclaim_policy
            .as_deref()
            .unwrap_or("Delete");
        let path = spec
            .host_path
            .map(|h| h.path)
            .or(spec.local.map(|l| l.path));
        // A pre-bound PV whose claim no longer exists (PVC deleted before binding).
        let claim_gone = spec.claim_ref.as_ref().is_some_and(|r| {
            let ns = r.namespace.clone().unwrap_or_default();
            let name = r.name.clone().unwrap_or_default();
            !pvcs.state().iter().any(|c| {
                c.namespace().unwrap_or_default() == ns
                    && c.name_any() == name
                    && c.metadata.uid == r.uid
            })
        });
        let released =
            matches!(phase, "Released" | "Failed") || (claim_gone && phase == "Available");
        if released && reclaim == "Delete" && pv.metadata.deletion_timestamp.is_none() {
            if let Some(p) = &path {
                remove_dir(volumes_root, p);
            }
            match pv_api
                .delete(&pv.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => tracing::info!(pv = %pv.name_any(), "deleted released volume"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => tracing::warn!(pv = %pv.name_any(), error = %e, "deleting PV"),
            }
        }
    }
}

/// Runs the provisioner forever.
pub async fn run(client: Client, volumes_root: PathBuf) {
    if let Err(e) = std::fs::create_dir_all(&volumes_root) {
        tracing::error!(dir = %volumes_root.display(), error = %e, "creating volumes root");
    }
    let wake = Arc::new(Notify::new());
    let (pvcs, pvc_writer) = reflector::store::<PersistentVolumeClaim>();
    let (pvs, pv_writer) = reflector::store::<PersistentVolume>();
    let (classes, class_writer) = reflector::store::<StorageClass>();
    let spawn_watch = |stream: futures::stream::BoxStream<'static, Result<(), watcher::Error>>,
                       what: &'static str| {
        let wake = wake.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            while let Some(r) = stream.next().await {
                match r {
                    Ok(()) => wake.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "{what} watch error"),
                }
            }
        })
    };
    let pvc_stream = reflector::reflector(
        pvc_writer,
        watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|r| r.map(|_| ()))
    .boxed();
    let pv_stream = reflector::reflector(
        pv_writer,
        watcher(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|r| r.map(|_| ()))
    .boxed();
    let class_stream = reflector::reflector(
        class_writer,
        watcher(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|r| r.map(|_| ()))
    .boxed();
    let _h1 = spawn_watch(pvc_stream, "pvc");
    let _h2 = spawn_watch(pv_stream, "pv");
    let _h3 = spawn_watch(class_stream, "storageclass");

    let mut class_ok = false;
    loop {
        if !class_ok {
            match ensure_default_class(&client).await {
                Ok(()) => class_ok = true,
                Err(e) => tracing::warn!(error = %e, "ensuring default StorageClass"),
            }
        }
        if pvcs.wait_until_ready().await.is_ok() && pvs.wait_until_ready().await.is_ok() {
            reconcile(&client, &volumes_root, &pvcs, &pvs, &classes).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
        // Coalesce bursts of events.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pvc(class: Option<&str>, phase: &str) -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}});
        if let Some(c) = class {
            spec["storageClassName"] = json!(c);
        }
        serde_json::from_value(json!({
            "metadata": {"name": "data-web-0", "namespace": "ns", "uid": "1234"},
            "spec": spec, "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn selection() {
        assert!(wants_provisioning(&pvc(None, "Pending"), &[]));
        assert!(wants_provisioning(&pvc(Some("standard"), "Pending"), &[]));
        assert!(wants_provisioning(&pvc(Some(""), "Pending"), &[]));
        assert!(!wants_provisioning(&pvc(Some("fast"), "Pending"), &[]));
        assert!(wants_provisioning(
            &pvc(Some("fast"), "Pending"),
            &["fast".to_string()]
        ));
        assert!(!wants_provisioning(&pvc(None, "Bound"), &[]));
    }

    #[test]
    fn pv_shape() {
        let dir = Path::new("/state/volumes/pvc-1234");
        let pv = pv_for(&pvc(Some("standard"), "Pending"), dir).unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-1234"));
        let spec = pv.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"].0, "2Gi");
        assert_eq!(spec.local.unwrap().path, "/state/volumes/pvc-1234");
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        let cr = spec.claim_ref.unwrap();
        assert_eq!(cr.uid.as_deref(), Some("1234"));
        assert_eq!(cr.name.as_deref(), Some("data-web-0"));
        assert_eq!(pvc_dir(Path::new("/state/volumes"), "1234"), dir);
    }

    #[test]
    fn only_own_dirs_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let mine = root.path().join("pvc-1");
        let other = root.path().join("keep");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        remove_dir(root.path(), &other.display().to_string());
        remove_dir(root.path(), "/etc");
        remove_dir(root.path(), &mine.display().to_string());
        assert!(other.exists());
        assert!(!mine.exists());
    }
}
