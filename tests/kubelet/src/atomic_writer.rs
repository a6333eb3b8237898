//! The real kubelet's AtomicWriter layout, for volumes projected from API objects
//! (`secret`, `configMap`, `downwardAPI`, `projected`):
//!
//! ```text
//! <volume>/..2026_01_02_15_04_05.123456789/tls.crt   one complete directory per version
//! <volume>/..data -> ..2026_01_02_15_04_05.123456789  the current version
//! <volume>/tls.crt -> ..data/tls.crt                  what programs open
//! <volume>/sub -> ..data/sub                           (one link per top-level name)
//! ```
//!
//! An update writes a whole new timestamped directory, points a temporary symlink at
//! it and renames that over `..data` (atomic), then adds or removes the user-visible
//! links and removes the previous version. Whoever opens `tls.crt` gets the complete
//! old file or the complete new one, never a mix. Two files opened one after the other
//! may come from two versions (as with the real kubelet): a reader that needs a
//! consistent set checks it (e.g. certificate and key match) and reads again later.
//!
//! The writer owns the volume directory: names starting with `..` are its own, and so
//! are links into `..data`. Anything else (say a `subPath` directory a container mount
//! created) is left alone, except on the first write into a directory without
//! `..data`, which replaces whatever an older layout (plain files) left there.
//!
//! Everything here is blocking file I/O: call it from `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The symlink naming the current version.
pub const DATA_DIR: &str = "..data";
/// The temporary symlink renamed over [`DATA_DIR`].
const DATA_TMP: &str = "..data_tmp";
/// The temporary symlink renamed over a user-visible name.
const LINK_TMP: &str = "..link_tmp";
/// Mode of the version directory and the directories inside it.
const DIR_MODE: u32 = 0o755;

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file with these bytes and permission bits.
    File { data: Vec<u8>, mode: u32 },
    /// A symlink (e.g. to a ServiceAccount token file kept fresh elsewhere).
    Link(PathBuf),
}

impl Entry {
    /// A file with a mode as the API gives it (`defaultMode`, `items[].mode`).
    pub fn file(data: impl Into<Vec<u8>>, mode: i32) -> Entry {
        Entry::File {
            data: data.into(),
            mode: (mode as u32) & 0o7777,
        }
    }
}

/// A volume's content: relative path (`/`-separated) → entry.
pub type Payload = BTreeMap<String, Entry>;

/// Checks the paths (relative, no `.`/`..`/empty segments, not starting with `..`,
/// no path inside another one's file); returns the top-level names.
pub fn validate(payload: &Payload) -> Result<BTreeSet<String>, String> {
    let mut top = BTreeSet::new();
    for path in payload.keys() {
        let segs: Vec<&str> = path.split('/').collect();
        if segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
            return Err(format!("path {path:?} must be relative without '..'"));
        }
        let first = segs[0];
        if first.starts_with("..") {
            return Err(format!("path {path:?} must not start with '..'"));
        }
        for i in 1..segs.len() {
            let parent = segs[..i].join("/");
            if payload.contains_key(&parent) {
                return Err(format!("path {path:?} is inside the file {parent:?}"));
            }
        }
        top.insert(first.to_string());
    }
    Ok(top)
}

/// The version `..data` names, if it is a link of ours.
pub fn current_version(dir: &Path) -> Option<String> {
    let target = std::fs::read_link(dir.join(DATA_DIR)).ok()?;
    let name = target.to_str()?;
    (name.starts_with("..") && name.len() > 2 && !name.contains('/') && name != DATA_DIR)
        .then(|| name.to_string())
}

