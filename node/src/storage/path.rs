//! Content path parsing: a pure function, fuzzed by `node/fuzz`.
//!
//! A content path is absolute (`/sites/acme/pages/home`), made of non-empty segments
//! that are not `.` or `..`, contain no control characters and no backslash, are at
//! most [`MAX_SEGMENT_LEN`] bytes, with at most [`MAX_DEPTH`] segments and at most
//! [`MAX_PATH_LEN`] bytes in all. The root `/` itself is not an item.

/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest accepted segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 255;
/// Deepest accepted path, in segments.
pub const MAX_DEPTH: usize = 32;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must not be empty or the root")]
    Empty,
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path is deeper than {MAX_DEPTH} segments")]
    TooDeep,
    #[error("path has an empty segment (double or trailing '/')")]
    EmptySegment,
    #[error("path segment '.' or '..' is not allowed")]
    DotSegment,
    #[error("path segment is longer than {MAX_SEGMENT_LEN} bytes")]
    SegmentTooLong,
    #[error("path contains a control character or a backslash")]
    BadCharacter,
}

/// Validates `raw` and returns it as a canonical path (unchanged when valid).
pub fn parse_path(raw: &str) -> Result<String, PathError> {
    if raw.is_empty() || raw == "/" {
        return Err(PathError::Empty);
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let mut depth = 0;
    for seg in raw[1..].split('/') {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
        if seg.is_empty() {
            return Err(PathError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment);
        }
        if seg.len() > MAX_SEGMENT_LEN {
            return Err(PathError::SegmentTooLong);
        }
        if seg.chars().any(|c| c.is_control() || c == '\\') {
            return Err(PathError::BadCharacter);
        }
    }
    Ok(raw.to_string())
}

/// Parses a path that may also be the root `/` (for children listing and prefixes).
pub fn parse_path_or_root(raw: &str) -> Result<String, PathError> {
    if raw == "/" || raw.is_empty() {
        Ok("/".to_string())
    } else {
        parse_path(raw)
    }
}

/// The parent of a valid path (`/a/b` → `/a`, `/a` → `/`).
pub fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Whether `path` lies strictly below `ancestor` (`/` is everyone's ancestor).
pub fn is_descendant(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return path != "/";
    }
    path.len() > ancestor.len()
        && path.starts_with(ancestor)
        && path.as_bytes()[ancestor.len()] == b'/'
}

/// Replaces the prefix `from` of `path` (itself or a descendant) by `to`.
pub fn rebase(path: &str, from: &str, to: &str) -> String {
    format!("{to}{}", &path[from.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        assert_eq!(
            parse_path("/sites/acme/pages/home").as_deref(),
            Ok("/sites/acme/pages/home")
        );
        assert_eq!(
            parse_path("/ünïcödé/a b/x.json").as_deref(),
            Ok("/ünïcödé/a b/x.json")
        );
    }

    #[test]
    fn refuses_bad_paths() {
        assert_eq!(parse_path(""), Err(PathError::Empty));
        assert_eq!(parse_path("/"), Err(PathError::Empty));
        assert_eq!(parse_path("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(parse_path("/a//b"), Err(PathError::EmptySegment));
        assert_eq!(parse_path("/a/"), Err(PathError::EmptySegment));
        assert_eq!(parse_path("/a/../b"), Err(PathError::DotSegment));
        assert_eq!(parse_path("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(parse_path("/a\u{0}b"), Err(PathError::BadCharacter));
        assert_eq!(parse_path("/a\nb"), Err(PathError::BadCharacter));
        assert_eq!(parse_path("/a\\b"), Err(PathError::BadCharacter));
        assert_eq!(
            parse_path(&format!("/{}", "x".repeat(300))),
            Err(PathError::SegmentTooLong)
        );
        assert_eq!(
            parse_path(&"/abcdefgh".repeat(200)),
            Err(PathError::TooLong)
        );
        assert_eq!(parse_path(&"/a".repeat(40)), Err(PathError::TooDeep));
    }

    #[test]
    fn relations() {
        assert_eq!(parent_of("/a/b/c"), "/a/b");
        assert_eq!(parent_of("/a"), "/");
        assert!(is_descendant("/a/b", "/a"));
        assert!(!is_descendant("/ab", "/a"));
        assert!(!is_descendant("/a", "/a"));
        assert!(is_descendant("/a", "/"));
        assert_eq!(rebase("/a/b/c", "/a/b", "/x"), "/x/c");
    }
}

/// The fuzz target's properties on a deterministic stream of random inputs, so the
/// ordinary test suite exercises them too (`node/fuzz` explores further).
#[cfg(test)]
mod fuzz_smoke {
    use super::*;

    #[test]
    fn random_paths_never_panic_and_accepted_ones_are_canonical() {
        let alphabet: Vec<char> = "/./..ab\\\0\n\té€ /".chars().collect();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..50_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (x >> 56) as usize % 40;
            let mut s = String::new();
            for i in 0..len {
                let r = (x.rotate_left(i as u32 * 7) >> 33) as usize;
                s.push(alphabet[r % alphabet.len()]);
            }
            let _ = parse_path_or_root(&s);
            if let Ok(p) = parse_path(&s) {
                assert!(
                    p.starts_with('/') && !p.contains("//") && !p.ends_with('/'),
                    "{p:?}"
                );
                assert!(
                    p.split('/').skip(1).all(|seg| seg != "." && seg != ".."),
                    "{p:?}"
                );
                assert!(!p.chars().any(|c| c.is_control() || c == '\\'), "{p:?}");
                let parent = parent_of(&p);
                assert!(is_descendant(&p, parent));
                assert!(parent == "/" || parse_path(parent).is_ok());
            }
        }
    }
}
