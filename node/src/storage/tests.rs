use super::*;
use serde_json::json;

fn put(path: &str, title: &str) -> Op {
    Op::Put {
        path: path.into(),
        item_type: "page".into(),
        properties: json!({"title": title}),
        expected_version: None,
        author: "t".into(),
    }
}

/// A tiny deterministic generator of mixed ops over a small tree.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn path(&mut self) -> String {
        let depth = 1 + self.next() % 3;
        let mut p = String::new();
        for _ in 0..depth {
            p.push_str(&format!("/n{}", self.next() % 4));
        }
        p
    }

    fn op(&mut self, blobs: &[String]) -> Op {
        match self.next() % 10 {
            0..=3 => {
                let mut props =
                    json!({"title": format!("t{}", self.next() % 100), "n": self.next()});
                if !blobs.is_empty() && self.next().is_multiple_of(3) {
                    props["file"] = json!({"$binary": blobs[(self.next() as usize) % blobs.len()]});
                }
                Op::Put {
                    path: self.path(),
                    item_type: "page".into(),
                    properties: props,
                    expected_version: None,
                    author: "gen".into(),
                }
            }
            4 => Op::Delete {
                path: self.path(),
                recursive: self.next().is_multiple_of(2),
                expected_version: None,
                author: "gen".into(),
            },
            5 => Op::Move {
                from: self.path(),
                to: self.path(),
                expected_version: None,
                author: "gen".into(),
            },
            6 => Op::Publish {
                path: self.path(),
                recursive: self.next().is_multiple_of(2),
                author: "gen".into(),
            },
            7 => Op::Unpublish {
                path: self.path(),
                recursive: self.next().is_multiple_of(2),
                author: "gen".into(),
            },
            8 => Op::Restore {
                path: self.path(),
                version: 1 + self.next() % 3,
                expected_version: None,
                author: "gen".into(),
            },
            _ => Op::RegisterBinary {
                sha256: format!("{:064x}", self.next() % 5),
                size: 10,
            },
        }
    }
}

/// Puts a file for every binary the entries register (the generator's fake shas).
fn fake_blobs(store: &Store, entries: &[JournalEntry]) {
    for sha in entries.iter().filter_map(JournalEntry::required_blob) {
        std::fs::write(store.blob_path(sha).unwrap(), b"x").unwrap();
    }
}

/// Writes `n` successful random ops (invalid ones are refused and skipped).
fn fill(store: &Store, gen_: &mut Gen, n: usize, term: u64) -> Vec<JournalEntry> {
    let mut out = Vec::new();
    let mut blobs = Vec::new();
    while out.len() < n {
        let op = gen_.op(&blobs);
        if let Op::RegisterBinary { sha256, .. } = &op {
            blobs.push(sha256.clone());
        }
        if let Ok(e) = store.write(op, term) {
            out.push(e);
        }
    }
    out
}

#[test]
fn write_read_version_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let e = s.write(put("/a", "one"), 1).unwrap();
    assert_eq!(e.position(), Position { seq: 1, term: 1 });
    s.write(put("/a", "two"), 1).unwrap();
    let item = s.get_item(Workspace::Authoring, "/a").unwrap().unwrap();
    assert_eq!(item.version, 2);
    assert_eq!(item.properties["title"], "two");
    let err = s
        .write(
            Op::Put {
                path: "/a".into(),
                item_type: "page".into(),
                properties: json!({}),
                expected_version: Some(1),
                author: String::new(),
            },
            1,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            expected: 1,
            actual: 2,
            ..
        }
    ));
    // A refused write leaves no journal entry.
    assert_eq!(s.position().seq, 2);
    let versions = s.versions("/a").unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    s.write(
        Op::Restore {
            path: "/a".into(),
            version: 1,
            expected_version: Some(2),
            author: String::new(),
        },
        1,
    )
    .unwrap();
    assert_eq!(
        s.get_item(Workspace::Authoring, "/a")
            .unwrap()
            .unwrap()
            .properties["title"],
        "one"
    );
    assert!(matches!(
        s.write(put("/b", "x"), 0),
        Err(StoreError::StaleTerm { .. })
    ));
}

