//! Journal and content types. The JSON encoding of [`JournalEntry`] is the wire format
//! of the replication stream and the storage format of the journal table.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A point in the journal: the last entry's sequence number and term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Position {
    pub seq: u64,
    pub term: u64,
}

impl Position {
    /// Raft's "at least as up to date": later term wins, then higher seq.
    pub fn at_least(&self, other: &Position) -> bool {
        (self.term, self.seq) >= (other.term, other.seq)
    }
}

/// One committed write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: u64,
    pub term: u64,
    /// Unix time in milliseconds, taken by the primary that wrote the entry.
    pub time: i64,
    pub op: Op,
}

impl JournalEntry {
    pub fn position(&self) -> Position {
        Position {
            seq: self.seq,
            term: self.term,
        }
    }

    /// Decodes an entry from its JSON encoding (pure; fuzzed by `node/fuzz`).
    pub fn decode(bytes: &[u8]) -> Result<JournalEntry, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The sha256 of a binary this entry needs on disk before it may apply.
    pub fn required_blob(&self) -> Option<&str> {
        match &self.op {
            Op::RegisterBinary { sha256, .. } => Some(sha256),
            _ => None,
        }
    }
}

/// Every content mutation. All but `RegisterBinary` and `TermStart` act on the
/// `authoring` workspace, except publish/unpublish, which write `live`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    /// Create or replace the item at `path` (authoring). `expected_version`: `Some(0)`
    /// means "must not exist", `Some(n)` "must be at version n".
    Put {
        path: String,
        #[serde(rename = "type")]
        item_type: String,
        properties: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_version: Option<u64>,
        #[serde(default)]
        author: String,
    },
    /// Delete the item (and, with `recursive`, everything below it) from authoring.
    Delete {
        path: String,
        #[serde(default)]
        recursive: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_version: Option<u64>,
        #[serde(default)]
        author: String,
    },
    /// Move/rename an item and its subtree (authoring).
    Move {
        from: String,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_version: Option<u64>,
        #[serde(default)]
        author: String,
    },
    /// Copy an item (or subtree) from authoring to live.
    Publish {
        path: String,
        #[serde(default)]
        recursive: bool,
        #[serde(default)]
        author: String,
    },
    /// Remove an item (or subtree) from live.
    Unpublish {
        path: String,
        #[serde(default)]
        recursive: bool,
        #[serde(default)]
        author: String,
    },
    /// Make an old version the new current version of an item (authoring).
    Restore {
        path: String,
        version: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_version: Option<u64>,
        #[serde(default)]
        author: String,
    },
    /// Record that the binary `sha256` (of `size` bytes) is stored; a replica fetches
    /// the file before applying this entry.
    RegisterBinary { sha256: String, size: u64 },
    /// Written by a new primary at the start of its term; changes no content.
    TermStart {
        #[serde(default)]
        node: String,
    },
}

/// A content workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workspace {
    Authoring,
    Live,
}

impl Workspace {
    pub fn as_str(&self) -> &'static str {
        match self {
            Workspace::Authoring => "authoring",
            Workspace::Live => "live",
        }
    }

    pub fn parse(s: &str) -> Option<Workspace> {
        match s {
            "authoring" => Some(Workspace::Authoring),
            "live" => Some(Workspace::Live),
            _ => None,
        }
    }
}

/// A content item as stored in one workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub path: String,
    pub workspace: Workspace,
    #[serde(rename = "type")]
    pub item_type: String,
    pub properties: Value,
    pub version: u64,
    /// Unix ms.
    pub created: i64,
    /// Unix ms.
    pub modified: i64,
    pub author: String,
}

/// One entry of an item's version history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    pub path: String,
    #[serde(rename = "type")]
    pub item_type: String,
    pub properties: Value,
    /// Unix ms.
    pub time: i64,
    pub author: String,
    /// The journal entry that created this version.
    pub seq: u64,
}

