//! Content path parsing never panics, and whatever it accepts is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use studio_node::storage::path::{MAX_PATH_LEN, is_descendant, parent_of, parse_path, parse_path_or_root};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = parse_path_or_root(s);
    if let Ok(p) = parse_path(s) {
        assert_eq!(p, s);
        assert!(p.starts_with('/') && p.len() <= MAX_PATH_LEN);
        assert!(!p.contains("//") && !p.ends_with('/'));
        assert!(p.split('/').skip(1).all(|seg| seg != "." && seg != ".." && !seg.chars().any(char::is_control)));
        let parent = parent_of(&p);
        assert!(is_descendant(&p, parent));
        assert!(parent == "/" || parse_path(parent).is_ok());
    }
});
