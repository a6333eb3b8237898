//! Pod volumes as host directories, and how containers find them.
//!
//! There are no mount namespaces. Each volume is a host directory:
//! - `emptyDir`, `secret`, `configMap`, `projected`, `downwardAPI`:
//!   `<state-dir>/pods/<ns>_<pod>_<uid>/volumes/<volume>/` (removed with the pod);
//!   the last four hold the objects' data in the real kubelet's AtomicWriter layout
//!   ([`crate::atomic_writer`]: `key -> ..data/key`, `..data -> ..<timestamp>`),
//!   `items`, modes and `optional` honoured, and follow updates of their Secrets,
//!   ConfigMaps and pod labels/annotations: [`resync_loop`] re-reads them every
//!   `--volume-resync-seconds` and swaps in a new version when the bytes differ. A
//!   source that is missing (non-optional) or unreadable at a resync leaves the
//!   volume as it is, as with the real kubelet; an optional one that is missing
//!   contributes no files. Projected ServiceAccount tokens live in
//!   `<pod-dir>/projected-tokens/<volume>/` (refreshed by [`crate::token`]) and the
//!   volume links to them;
//! - `persistentVolumeClaim`: the bound PV's `hostPath`/`local` path (the provisioner
//!   makes `<state-dir>/volumes/pvc-<pvc-uid>`), which outlives pods;
//! - `hostPath`: the path itself.
//!
//! The mount rule: for every `volumeMount`, with `host` = volume dir (+ `subPath`):
//! 1. in every arg, command word and env value, each occurrence of `mountPath` as a
//!    whole path (at the start, or after whitespace, `=`, a quote, `:`, `,`, `;`, `(`
//!    or a shell operator; followed by the end, `/`, whitespace, a quote or
//!    punctuation) is replaced by `host` (longest mountPath first), so
//!    `--data-dir=/data`, `DATA=/data/x` and `sh -c "echo > /data/f"` all just work
//!    (paths a program builds at run time from other strings are not rewritten);
//! 2. env `STUDIO_MOUNT_<VOLUME>` (upper-cased, non-alphanumerics → `_`) = `host`;
//! 3. `<pod-dir>/root/<mountPath>` is a symlink to `host`, and env `STUDIO_ROOT` names
//!    `<pod-dir>/root` (the container's working directory unless `workingDir` is set).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::atomic_writer::{self, Entry, Payload};
use crate::env::{PodFacts, field_ref};
use crate::token::TokenTarget;

/// Default of `--volume-resync-seconds`: how often secret, configMap, downwardAPI and
/// projected volumes are compared with their sources (the real kubelet: ~1 min).
pub const DEFAULT_RESYNC_SECONDS: u64 = 10;

/// Longest wait for one API read of a volume's source.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// One volumeMount of a container, resolved to a host directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    pub mount_path: String,
    pub host_path: PathBuf,
}

fn is_pre(b: u8) -> bool {
    b.is_ascii_whitespace() || b"=\"':,(;<>|&".contains(&b)
}

fn is_post(b: u8) -> bool {
    b == b'/' || b.is_ascii_whitespace() || b"\"':,);<>|&".contains(&b)
}