/// Reads a version directory back (files, modes, symlinks).
pub fn read_tree(root: &Path) -> std::io::Result<Payload> {
    let mut out = Payload::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| std::io::Error::other(format!("non-UTF-8 name {n:?}")))?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = e.path();
            let md = std::fs::symlink_metadata(&path)?;
            if md.file_type().is_symlink() {
                out.insert(rel, Entry::Link(std::fs::read_link(&path)?));
            } else if md.is_dir() {
                stack.push((path, rel));
            } else {
                out.insert(
                    rel,
                    Entry::File {
                        data: std::fs::read(&path)?,
                        mode: md.permissions().mode() & 0o7777,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Makes a directory with [`DIR_MODE`] whatever the umask; false if it existed.
fn make_dir(path: &Path) -> std::io::Result<bool> {
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => {
            std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates a fresh `..<UTC timestamp>` directory in `dir`; returns its name.
fn new_version_dir(dir: &Path) -> Result<String, String> {
    let stamp = chrono::Utc::now()
        .format("..%Y_%m_%d_%H_%M_%S.%9f")
        .to_string();
    for n in 0..1000u32 {
        let name = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}_{n}")
        };
        let path = dir.join(&name);
        match make_dir(&path) {
            Ok(true) => return Ok(name),
            Ok(false) => continue,
            Err(e) => return Err(format!("creating {}: {e}", path.display())),
        }
    }
    Err(format!(
        "no free version directory name in {}",
        dir.display()
    ))
}

/// Writes the payload into an empty version directory. Parents are made only inside
/// `root` (never `root` itself: a volume removed meanwhile is not re-created).
fn write_tree(root: &Path, payload: &Payload) -> std::io::Result<()> {
    for (rel, entry) in payload {
        let segs: Vec<&str> = rel.split('/').collect();
        let mut parent = root.to_path_buf();
        for s in &segs[..segs.len() - 1] {
            parent.push(s);
            make_dir(&parent)?;
        }
        let path = root.join(rel);
        match entry {
            Entry::File { data, mode } => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                f.write_all(data)?;
                f.set_permissions(Permissions::from_mode(*mode))?;
            }
            Entry::Link(target) => std::os::unix::fs::symlink(target, &path)?,
        }
    }
    Ok(())
}

/// Removes a file, symlink or directory tree (a symlink itself, never its target).
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Atomically replaces whatever is at `path` by a symlink to `target`, using the
/// temporary name `tmp` in the same directory. A directory in the way (older layout)
/// is removed first: rename cannot replace it.
fn swap_link(dir: &Path, tmp: &str, target: &Path, path: &Path) -> Result<(), String> {
    let tmp = dir.join(tmp);
    remove_any(&tmp).map_err(|e| format!("removing {}: {e}", tmp.display()))?;
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| format!("linking {} -> {}: {e}", tmp.display(), target.display()))?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(path).map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}: {e}", tmp.display(), path.display())
    })
}

/// Makes `dir` (which must exist) hold exactly `payload`, in the layout of the module
/// docs. Returns whether a new version was written (false: the content was already
/// there; missing links and leftovers are repaired either way). On error the previous
/// version stays in place.
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, String> {
    let top = validate(payload)?;
    match std::fs::metadata(dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) => return Err(format!("volume directory {}: {e}", dir.display())),
    }
    let old = current_version(dir);
    let unchanged = old
        .as_ref()
        .is_some_and(|v| read_tree(&dir.join(v)).is_ok_and(|t| &t == payload));
    let version = match (&old, unchanged) {
        (Some(v), true) => v.clone(),
        _ => {
            let name = new_version_dir(dir)?;
            let path = dir.join(&name);
            let swapped = write_tree(&path, payload)
                .map_err(|e| format!("writing {}: {e}", path.display()))
                .and_then(|()| swap_link(dir, DATA_TMP, Path::new(&name), &dir.join(DATA_DIR)));
            if let Err(e) = swapped {
                let _ = std::fs::remove_dir_all(&path);
                return Err(e);
            }
            name
        }
    };
    for name in &top {
        let want = Path::new(DATA_DIR).join(name);
        let path = dir.join(name);
        if std::fs::read_link(&path).is_ok_and(|t| t == want) {
            continue;
        }
        swap_link(dir, LINK_TMP, &want, &path)?;
    }
    remove_stale(dir, &version, &top, old.is_none());
    Ok(!unchanged)
}

