//! Pod volumes as host directories, and how containers find them.
//!
//! There are no mount namespaces. Each volume is a host directory:
//! - `emptyDir`, `secret`, `configMap`, `projected`, `downwardAPI`:
//!   `<state-dir>/pods/<ns>_<pod>_<uid>/volumes/<volume>/` (files written from the
//!   objects, `items` and modes honoured; removed with the pod);
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
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use kube::{Api, Client};

use crate::env::{PodFacts, field_ref};
use crate::token::TokenTarget;

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

fn write_file(path: &Path, data: &[u8], mode: i32) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let tmp = path.with_extension("studio-tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    let perm = std::fs::Permissions::from_mode((mode as u32) & 0o7777);
    std::fs::set_permissions(&tmp, perm).map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))
}

/// Writes keyed data as files (all keys, or only `items` with their paths/modes).
pub fn write_keyed(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
    what: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => write_file(
                        &dir.join(safe_relative(&it.path)?),
                        v,
                        it.mode.unwrap_or(default_mode),
                    )?,
                    None if optional => {}
                    None => return Err(format!("{what} has no key {:?}", it.key)),
                }
            }
        }
        _ => {
            for (k, v) in data {
                write_file(&dir.join(safe_relative(k)?), v, default_mode)?;
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
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map(|o| o.as_ref().map(secret_bytes))
        .map_err(|e| format!("getting secret {name:?}: {e}"))
}

async fn fetch_config_map(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
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

/// Prepares every volume of the pod; returns volume name → host directory, and the
/// service-account token files projected volumes want.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    facts: &PodFacts,
) -> Result<(HashMap<String, PathBuf>, Vec<TokenTarget>), String> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let mut dirs = HashMap::new();
    let mut tokens = Vec::new();
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
            dirs.insert(v.name.clone(), pvc_dir(client, &ns, &pvc.claim_name).await?);
            continue;
        }
        if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
                std::fs::create_dir_all(&p)
                    .map_err(|e| format!("creating {}: {e}", p.display()))?;
            }
            dirs.insert(v.name.clone(), p);
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let optional = s.optional.unwrap_or(false);
            match fetch_secret(client, &ns, &name).await? {
                Some(data) => write_keyed(
                    &dir,
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
            match fetch_config_map(client, &ns, &name).await? {
                Some(data) => write_keyed(
                    &dir,
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
                    write_file(
                        &dir.join(safe_relative(&it.path)?),
                        val.as_bytes(),
                        it.mode.or(d.default_mode).unwrap_or(0o644),
                    )?;
                }
            }
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.unwrap_or(0o644);
            for src in p.sources.iter().flatten() {
                if let Some(s) = &src.secret {
                    let optional = s.optional.unwrap_or(false);
                    match fetch_secret(client, &ns, &s.name).await? {
                        Some(data) => write_keyed(
                            &dir,
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
                    match fetch_config_map(client, &ns, &c.name).await? {
                        Some(data) => write_keyed(
                            &dir,
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
                            write_file(
                                &dir.join(safe_relative(&it.path)?),
                                val.as_bytes(),
                                it.mode.unwrap_or(mode),
                            )?;
                        }
                    }
                }
                if let Some(t) = &src.service_account_token {
                    tokens.push(TokenTarget {
                        path: dir.join(safe_relative(&t.path)?),
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
        } else if v.empty_dir.is_none() {
            tracing::warn!(volume = %v.name, "unsupported volume type: using an empty directory");
        }
        dirs.insert(v.name.clone(), dir);
    }
    Ok((dirs, tokens))
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

    #[test]
    fn keyed_files_items_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let data: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into();
        write_keyed(dir.path(), &data, None, 0o600, false, "secret").unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"1");
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
        write_keyed(dir2.path(), &data, Some(&items), 0o644, false, "cm").unwrap();
        assert!(!dir2.path().join("a").exists());
        assert_eq!(
            std::fs::read(dir2.path().join("sub/bee.txt")).unwrap(),
            b"2"
        );
        let missing = vec![KeyToPath {
            key: "zz".into(),
            path: "zz".into(),
            mode: None,
        }];
        assert!(write_keyed(dir2.path(), &data, Some(&missing), 0o644, false, "cm").is_err());
        assert!(write_keyed(dir2.path(), &data, Some(&missing), 0o644, true, "cm").is_ok());
        let evil = vec![KeyToPath {
            key: "a".into(),
            path: "../x".into(),
            mode: None,
        }];
        assert!(write_keyed(dir2.path(), &data, Some(&evil), 0o644, false, "cm").is_err());
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
