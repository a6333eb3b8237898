//! Where things live in a cluster's archive, `<bucket>/<path>/<cluster id>/`:
//!
//! - `wal/<first seq>-<last seq>-<term>-<sha256>.jsonl.gz`: a journal segment (the
//!   entries first..=last, gzip'd JSON lines; `term` is the primary's term when it
//!   archived the segment; `sha256` of the compressed bytes, checked on every read).
//!   Numbers are zero-padded to 20 digits so names sort by seq.
//! - `timeline/<term>.json`: a primary's term and the first seq it wrote
//!   ([`TimelineRecord`]); a restore keeps an entry only if its term is the one the
//!   timeline assigns to its seq, so a stale primary's tail can never be replayed.
//! - `blobs/<sha256>`: binaries, content-addressed, each uploaded once.
//! - `base/<id>/content.db.gz` and `base/<id>/manifest.json` (written last: a base
//!   backup without a manifest is incomplete and ignored).
//! - `archive-status.json` ([`ArchiveMark`]): how far the archive is known complete.

use serde::{Deserialize, Serialize};

pub const WAL: &str = "wal";
pub const TIMELINE: &str = "timeline";
pub const BLOBS: &str = "blobs";
pub const BASE: &str = "base";
pub const MARK: &str = "archive-status.json";
pub const MANIFEST: &str = "manifest.json";
pub const CONTENT: &str = "content.db.gz";

/// A segment's name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentName {
    pub first: u64,
    pub last: u64,
    pub term: u64,
    pub sha256: String,
}

impl SegmentName {
    /// The file name inside `wal/`.
    pub fn file_name(&self) -> String {
        format!(
            "{:020}-{:020}-{:020}-{}.jsonl.gz",
            self.first, self.last, self.term, self.sha256
        )
    }

    /// Parses a file name made by [`SegmentName::file_name`]; anything else is None.
    pub fn parse(file: &str) -> Option<SegmentName> {
        let stem = file.strip_suffix(".jsonl.gz")?;
        let mut parts = stem.splitn(4, '-');
        let first = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        let term = parts.next()?.parse().ok()?;
        let sha256 = parts.next()?.to_string();
        let hex = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        (hex && first <= last).then_some(SegmentName {
            first,
            last,
            term,
            sha256,
        })
    }
}

/// `timeline/<term>.json`: term `term` began at `first_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineRecord {
    pub term: u64,
    pub first_seq: u64,
}

pub fn timeline_file(term: u64) -> String {
    format!("{term:020}.json")
}

/// `archive-status.json`: every entry up to `archived_seq` was archived, and at
/// `as_of_ms` the primary's journal ended there (nothing newer existed), so a
/// point-in-time target up to `as_of_ms` is covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveMark {
    pub archived_seq: u64,
    pub as_of_ms: i64,
}

/// `base/<id>/manifest.json`.
pub type Manifest = studio_crds::node_api::BaseBackupStatus;

/// A base backup id is a single path segment of safe characters.
pub fn valid_backup_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Which term the timeline assigns to `seq` (the newest term that began at or
/// before it); `records` in any order. None before the first record.
pub fn term_for(records: &[TimelineRecord], seq: u64) -> Option<u64> {
    records
        .iter()
        .filter(|r| r.first_seq <= seq)
        .map(|r| r.term)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_by_seq() {
        let sha = "ab".repeat(32);
        let a = SegmentName {
            first: 9,
            last: 20,
            term: 3,
            sha256: sha.clone(),
        };
        let b = SegmentName {
            first: 21,
            last: 100,
            term: 3,
            sha256: sha.clone(),
        };
        assert_eq!(SegmentName::parse(&a.file_name()), Some(a.clone()));
        assert!(a.file_name() < b.file_name());
        assert_eq!(SegmentName::parse("junk.jsonl.gz"), None);
        assert_eq!(SegmentName::parse(&a.file_name().replace(&sha, "zz")), None);
        let backwards = format!("{:020}-{:020}-{:020}-{sha}.jsonl.gz", 5, 4, 1);
        assert_eq!(SegmentName::parse(&backwards), None);
    }

    #[test]
    fn the_timeline_gives_each_seq_the_newest_term_begun_before_it() {
        let t = [
            TimelineRecord {
                term: 2,
                first_seq: 1,
            },
            TimelineRecord {
                term: 5,
                first_seq: 40,
            },
            TimelineRecord {
                term: 4,
                first_seq: 30,
            },
        ];
        assert_eq!(term_for(&t, 0), None);
        assert_eq!(term_for(&t, 29), Some(2));
        assert_eq!(term_for(&t, 30), Some(4));
        assert_eq!(term_for(&t, 39), Some(4));
        assert_eq!(term_for(&t, 1000), Some(5));
    }

    #[test]
    fn backup_ids_are_one_safe_path_segment() {
        assert!(valid_backup_id("nightly-20261130.1"));
        assert!(!valid_backup_id(""));
        assert!(!valid_backup_id("../x"));
        assert!(!valid_backup_id("a/b"));
        assert!(!valid_backup_id(".hidden"));
    }
}