/// Rewrites mountPaths in `value` (rule 1 of the module docs): every occurrence of a
/// mountPath that starts the value or follows whitespace, `=`, a quote, `:`, `,`, `(`,
/// `;` or a shell operator, and that ends the value or is followed by `/`, whitespace,
/// a quote or punctuation, is replaced by the host directory. One left-to-right pass,
/// longest mountPath first, so replaced text is never rewritten again.
pub fn substitute(value: &str, mounts: &[Mount]) -> String {
    let mut sorted: Vec<(&str, String)> = mounts
        .iter()
        .map(|m| {
            (
                m.mount_path.trim_end_matches('/'),
                m.host_path.display().to_string(),
            )
        })
        .filter(|(mp, _)| mp.starts_with('/') && mp.len() > 1)
        .collect();
    sorted.sort_by_key(|(mp, _)| std::cmp::Reverse(mp.len()));
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if bytes[i] == b'/' && (i == 0 || is_pre(bytes[i - 1])) {
            let hit = sorted.iter().find(|(mp, _)| {
                let j = i + mp.len();
                value[i..].starts_with(mp) && (j == value.len() || is_post(bytes[j]))
            });
            if let Some((mp, host)) = hit {
                out.push_str(host);
                i += mp.len();
                continue;
            }
        }
        let Some(ch) = value[i..].chars().next() else {
            break;
        };
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn safe_relative(p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if path.components().all(|c| matches!(c, Component::Normal(_))) && !p.is_empty() {
        Ok(path.to_path_buf())
    } else {
        Err(format!("path {p:?} must be relative without '..'"))
    }
}

/// The mounts of a container given the pod's volume directories.
pub fn container_mounts(
    container: &Container,
    volume_dirs: &HashMap<String, PathBuf>,
) -> Result<Vec<Mount>, String> {
    let mut out = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let dir = volume_dirs
            .get(&vm.name)
            .ok_or_else(|| format!("volumeMount {:?} names no volume of the pod", vm.name))?;
        let host = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let p = dir.join(safe_relative(sub)?);
                std::fs::create_dir_all(&p)
                    .map_err(|e| format!("creating subPath {}: {e}", p.display()))?;
                p
            }
            None => dir.clone(),
        };
        out.push(Mount {
            volume: vm.name.clone(),
            mount_path: vm.mount_path.clone(),
            host_path: host,
        });
    }
    Ok(out)
}

/// Builds `<pod-dir>/root` with a symlink per mount (rule 3).
pub fn build_root(root: &Path, mounts: &[Mount]) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    for m in mounts {
        let rel = m.mount_path.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        let rel = safe_relative(rel)?;
        let link = root.join(&rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        if std::fs::symlink_metadata(&link).is_ok() {
            let _ = std::fs::remove_file(&link);
        }
        std::os::unix::fs::symlink(&m.host_path, &link).map_err(|e| {
            format!(
                "linking {} -> {}: {e}",
                link.display(),
                m.host_path.display()
            )
        })?;
    }
    Ok(())
}

fn payload_path(p: &str) -> Result<String, String> {
    safe_relative(p)?;
    Ok(p.to_string())
}

/// Adds keyed data to a payload (all keys, or only `items` with their paths/modes);
/// a key `items` names that the object lacks is an error unless `optional`.
pub fn add_keyed(
    out: &mut Payload,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
    what: &str,
) -> Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(
                            payload_path(&it.path)?,
                            Entry::file(v.clone(), it.mode.unwrap_or(default_mode)),
                        );
                    }
                    None if optional => {}
                    None => return Err(format!("{what} has no key {:?}", it.key)),
                }
            }
        }
        _ => {
            for (k, v) in data {
                out.insert(payload_path(k)?, Entry::file(v.clone(), default_mode));
            }
        }
    }
    Ok(())
}

fn secret_bytes(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn config_map_bytes(c: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = c
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in c.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

async fn fetch_secret(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    tokio::time::timeout(API_TIMEOUT, api.get_opt(name))
        .await
        .map_err(|_| format!("getting secret {name:?}: timed out"))?
        .map(|o| o.as_ref().map(secret_bytes))
        .map_err(|e| format!("getting secret {name:?}: {e}"))
}

async fn fetch_config_map(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    tokio::time::timeout(API_TIMEOUT, api.get_opt(name))
        .await
        .map_err(|_| format!("getting configmap {name:?}: timed out"))?
        .map(|o| o.as_ref().map(config_map_bytes))
        .map_err(|e| format!("getting configmap {name:?}: {e}"))
}

/// Host directory of a bound PVC (the PV's hostPath or local path).
pub async fn pvc_dir(client: &Client, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(|e| format!("getting persistentvolumeclaim {claim:?}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} not found"))?;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} is not bound"))?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&pv_name)
        .await
        .map_err(|e| format!("getting persistentvolume {pv_name:?}: {e}"))?
        .ok_or_else(|| format!("persistentvolume {pv_name:?} not found"))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| {
            format!("persistentvolume {pv_name:?} has neither hostPath nor local path")
        })?;
    let path = PathBuf::from(path);
    std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok(path)
}

