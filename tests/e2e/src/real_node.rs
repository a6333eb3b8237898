//! The local cluster's real node (`real-1`: the upstream kubelet, containerd and runc,
//! CNI, kube-proxy): where its pods run, the images `make images` pushed, container
//! processes from containerd, and what the tests check on them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, ensure};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::Api;
use serde_json::{Value, json};
use studio_harness::{Cluster, TestEnv};

pub use studio_harness::runtime::{
    REAL_NODE, REAL_NODE_TAINT, container_status, containerd_socket,
};
/// The non-root user and group of the runtime images (Dockerfile).
pub const IMAGE_UID: u32 = 65532;

/// `KEY=VALUE` lines of `<cluster dir>/images.env`, written by `make images`.
pub fn pushed_images(c: &Cluster) -> anyhow::Result<BTreeMap<String, String>> {
    let path = c.dir.join("images.env");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (run `make images` with the local cluster up)",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// The images `make images` pushed, by digest.
#[derive(Debug, Clone)]
pub struct Images {
    pub node: String,
    pub operator: String,
    /// studio-node at schema revision 2, compatible with 1 (the upgrade suite).
    pub node_next: Option<String>,
    /// studio-node at schema revision 2, incompatible with 1.
    pub node_next_incompatible: Option<String>,
    /// The e2e suites' test program (`studio-testapp`, tests/testapp/Dockerfile): see
    /// [`Images::testapp`].
    pub testapp: Option<String>,
}

impl Images {
    pub fn load(c: &Cluster) -> anyhow::Result<Images> {
        let env = pushed_images(c)?;
        let pinned = |key: &str| -> anyhow::Result<String> {
            let image = env
                .get(key)
                .cloned()
                .ok_or_else(|| anyhow!("images.env has no {key} (run `make images`): {env:?}"))?;
            ensure!(
                image.contains("@sha256:"),
                "{key} {image} is not pinned by digest"
            );
            Ok(image)
        };
        Ok(Images {
            node: pinned("STUDIO_NODE_IMAGE")?,
            operator: pinned("STUDIO_OPERATOR_IMAGE")?,
            node_next: pinned("STUDIO_NODE_NEXT_IMAGE").ok(),
            node_next_incompatible: pinned("STUDIO_NODE_NEXT_INCOMPATIBLE_IMAGE").ok(),
            testapp: pinned("STUDIO_TESTAPP_IMAGE").ok(),
        })
    }

    /// The pushed `studio-testapp` image (by digest), or an error saying how to get it.
    pub fn testapp(&self) -> anyhow::Result<&str> {
        self.testapp.as_deref().ok_or_else(|| {
            anyhow!(
                "images.env has no STUDIO_TESTAPP_IMAGE (pinned by digest): run `make images` \
                 (scripts/build-images.sh builds the test program's image too)"
            )
        })
    }
}

/// The pushed `studio-testapp` image of the local cluster, by digest (`images.env`).
pub fn testapp_image(c: &Cluster) -> anyhow::Result<String> {
    Ok(Images::load(c)?.testapp()?.to_string())
}

/// The same image under another tag, still pinned by digest (`repo:tag@sha256:...`):
/// another `spec.image` for a rollout, the same bytes.
pub fn retagged(image: &str, tag: &str) -> String {
    match image.split_once('@') {
        Some((repo, digest)) => format!("{repo}:{tag}@{digest}"),
        None => format!("{image}:{tag}"),
    }
}

/// `spec.pod` scheduling that puts pods on the real node: its selector and toleration.
pub fn real_node_placement() -> Value {
    json!({
        "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": REAL_NODE}
    })
}

/// The real node is Ready and its runtime is containerd.
pub async fn real_node_ready(env: &TestEnv) -> anyhow::Result<String> {
    let node = Api::<Node>::all(env.client.clone())
        .get_opt(REAL_NODE)
        .await?
        .ok_or_else(|| {
            anyhow!("Node {REAL_NODE} does not exist: scripts/cluster-up.sh starts it")
        })?;
    let status = node.status.unwrap_or_default();
    let runtime = status
        .node_info
        .map(|i| i.container_runtime_version)
        .unwrap_or_default();
    ensure!(
        runtime.starts_with("containerd://"),
        "Node {REAL_NODE} runs {runtime:?}, not containerd"
    );
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ensure!(ready, "Node {REAL_NODE} is not Ready");
    Ok(runtime)
}

/// The part of a StudioCluster's spec that puts every pod on the real node, from
/// `image` (merge it into a spec).
pub fn real_node_spec(image: &str, nodes: u32) -> Value {
    json!({
        "nodes": nodes,
        "image": image,
        "pod": real_node_placement()
    })
}

/// The PID of a pod's `studio` container on the real node.
pub fn container_pid(c: &Cluster, pod: &Pod) -> anyhow::Result<i32> {
    studio_harness::runtime::container_pid(c, pod, "studio")
}

/// The process's real uid (`/proc/<pid>/status`) and whether its root filesystem is
/// mounted read-only (`/proc/<pid>/mountinfo`, as the container sees it).
pub fn uid_and_read_only_root(pid: i32) -> anyhow::Result<(u32, bool)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| anyhow!("no Uid in /proc/{pid}/status"))?
        .parse()?;
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    // Fields: id parent major:minor root mount-point options ...
    let root = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .rfind(|f| f.get(4) == Some(&"/"))
        .ok_or_else(|| anyhow!("no / mount in /proc/{pid}/mountinfo"))?;
    let read_only = root.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro"));
    Ok((uid, read_only))
}

/// The host directory behind a pod's data PVC (a `local` PV).
pub async fn data_dir(env: &TestEnv, pod: &str) -> anyhow::Result<PathBuf> {
    let pvc = env
        .api::<PersistentVolumeClaim>()
        .get(&format!("data-{pod}"))
        .await?;
    let pv = pvc
        .spec
        .and_then(|s| s.volume_name)
        .ok_or_else(|| anyhow!("data-{pod} is not bound"))?;
    let pv = Api::<PersistentVolume>::all(env.client.clone())
        .get(&pv)
        .await?;
    let path = pv
        .spec
        .and_then(|s| s.local.map(|l| l.path))
        .ok_or_else(|| anyhow!("PV of data-{pod} is not a local volume"))?;
    Ok(PathBuf::from(path))
}

/// The volume's root belongs to group 65532 (the kubelet applied `fsGroup`) and every
/// file the node wrote belongs to user 65532.
pub fn owned_by_the_image_user(dir: &Path) -> anyhow::Result<usize> {
    let meta = std::fs::metadata(dir).with_context(|| format!("{}", dir.display()))?;
    ensure!(
        meta.gid() == IMAGE_UID,
        "{} has group {}, not {IMAGE_UID} (fsGroup not applied)",
        dir.display(),
        meta.gid()
    );
    let mut files = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        ensure!(
            m.uid() == IMAGE_UID,
            "{} belongs to uid {}, not {IMAGE_UID}",
            e.path().display(),
            m.uid()
        );
        files += 1;
    }
    ensure!(files > 0, "the node wrote nothing into {}", dir.display());
    Ok(files)
}

pub async fn cluster_ip(env: &TestEnv, service: &str) -> anyhow::Result<Ipv4Addr> {
    let svc = env.api::<Service>().get(service).await?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or_else(|| anyhow!("Service {service} has no ClusterIP"))?;
    ip.parse()
        .with_context(|| format!("ClusterIP {ip} of {service}"))
}