/// First sequence number of a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermStart {
    pub term: u64,
    pub first_seq: u64,
}

/// The term of `seq` in a term history (0 for seq 0 or before the first term).
pub fn term_in(hist: &[TermStart], seq: u64) -> u64 {
    if seq == 0 {
        return 0;
    }
    hist.iter()
        .filter(|t| t.first_seq <= seq)
        .map(|t| t.term)
        .max()
        .unwrap_or(0)
}

/// A journal entry kept aside because the cluster's history does not contain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub id: u64,
    pub reason: String,
    /// Unix ms when it was quarantined (local clock: informational only).
    pub quarantined_at: i64,
    pub entry: JournalEntry,
}

/// What a write changed, for the API's answer.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The item after the write (put, restore, move, publish of one item).
    pub item: Option<Item>,
    /// How many items were created, changed or removed.
    pub count: u64,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub path: String,
    pub id: String,
    #[serde(rename = "type")]
    pub item_type: String,
    pub version: u64,
    pub snippet: String,
}

/// Checks a binary reference: 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Every binary referenced from properties: any object `{"$binary": "<sha256>"}`.
pub fn binary_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(s)) = map.get("$binary") {
                out.push(s.clone());
            }
            for child in map.values() {
                binary_refs(child, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                binary_refs(child, out);
            }
        }
        _ => {}
    }
}

/// The text of all string values in properties, for full-text indexing.
pub fn text_of(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(s);
        }
        Value::Object(map) => {
            for (k, child) in map {
                if k != "$binary" {
                    text_of(child, out);
                }
            }
        }
        Value::Array(items) => {
            for child in items {
                text_of(child, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn samples() -> Vec<JournalEntry> {
        let ops = vec![
            Op::Put {
                path: "/a/b".into(),
                item_type: "page".into(),
                properties: json!({"t": "x", "n": 1.5, "deep": {"f": [1, 2e300, -0.1]}}),
                expected_version: Some(3),
                author: "me".into(),
            },
            Op::Delete {
                path: "/a".into(),
                recursive: true,
                expected_version: None,
                author: String::new(),
            },
            Op::Move {
                from: "/a".into(),
                to: "/b".into(),
                expected_version: Some(1),
                author: "me".into(),
            },
            Op::Publish {
                path: "/a".into(),
                recursive: false,
                author: "me".into(),
            },
            Op::Unpublish {
                path: "/a".into(),
                recursive: true,
                author: "me".into(),
            },
            Op::Restore {
                path: "/a".into(),
                version: 2,
                expected_version: None,
                author: "me".into(),
            },
            Op::RegisterBinary {
                sha256: "ab".repeat(32),
                size: 10,
            },
            Op::TermStart { node: "n0".into() },
        ];
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| JournalEntry {
                seq: i as u64 + 1,
                term: 2,
                time: 1_700_000_000_000,
                op,
            })
            .collect()
    }

    #[test]
    fn entries_round_trip() {
        for e in samples() {
            assert_eq!(JournalEntry::decode(&e.encode()).unwrap(), e);
        }
    }

    /// The `journal_decode` fuzz target's property on mutated encodings.
    #[test]
    fn mutated_encodings_never_panic() {
        let mut x: u64 = 42;
        for e in samples() {
            let bytes = e.encode();
            for _ in 0..3_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let mut m = bytes.clone();
                match x % 3 {
                    0 => m.truncate((x >> 20) as usize % (bytes.len() + 1)),
                    1 => {
                        let i = (x >> 20) as usize % m.len();
                        m[i] = (x >> 40) as u8;
                    }
                    _ => {
                        let i = (x >> 20) as usize % m.len();
                        m.insert(i, b"{}[]\",:0\\"[(x >> 40) as usize % 9]);
                    }
                }
                if let Ok(d) = JournalEntry::decode(&m) {
                    assert_eq!(JournalEntry::decode(&d.encode()).unwrap(), d);
                }
            }
        }
    }
}