fn is_synced(v: &Volume) -> bool {
    v.secret.is_some()
        || v.config_map.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

/// The content a secret, configMap, downwardAPI or projected volume should have now,
/// and the token files it links to (projected `serviceAccountToken` sources, kept in
/// `token_dir`). Fails if a non-optional source or key is missing or unreadable.
async fn build_payload(
    client: &Client,
    pod: &Pod,
    facts: &PodFacts,
    v: &Volume,
    token_dir: &Path,
) -> Result<(Payload, Vec<TokenTarget>), String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Payload::new();
    let mut tokens = Vec::new();
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional.unwrap_or(false);
        match fetch_secret(client, ns, &name).await? {
            Some(data) => add_keyed(
                &mut out,
                &data,
                s.items.as_deref(),
                s.default_mode.unwrap_or(0o644),
                optional,
                &format!("secret {name:?}"),
            )?,
            None if optional => {}
            None => {
                return Err(format!(
                    "MountVolume.SetUp failed for volume {:?}: secret {name:?} not found",
                    v.name
                ));
            }
        }
    } else if let Some(c) = &v.config_map {
        let name = c.name.clone();
        let optional = c.optional.unwrap_or(false);
        match fetch_config_map(client, ns, &name).await? {
            Some(data) => add_keyed(
                &mut out,
                &data,
                c.items.as_deref(),
                c.default_mode.unwrap_or(0o644),
                optional,
                &format!("configmap {name:?}"),
            )?,
            None if optional => {}
            None => {
                return Err(format!(
                    "MountVolume.SetUp failed for volume {:?}: configmap {name:?} not found",
                    v.name
                ));
            }
        }
    } else if let Some(d) = &v.downward_api {
        for it in d.items.iter().flatten() {
            if let Some(f) = &it.field_ref {
                let val = field_ref(pod, f, facts)?;
                out.insert(
                    payload_path(&it.path)?,
                    Entry::file(val, it.mode.or(d.default_mode).unwrap_or(0o644)),
                );
            }
        }
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644);
        for src in p.sources.iter().flatten() {
            if let Some(s) = &src.secret {
                let optional = s.optional.unwrap_or(false);
                match fetch_secret(client, ns, &s.name).await? {
                    Some(data) => add_keyed(
                        &mut out,
                        &data,
                        s.items.as_deref(),
                        mode,
                        optional,
                        &format!("secret {:?}", s.name),
                    )?,
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "projected volume {:?}: secret {:?} not found",
                            v.name, s.name
                        ));
                    }
                }
            }
            if let Some(c) = &src.config_map {
                let optional = c.optional.unwrap_or(false);
                match fetch_config_map(client, ns, &c.name).await? {
                    Some(data) => add_keyed(
                        &mut out,
                        &data,
                        c.items.as_deref(),
                        mode,
                        optional,
                        &format!("configmap {:?}", c.name),
                    )?,
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "projected volume {:?}: configmap {:?} not found",
                            v.name, c.name
                        ));
                    }
                }
            }
            if let Some(d) = &src.downward_api {
                for it in d.items.iter().flatten() {
                    if let Some(f) = &it.field_ref {
                        let val = field_ref(pod, f, facts)?;
                        out.insert(
                            payload_path(&it.path)?,
                            Entry::file(val, it.mode.unwrap_or(mode)),
                        );
                    }
                }
            }
            if let Some(t) = &src.service_account_token {
                let path = payload_path(&t.path)?;
                let file = token_dir.join(&path);
                out.insert(path, Entry::Link(file.clone()));
                tokens.push(TokenTarget {
                    path: file,
                    audiences: t
                        .audience
                        .clone()
                        .into_iter()
                        .filter(|a| !a.is_empty())
                        .collect(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600).max(600),
                });
            }
        }
    }
    Ok((out, tokens))
}