#[test]
fn subtree_move_publish_search() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for p in ["/site", "/site/a", "/site/a/x", "/site/b", "/sitemap"] {
        s.write(put(p, &format!("hello {p}")), 1).unwrap();
    }
    assert!(matches!(
        s.write(
            Op::Delete {
                path: "/site".into(),
                recursive: false,
                expected_version: None,
                author: String::new()
            },
            1
        ),
        Err(StoreError::HasChildren(_))
    ));
    s.write(
        Op::Move {
            from: "/site/a".into(),
            to: "/site/c".into(),
            expected_version: None,
            author: String::new(),
        },
        1,
    )
    .unwrap();
    let (kids, total) = s.children(Workspace::Authoring, "/site", 0, 10).unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        kids.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(),
        vec!["/site/b", "/site/c"]
    );
    assert!(
        s.get_item(Workspace::Authoring, "/site/c/x")
            .unwrap()
            .is_some()
    );
    s.write(
        Op::Publish {
            path: "/site".into(),
            recursive: true,
            author: String::new(),
        },
        1,
    )
    .unwrap();
    let (live, _) = s.children(Workspace::Live, "/site", 0, 10).unwrap();
    assert_eq!(live.len(), 2);
    assert!(s.get_item(Workspace::Live, "/sitemap").unwrap().is_none());
    let hits = s
        .search(Workspace::Authoring, "hello", Some("/site"), None, 10)
        .unwrap();
    assert_eq!(
        hits.len(),
        4,
        "prefix /site must not match /sitemap: {hits:?}"
    );
    s.write(
        Op::Delete {
            path: "/site".into(),
            recursive: true,
            expected_version: None,
            author: String::new(),
        },
        1,
    )
    .unwrap();
    assert!(
        s.get_item(Workspace::Authoring, "/site/c/x")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.search(Workspace::Authoring, "hello", None, None, 10)
            .unwrap()
            .len(),
        1
    );
    // Live keeps the published copies until unpublished.
    assert!(s.get_item(Workspace::Live, "/site/c/x").unwrap().is_some());
    s.write(
        Op::Unpublish {
            path: "/site".into(),
            recursive: true,
            author: String::new(),
        },
        1,
    )
    .unwrap();
    assert!(s.get_item(Workspace::Live, "/site/c/x").unwrap().is_none());
}

#[test]
fn replay_is_deterministic_and_checks_order() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = Store::open(a_dir.path()).unwrap();
    let b = Store::open(b_dir.path()).unwrap();
    let mut g = Gen(7);
    let mut entries = fill(&a, &mut g, 300, 1);
    entries.extend(fill(&a, &mut g, 100, 3));
    fake_blobs(&b, &entries);
    assert!(matches!(
        b.apply_entry(&entries[1]),
        Err(StoreError::OutOfOrder {
            expected: 1,
            got: 2
        })
    ));
    for e in &entries {
        // Through the wire encoding, as replication does.
        let decoded = JournalEntry::decode(&e.encode()).unwrap();
        b.apply_entry(&decoded).unwrap();
    }
    assert_eq!(a.digest().unwrap(), b.digest().unwrap());
    assert_eq!(a.position(), b.position());
    assert_eq!(a.term_history().unwrap(), b.term_history().unwrap());
    assert_eq!(
        b.term_history().unwrap(),
        vec![
            TermStart {
                term: 1,
                first_seq: 1
            },
            TermStart {
                term: 3,
                first_seq: 301
            }
        ]
    );
    // A replica refuses to register a binary whose file it does not hold.
    let c_dir = tempfile::tempdir().unwrap();
    let c = Store::open(c_dir.path()).unwrap();
    let first_blob = entries
        .iter()
        .position(|e| e.required_blob().is_some())
        .unwrap();
    let err = c.apply_entries(&entries[..=first_blob]).unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob(_)), "{err}");
    assert_eq!(c.position().seq, 0, "nothing of the batch applied");
    let mut stale = entries[0].clone();
    stale.seq = 401;
    assert!(matches!(
        b.apply_entry(&stale),
        Err(StoreError::StaleTerm { .. })
    ));
}

#[test]
fn truncate_rolls_back_exactly() {
    let a_dir = tempfile::tempdir().unwrap();
    let a = Store::open(a_dir.path()).unwrap();
    let mut g = Gen(42);
    fill(&a, &mut g, 200, 1);
    let at_200 = a.digest().unwrap();
    let later = fill(&a, &mut g, 150, 2);
    assert_ne!(a.digest().unwrap(), at_200);
    let removed = a.truncate_after(200).unwrap();
    assert_eq!(removed, later);
    assert_eq!(a.position(), Position { seq: 200, term: 1 });
    assert_eq!(a.digest().unwrap(), at_200);
    assert_eq!(
        a.term_history().unwrap(),
        vec![TermStart {
            term: 1,
            first_seq: 1
        }]
    );
    // Writing continues from the rewound point; the rewound state is consistent.
    fill(&a, &mut g, 10, 3);
    assert_eq!(a.position().seq, 210);
    a.quarantine_add(&removed, "diverged").unwrap();
    let q = a.quarantine_list().unwrap();
    assert_eq!(q.len(), 150);
    assert_eq!(q[0].entry, removed[0]);
}