/// Removes old versions, temporary links and links to names no longer in the
/// payload; with `legacy` (no `..data` before this write) also whatever else is not
/// in the payload. Failures are logged: the new version is already in place.
fn remove_stale(dir: &Path, version: &str, top: &BTreeSet<String>, legacy: bool) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "listing volume directory");
            return;
        }
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name == DATA_DIR || name == version || top.contains(name) {
            continue;
        }
        let path = e.path();
        let stale = name.starts_with("..")
            || legacy
            || std::fs::read_link(&path).is_ok_and(|t| t.starts_with(DATA_DIR));
        if stale && let Err(err) = remove_any(&path) {
            tracing::warn!(path = %path.display(), error = %err, "removing stale volume entry");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn payload(entries: &[(&str, &[u8], i32)]) -> Payload {
        entries
            .iter()
            .map(|(p, d, m)| (p.to_string(), Entry::file(*d, *m)))
            .collect()
    }

    /// The `..<timestamp>` directories in `dir`.
    fn versions(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("..") && n != DATA_DIR)
            .collect();
        v.sort();
        v
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn initial_write_makes_the_kubelet_layout() {
        let d = tempfile::tempdir().unwrap();
        let p = payload(&[
            ("tls.crt", b"cert-1", 0o644),
            ("tls.key", b"key-1", 0o600),
            ("ca.crt", b"ca-1", 0o644),
        ]);
        assert!(write(d.path(), &p).unwrap());
        let v = versions(d.path());
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("..20"), "{v:?}");
        assert_eq!(current_version(d.path()).as_deref(), Some(v[0].as_str()));
        assert!(
            std::fs::symlink_metadata(d.path().join(DATA_DIR))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        for (name, data) in [
            ("tls.crt", "cert-1"),
            ("tls.key", "key-1"),
            ("ca.crt", "ca-1"),
        ] {
            let link = d.path().join(name);
            assert_eq!(
                std::fs::read_link(&link).unwrap(),
                Path::new("..data").join(name)
            );
            assert_eq!(std::fs::read_to_string(&link).unwrap(), data);
        }
        assert_eq!(mode_of(&d.path().join("tls.key")), 0o600);
        assert_eq!(mode_of(&d.path().join(&v[0])), 0o755);
        assert_eq!(read_tree(&d.path().join(&v[0])).unwrap(), p);
        // The same content again writes nothing.
        assert!(!write(d.path(), &p).unwrap());
        assert_eq!(versions(d.path()), v);
    }

    #[test]
    fn update_swaps_data_and_removes_the_old_version() {
        let d = tempfile::tempdir().unwrap();
        let v1 = payload(&[("tls.crt", b"cert-1", 0o644), ("old-key", b"x", 0o644)]);
        write(d.path(), &v1).unwrap();
        let first = current_version(d.path()).unwrap();
        let v2 = payload(&[("tls.crt", b"cert-2", 0o644), ("new-key", b"y", 0o644)]);
        assert!(write(d.path(), &v2).unwrap());
        let second = current_version(d.path()).unwrap();
        assert_ne!(first, second);
        assert_eq!(versions(d.path()), vec![second.clone()]);
        assert!(!d.path().join(&first).exists());
        assert_eq!(
            std::fs::read_to_string(d.path().join("tls.crt")).unwrap(),
            "cert-2"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("new-key")).unwrap(),
            "y"
        );
        // A key gone from the object is gone from the volume, link included.
        assert!(std::fs::symlink_metadata(d.path().join("old-key")).is_err());
        // No temporary link is left behind.
        let names: BTreeSet<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let want: BTreeSet<String> = [DATA_DIR, second.as_str(), "tls.crt", "new-key"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn nested_paths_modes_and_links() {
        let d = tempfile::tempdir().unwrap();
        let token = d.path().join("token-file");
        std::fs::write(&token, b"tok").unwrap();
        let mut p = payload(&[("sub/deeper/bee.txt", b"2", 0o640), ("a", b"1", 0o400)]);
        p.insert("sub/token".into(), Entry::Link(token.clone()));
        let vol = d.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        write(&vol, &p).unwrap();
        assert_eq!(
            std::fs::read_link(vol.join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(
            std::fs::read_to_string(vol.join("sub/deeper/bee.txt")).unwrap(),
            "2"
        );
        assert_eq!(mode_of(&vol.join("sub/deeper/bee.txt")), 0o640);
        assert_eq!(mode_of(&vol.join("a")), 0o400);
        assert_eq!(
            std::fs::read_to_string(vol.join("sub/token")).unwrap(),
            "tok"
        );
        // The link target changing (token refreshed) is no new version.
        std::fs::write(&token, b"tok2").unwrap();
        assert!(!write(&vol, &p).unwrap());
        assert_eq!(
            std::fs::read_to_string(vol.join("sub/token")).unwrap(),
            "tok2"
        );
        // A mode change alone is a new version.
        p.insert("a".into(), Entry::file(*b"1", 0o444));
        assert!(write(&vol, &p).unwrap());
        assert_eq!(mode_of(&vol.join("a")), 0o444);
    }

    #[test]
    fn invalid_payloads_are_refused_and_keep_the_current_version() {
        let d = tempfile::tempdir().unwrap();
        let good = payload(&[("a", b"1", 0o644)]);
        write(d.path(), &good).unwrap();
        let before = current_version(d.path());
        for bad in [
            payload(&[("../x", b"", 0o644)]),
            payload(&[("/abs", b"", 0o644)]),
            payload(&[("..data", b"", 0o644)]),
            payload(&[("..x/y", b"", 0o644)]),
            payload(&[("a//b", b"", 0o644)]),
            payload(&[("a/./b", b"", 0o644)]),
            payload(&[("a", b"", 0o644), ("a/b", b"", 0o644)]),
        ] {
            assert!(write(d.path(), &bad).is_err(), "{bad:?}");
        }
        assert_eq!(current_version(d.path()), before);
        assert_eq!(versions(d.path()).len(), 1);
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "1");
        assert!(write(&d.path().join("missing"), &good).is_err());
        assert!(!d.path().join("missing").exists());
    }

    #[test]
    fn older_plain_file_layout_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("tls.crt"), b"old").unwrap();
        std::fs::create_dir_all(d.path().join("sub/x")).unwrap();
        std::fs::write(d.path().join("sub/x/f"), b"old").unwrap();
        std::fs::write(d.path().join("token"), b"stale").unwrap();
        let p = payload(&[("tls.crt", b"new", 0o644), ("sub/f", b"new", 0o644)]);
        assert!(write(d.path(), &p).unwrap());
        assert_eq!(
            std::fs::read_link(d.path().join("tls.crt")).unwrap(),
            Path::new("..data/tls.crt")
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("tls.crt")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("sub/f")).unwrap(),
            "new"
        );
        assert!(!d.path().join("sub/x").exists());
        assert!(!d.path().join("token").exists());
        // Once in the new layout, foreign entries (a subPath directory) are kept.
        std::fs::create_dir(d.path().join("foreign")).unwrap();
        write(d.path(), &payload(&[("tls.crt", b"newer", 0o644)])).unwrap();
        assert!(d.path().join("foreign").is_dir());
        assert!(std::fs::symlink_metadata(d.path().join("sub")).is_err());
    }

    #[test]
    fn readers_never_see_a_partial_file() {
        const LEN: usize = 256 * 1024;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let version = |i: u8| {
            payload(&[
                ("tls.crt", &vec![i; LEN], 0o644),
                ("tls.key", &vec![i; LEN / 2], 0o600),
            ])
        };
        write(&dir, &version(0)).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (dir, done) = (dir.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                // At least a few reads, and on until the writer is done.
                while !done.load(Ordering::Acquire) || reads < 10 {
                    for (name, len) in [("tls.crt", LEN), ("tls.key", LEN / 2)] {
                        // A path resolved through `..data` just before a swap may
                        // name the version being removed: not found, never partial.
                        let writing = !done.load(Ordering::Acquire);
                        let b = match std::fs::read(dir.join(name)) {
                            Ok(b) => b,
                            Err(e) if e.kind() == ErrorKind::NotFound => {
                                assert!(writing, "{name}: {e}");
                                continue;
                            }
                            Err(e) => panic!("{name}: {e}"),
                        };
                        assert_eq!(b.len(), len, "{name}: partial file");
                        assert!(b.iter().all(|x| *x == b[0]), "{name}: mixed versions");
                        reads += 1;
                    }
                }
                reads
            })
        };
        for i in 1..=40u8 {
            assert!(write(&dir, &version(i)).unwrap());
        }
        done.store(true, Ordering::Release);
        assert!(reader.join().unwrap() >= 10);
        assert_eq!(std::fs::read(dir.join("tls.crt")).unwrap()[0], 40);
        assert_eq!(versions(&dir).len(), 1);
    }
}