/// Writes a payload on the blocking pool; `create` makes the volume directory first
/// (at pod start only: a resync must not re-create a directory removed with the pod).
/// Returns whether a new version was written, and the payload.
async fn write_blocking(
    dir: PathBuf,
    payload: Payload,
    create: bool,
) -> Result<(bool, Payload), String> {
    tokio::task::spawn_blocking(move || {
        if create {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        atomic_writer::write(&dir, &payload).map(|changed| (changed, payload))
    })
    .await
    .map_err(|e| format!("volume write task: {e}"))?
}

/// A secret, configMap, downwardAPI or projected volume [`resync_loop`] keeps current.
#[derive(Debug, Clone)]
pub struct SyncedVolume {
    volume: Volume,
    dir: PathBuf,
    token_dir: PathBuf,
    /// What the directory holds (as last written).
    current: Payload,
    /// The last resync error, reported once at warn level.
    error: Option<String>,
}

impl SyncedVolume {
    /// The volume's name.
    pub fn name(&self) -> &str {
        &self.volume.name
    }

    /// The volume's host directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// What [`prepare`] made of a pod's volumes.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Volume name → host directory.
    pub dirs: HashMap<String, PathBuf>,
    /// Token files projected volumes want (kept fresh by [`crate::token`]).
    pub tokens: Vec<TokenTarget>,
    /// The volumes to resync.
    pub synced: Vec<SyncedVolume>,
}

/// Prepares every volume of the pod: host directories, secret/configMap/downwardAPI/
/// projected contents (written in the AtomicWriter layout), and the token files
/// projected volumes want.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    facts: &PodFacts,
) -> Result<Prepared, String> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let mut out = Prepared::default();
    let vol_root = pod_dir.join("volumes");
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let dir = vol_root.join(safe_relative(&v.name)?);
        if let Some(pvc) = &v.persistent_volume_claim {
            out.dirs
                .insert(v.name.clone(), pvc_dir(client, &ns, &pvc.claim_name).await?);
            continue;
        }
        if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
                std::fs::create_dir_all(&p)
                    .map_err(|e| format!("creating {}: {e}", p.display()))?;
            }
            out.dirs.insert(v.name.clone(), p);
            continue;
        }
        if is_synced(v) {
            let token_dir = pod_dir
                .join("projected-tokens")
                .join(safe_relative(&v.name)?);
            let (payload, tokens) = build_payload(client, pod, facts, v, &token_dir).await?;
            let (_, current) = write_blocking(dir.clone(), payload, true)
                .await
                .map_err(|e| format!("volume {:?}: {e}", v.name))?;
            out.tokens.extend(tokens);
            out.synced.push(SyncedVolume {
                volume: v.clone(),
                dir: dir.clone(),
                token_dir,
                current,
                error: None,
            });
        } else {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            if v.empty_dir.is_none() {
                tracing::warn!(volume = %v.name, "unsupported volume type: using an empty directory");
            }
        }
        out.dirs.insert(v.name.clone(), dir);
    }
    Ok(out)
}

/// Re-reads one volume's sources and swaps in a new version if they changed. Any
/// failure leaves the directory as it is. Returns true if `stopped` resolved.
async fn resync_one(
    client: &Client,
    pod: &Pod,
    facts: &PodFacts,
    label: &str,
    v: &mut SyncedVolume,
    stopped: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    let built = tokio::select! {
        r = build_payload(client, pod, facts, &v.volume, &v.token_dir) => r,
        _ = stopped => return true,
    };
    let result =
        match built {
            Ok((payload, _)) if payload == v.current => Ok(()),
            // Not raced against the stop: the write (short) completes before the task
            // ends, so nothing is written into the pod's directory after its removal.
            Ok((payload, _)) => write_blocking(v.dir.clone(), payload, false).await.map(
                |(changed, payload)| {
                    if changed {
                        tracing::info!(pod = %label, volume = %v.name(), "volume contents updated");
                    }
                    v.current = payload;
                },
            ),
            Err(e) => Err(e),
        };
    match result {
        Ok(()) => {
            if v.error.take().is_some() {
                tracing::info!(pod = %label, volume = %v.name(), "volume resync works again");
            }
        }
        Err(e) => {
            if v.error.as_ref() != Some(&e) {
                tracing::warn!(pod = %label, volume = %v.name(), error = %e, "volume not resynced; its current contents stay");
            } else {
                tracing::debug!(pod = %label, volume = %v.name(), error = %e, "volume not resynced; its current contents stay");
            }
            v.error = Some(e);
        }
    }
    false
}