#[test]
fn compaction_limits_catch_up_and_rewind() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let mut g = Gen(3);
    fill(&s, &mut g, 50, 1);
    s.compact_before(41).unwrap();
    assert_eq!(s.oldest_seq().unwrap(), 41);
    assert!(matches!(
        s.entries_after(10, 100),
        Err(StoreError::Compacted { oldest: 41 })
    ));
    assert_eq!(s.entries_after(40, 100).unwrap().len(), 10);
    assert!(matches!(
        s.truncate_after(30),
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(s.truncate_after(40).unwrap().len(), 10);
    assert_eq!(s.position().seq, 40);
    // An empty journal compacts to nothing and keeps its position.
    assert_eq!(s.compact_before(10_000).unwrap(), 0);
    assert_eq!(s.oldest_seq().unwrap(), 41);
    assert_eq!(s.write(put("/after", "x"), 1).unwrap().seq, 41);
    assert_eq!(s.compact_before(41).unwrap(), 0);
    assert_eq!(s.compact_before(42).unwrap(), 1);
}

#[test]
fn snapshot_while_writing_restores_consistently() {
    let a_dir = tempfile::tempdir().unwrap();
    let a = Store::open(a_dir.path()).unwrap();
    let mut g = Gen(11);
    fill(&a, &mut g, 200, 1);
    let writer = {
        let a = Arc::clone(&a);
        std::thread::spawn(move || {
            let mut g = Gen(12);
            fill(&a, &mut g, 300, 1);
        })
    };
    let snap_dir = tempfile::tempdir().unwrap();
    let snap = snap_dir.path().join("snap.db");
    let pos = a.snapshot_to(&snap).unwrap();
    writer.join().unwrap();
    assert!(pos.seq >= 200);

    let c_dir = tempfile::tempdir().unwrap();
    let c = Store::open(c_dir.path()).unwrap();
    c.meta_set("local.node", "c").unwrap();
    c.quarantine_add(&a.entries_after(0, 1).unwrap(), "kept")
        .unwrap();
    assert_eq!(c.restore_from(&snap).unwrap(), pos);
    assert_eq!(c.position(), pos);
    assert_eq!(c.meta_get("local.node").unwrap().as_deref(), Some("c"));
    assert_eq!(c.quarantine_list().unwrap().len(), 1);
    assert_eq!(c.quarantine_count().unwrap(), 1);
    // Catch up from the journal after the snapshot: same content as the source.
    let rest = a.entries_after(pos.seq, 10_000).unwrap();
    fake_blobs(&c, &rest);
    for e in rest {
        c.apply_entry(&e).unwrap();
    }
    assert_eq!(c.digest().unwrap(), a.digest().unwrap());
}

#[tokio::test]
async fn blobs_dedup_limit_and_hash_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let chunks = || {
        futures::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ])
    };
    let (sha, size) = s.put_blob_stream(chunks(), 100, None).await.unwrap();
    assert_eq!(size, 11);
    assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
    assert!(s.has_blob(&sha));
    let again = s.put_blob_stream(chunks(), 100, Some(&sha)).await.unwrap();
    assert_eq!(again.0, sha);
    assert!(matches!(
        s.put_blob_stream(chunks(), 5, None).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        s.put_blob_stream(chunks(), 100, Some(&"0".repeat(64)))
            .await,
        Err(StoreError::BadRequest(_))
    ));
    let (_, len) = s.open_blob(&sha).await.unwrap();
    assert_eq!(len, 11);
    // Nothing left behind in tmp.
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/tmp"))
            .unwrap()
            .count(),
        0
    );
}

use bytes::Bytes;

#[tokio::test]
async fn a_full_write_queue_refuses_instead_of_growing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with_queue(dir.path(), 4).unwrap();
    // Stall the disk: the group-commit thread takes a batch, then waits for the writer.
    let writer = Arc::clone(&s.writer);
    let stalled = lock(&writer);
    let mut waiting = Vec::new();
    let mut refused = None;
    // The thread holds at most one batch (MAX_BATCH) plus the queue (4) in flight.
    for i in 0..(MAX_BATCH + 10) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match s.enqueue(put(&format!("/q{i}"), "x"), 1, Reply::Async(tx)) {
            Ok(()) => waiting.push(rx),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, err) = refused.expect("a stalled disk must make the queue refuse writes");
    assert!(
        matches!(err, StoreError::Overloaded { queued: 4 }),
        "{err:?}"
    );
    assert!(at <= MAX_BATCH + 5, "refused only after {at} writes");
    // Once the disk moves again, every accepted write commits.
    drop(stalled);
    for rx in waiting {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(s.position().seq as usize, at);
    // And the queue takes writes again.
    s.write(put("/after", "x"), 1).unwrap();
}
