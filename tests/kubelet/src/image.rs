//! Image → local binary mapping and command/args resolution.
//!
//! Rule: the binary is the last path segment of the image *repository*, with the tag
//! and digest ignored, looked up in `--bin-dir`:
//! `ghcr.io/x/studio-node:v2` → `$bin_dir/studio-node`,
//! `localhost:5000/studio-testapp@sha256:…` → `$bin_dir/studio-testapp`.
//!
//! `command[0]` replaces the image's binary only if it is an absolute path that
//! exists on this machine, or if its file name exists in `--bin-dir`; otherwise it is
//! taken to be the image's own entrypoint path (e.g. `/usr/local/bin/studio-node`) and
//! dropped, and the image's binary runs with `command[1..] ++ args`.

use std::path::{Path, PathBuf};

/// The reason reported (container waiting) when an image maps to no local binary.
pub const REASON_UNMAPPED: &str = "ErrImageNeverPull";

/// Name of the binary an image maps to (last repository path segment, no tag/digest).
pub fn image_binary_name(image: &str) -> Option<String> {
    let image = image.trim();
    let without_digest = image.split('@').next().unwrap_or("");
    let last = without_digest.rsplit('/').next().unwrap_or("");
    let name = last.split(':').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." {
        None
    } else {
        Some(name.to_string())
    }
}

/// The program and argument vector to run for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<String>,
}

/// Resolves the program for a container. `exists` tells whether a path is an
/// existing file (injected for tests). Errors carry a human message naming the rule.
pub fn resolve_program(
    bin_dir: &Path,
    image: &str,
    command: &[String],
    args: &[String],
    exists: impl Fn(&Path) -> bool,
) -> Result<Program, String> {
    if let Some((first, rest)) = command.split_first() {
        let first_path = Path::new(first);
        if first_path.is_absolute() && exists(first_path) {
            return Ok(Program {
                path: first_path.to_path_buf(),
                args: rest.iter().chain(args.iter()).cloned().collect(),
            });
        }
        if let Some(file) = first_path.file_name() {
            let candidate = bin_dir.join(file);
            if exists(&candidate) {
                return Ok(Program {
                    path: candidate,
                    args: rest.iter().chain(args.iter()).cloned().collect(),
                });
            }
        }
        let image_bin = image_path(bin_dir, image, &exists)?;
        return Ok(Program {
            path: image_bin,
            args: rest.iter().chain(args.iter()).cloned().collect(),
        });
    }
    Ok(Program {
        path: image_path(bin_dir, image, &exists)?,
        args: args.to_vec(),
    })
}

fn image_path(
    bin_dir: &Path,
    image: &str,
    exists: &impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    let rule = "rule: the last path segment of the image repository, tag/digest ignored, names a binary in --bin-dir";
    let Some(name) = image_binary_name(image) else {
        return Err(format!("image {image:?} maps to no binary name ({rule})"));
    };
    let path = bin_dir.join(&name);
    if exists(&path) {
        Ok(path)
    } else {
        Err(format!(
            "image {image:?} maps to {} which does not exist ({rule}); images are never pulled",
            path.display()
        ))
    }
}

/// A stable pseudo image ID for a binary (its path and modification time).
pub fn image_id(path: &Path) -> String {
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("studio-bin://{}@{mtime}", path.display())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn binary_names() {
        assert_eq!(
            image_binary_name("ghcr.io/x/studio-node:v2").as_deref(),
            Some("studio-node")
        );
        assert_eq!(
            image_binary_name("studio-testapp").as_deref(),
            Some("studio-testapp")
        );
        assert_eq!(
            image_binary_name("localhost:5000/a/b/studio-testapp@sha256:abc").as_deref(),
            Some("studio-testapp")
        );
        assert_eq!(
            image_binary_name("localhost:5000/studio-node:1.0@sha256:abc").as_deref(),
            Some("studio-node")
        );
        assert_eq!(image_binary_name(""), None);
        assert_eq!(image_binary_name("repo/:tag"), None);
    }

    #[test]
    fn resolve_rules() {
        let bin = Path::new("/bin-dir");
        let exists = |p: &Path| {
            p == Path::new("/bin-dir/studio-node")
                || p == Path::new("/bin-dir/helper")
                || p == Path::new("/bin/sh")
        };
        // No command: image binary with args.
        let p =
            resolve_program(bin, "ghcr.io/x/studio-node:v2", &[], &s(&["--a"]), exists).unwrap();
        assert_eq!(p.path, Path::new("/bin-dir/studio-node"));
        assert_eq!(p.args, s(&["--a"]));
        // Absolute existing command replaces the binary.
        let p = resolve_program(
            bin,
            "studio-node",
            &s(&["/bin/sh", "-c"]),
            &s(&["echo"]),
            exists,
        )
        .unwrap();
        assert_eq!(p.path, Path::new("/bin/sh"));
        assert_eq!(p.args, s(&["-c", "echo"]));
        // A command naming a bin-dir binary replaces it.
        let p = resolve_program(
            bin,
            "studio-node",
            &s(&["/usr/local/bin/helper", "x"]),
            &[],
            exists,
        )
        .unwrap();
        assert_eq!(p.path, Path::new("/bin-dir/helper"));
        assert_eq!(p.args, s(&["x"]));
        // An unknown entrypoint path is the image's own: dropped.
        let p = resolve_program(
            bin,
            "studio-node",
            &s(&["/studio-node-entry", "serve"]),
            &s(&["-v"]),
            exists,
        )
        .unwrap();
        assert_eq!(p.path, Path::new("/bin-dir/studio-node"));
        assert_eq!(p.args, s(&["serve", "-v"]));
        // Unmapped image: error names the rule.
        let e = resolve_program(bin, "nginx:1.25", &[], &[], exists).unwrap_err();
        assert!(e.contains("/bin-dir/nginx"), "{e}");
        assert!(e.contains("last path segment"), "{e}");
    }
}