/// Keeps the pod's secret/configMap/downwardAPI/projected volumes current: every
/// `period`, each volume's sources are read again (each API read bounded by a
/// timeout) and a changed content is swapped in atomically (writes on the blocking
/// pool). Returns when `stopped` resolves (a write in progress completes first) or
/// the pod is gone from `pod_rx`.
pub async fn resync_loop(
    client: Client,
    pod_rx: watch::Receiver<Option<Pod>>,
    facts: PodFacts,
    mut volumes: Vec<SyncedVolume>,
    period: Duration,
    stopped: impl Future<Output = ()>,
) {
    if volumes.is_empty() {
        return;
    }
    let mut stopped = std::pin::pin!(stopped);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        let Some(pod) = pod_rx.borrow().clone() else {
            return;
        };
        let label = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        for v in &mut volumes {
            if resync_one(&client, &pod, &facts, &label, v, &mut stopped).await {
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mounts() -> Vec<Mount> {
        vec![
            Mount {
                volume: "data".into(),
                mount_path: "/data".into(),
                host_path: "/s/volumes/pvc-1".into(),
            },
            Mount {
                volume: "deep".into(),
                mount_path: "/data/deep/".into(),
                host_path: "/s/pods/p/volumes/deep".into(),
            },
        ]
    }

    #[test]
    fn substitution_rule() {
        let m = mounts();
        assert_eq!(substitute("/data", &m), "/s/volumes/pvc-1");
        assert_eq!(substitute("/data/x.db", &m), "/s/volumes/pvc-1/x.db");
        assert_eq!(substitute("/database", &m), "/database");
        assert_eq!(substitute("/data/deep/k", &m), "/s/pods/p/volumes/deep/k");
        assert_eq!(
            substitute("--data-dir=/data", &m),
            "--data-dir=/s/volumes/pvc-1"
        );
        assert_eq!(substitute("--x=/other", &m), "--x=/other");
        assert_eq!(substitute("hello", &m), "hello");
        assert_eq!(
            substitute("echo hi > /data/x; cat '/data/deep/y' http://h/data", &m),
            "echo hi > /s/volumes/pvc-1/x; cat '/s/pods/p/volumes/deep/y' http://h/data"
        );
        assert_eq!(
            substitute("PATH=/bin:/data:/usr", &m),
            "PATH=/bin:/s/volumes/pvc-1:/usr"
        );
        // Replaced text is not rewritten again even if it contains another mountPath.
        let nested = vec![
            Mount {
                volume: "a".into(),
                mount_path: "/a".into(),
                host_path: "/b/x".into(),
            },
            Mount {
                volume: "b".into(),
                mount_path: "/b".into(),
                host_path: "/c".into(),
            },
        ];
        assert_eq!(substitute("/a /b", &nested), "/b/x /c");
    }

    fn keyed_payload(
        data: &BTreeMap<String, Vec<u8>>,
        items: Option<&[KeyToPath]>,
        mode: i32,
        optional: bool,
    ) -> Result<Payload, String> {
        let mut p = Payload::new();
        add_keyed(&mut p, data, items, mode, optional, "cm").map(|()| p)
    }

    #[test]
    fn keyed_files_items_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into();
        let all = keyed_payload(&data, None, 0o600, false).unwrap();
        atomic_writer::write(dir.path(), &all).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"1");
        assert_eq!(
            std::fs::read_link(dir.path().join("b")).unwrap(),
            Path::new("..data/b")
        );
        let mode = std::fs::metadata(dir.path().join("b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        let dir2 = tempfile::tempdir().unwrap();
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "sub/bee.txt".into(),
            mode: Some(0o640),
        }];
        let some = keyed_payload(&data, Some(&items), 0o644, false).unwrap();
        atomic_writer::write(dir2.path(), &some).unwrap();
        assert!(std::fs::symlink_metadata(dir2.path().join("a")).is_err());
        assert_eq!(
            std::fs::read(dir2.path().join("sub/bee.txt")).unwrap(),
            b"2"
        );
        let mode = std::fs::metadata(dir2.path().join("sub/bee.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640);
        let missing = vec![KeyToPath {
            key: "zz".into(),
            path: "zz".into(),
            mode: None,
        }];
        assert!(keyed_payload(&data, Some(&missing), 0o644, false).is_err());
        assert_eq!(
            keyed_payload(&data, Some(&missing), 0o644, true).unwrap(),
            Payload::new()
        );
        let evil = vec![KeyToPath {
            key: "a".into(),
            path: "../x".into(),
            mode: None,
        }];
        assert!(keyed_payload(&data, Some(&evil), 0o644, false).is_err());
    }

    fn labelled_pod(team: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"team": team}},
            "spec": {"containers": [{"name": "c"}], "volumes": [
                {"name": "info", "downwardAPI": {"defaultMode": 0o640, "items": [
                    {"path": "labels/team", "fieldRef": {"fieldPath": "metadata.labels['team']"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o600}
                ]}},
                {"name": "scratch", "emptyDir": {}}
            ]}
        }))
        .unwrap()
    }

    /// Waits (bounded) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "timed out waiting for {what}");
    }

    #[tokio::test]
    async fn prepare_and_resync_follow_the_pod_until_stopped() {
        use std::os::unix::fs::PermissionsExt;
        // Only a downwardAPI volume: no API server needed.
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let d = tempfile::tempdir().unwrap();
        let facts = PodFacts {
            pod_ip: "10.213.1.1".into(),
            host_ip: "10.213.0.1".into(),
        };
        let pod = labelled_pod("red");
        let prepared = prepare(&client, &pod, d.path(), &facts).await.unwrap();
        let info = prepared.dirs["info"].clone();
        assert_eq!(info, d.path().join("volumes/info"));
        assert!(prepared.dirs["scratch"].is_dir());
        assert!(prepared.tokens.is_empty());
        assert_eq!(prepared.synced.len(), 1);
        assert_eq!(prepared.synced[0].name(), "info");
        assert_eq!(
            std::fs::read_to_string(info.join("labels/team")).unwrap(),
            "red"
        );
        assert_eq!(
            std::fs::read_link(info.join("labels")).unwrap(),
            Path::new("..data/labels")
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&info.join("labels/team")), 0o640);
        assert_eq!(mode(&info.join("name")), 0o600);
        let first = atomic_writer::current_version(&info).unwrap();

        let (pod_tx, pod_rx) = watch::channel(Some(pod));
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(resync_loop(
            client,
            pod_rx,
            facts,
            prepared.synced,
            Duration::from_millis(20),
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        pod_tx.send_replace(Some(labelled_pod("blue")));
        // The write is complete once the previous version is gone.
        until("the new label in the volume", || {
            std::fs::read_to_string(info.join("labels/team")).is_ok_and(|s| s == "blue")
                && !info.join(&first).exists()
        })
        .await;
        let second = atomic_writer::current_version(&info).unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read_to_string(info.join("name")).unwrap(), "p");
        assert_eq!(mode(&info.join("labels/team")), 0o640);

        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the resync task ends on stop")
            .unwrap();
    }

    #[test]
    fn root_links_and_subpaths() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "volumeMounts": [{"name": "v", "mountPath": "/var/lib/app", "subPath": "s1"}]
        }))
        .unwrap();
        let dirs: HashMap<String, PathBuf> = [("v".to_string(), vol.clone())].into();
        let m = container_mounts(&c, &dirs).unwrap();
        assert_eq!(m[0].host_path, vol.join("s1"));
        assert!(vol.join("s1").is_dir());
        let root = dir.path().join("root");
        build_root(&root, &m).unwrap();
        std::fs::write(root.join("var/lib/app/f"), b"x").unwrap();
        assert_eq!(std::fs::read(vol.join("s1/f")).unwrap(), b"x");
        build_root(&root, &m).unwrap();
        let bad: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]
        }))
        .unwrap();
        assert!(container_mounts(&bad, &dirs).is_err());
    }
}
