use super::*;
use crate::storage::{Op, Store};

fn revision(conn: &Connection) -> Option<u32> {
    stored_revision(conn).unwrap()
}

fn has_table(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = ?1)",
        params![name],
        |r| r.get(0),
    )
    .unwrap()
}

fn log(tx: &Transaction, what: &str) -> Result<()> {
    tx.execute("INSERT INTO log (what) VALUES (?1)", params![what])?;
    Ok(())
}

fn to2(tx: &Transaction) -> Result<()> {
    tx.execute_batch("CREATE TABLE log (n INTEGER PRIMARY KEY, what TEXT NOT NULL);")?;
    log(tx, "2")
}

fn to3(tx: &Transaction) -> Result<()> {
    // Needs revision 2's table: only works in order.
    log(tx, "3")
}

fn to4(tx: &Transaction) -> Result<()> {
    tx.execute_batch("ALTER TABLE log ADD COLUMN extra TEXT;")?;
    log(tx, "4")
}

fn to4_fails(tx: &Transaction) -> Result<()> {
    tx.execute_batch("ALTER TABLE log ADD COLUMN extra TEXT;")?;
    log(tx, "4")?;
    Err(StoreError::Corrupt("disk full (simulated)".into()))
}

const TEST: &[Migration] = &[
    Migration {
        to: 2,
        what: "log table",
        run: to2,
    },
    Migration {
        to: 3,
        what: "log 3",
        run: to3,
    },
    Migration {
        to: 4,
        what: "extra column",
        run: to4,
    },
];

fn logged(conn: &Connection) -> Vec<String> {
    let mut stmt = conn.prepare("SELECT what FROM log ORDER BY n").unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

fn db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("t.db")).unwrap();
    (dir, conn)
}

#[test]
fn a_new_database_gets_the_current_revision() {
    let (_d, mut conn) = db();
    assert_eq!(migrate(&mut conn, 4, TEST).unwrap(), 4);
    assert_eq!(revision(&conn), Some(4));
    assert!(has_table(&conn, "journal"));
    assert_eq!(logged(&conn), ["2", "3", "4"]);
    // Opening again changes nothing.
    assert_eq!(migrate(&mut conn, 4, TEST).unwrap(), 4);
    assert_eq!(logged(&conn), ["2", "3", "4"]);
}

#[test]
fn a_store_records_this_builds_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.meta_get(REVISION_KEY).unwrap(),
        Some(SCHEMA_REVISION.to_string())
    );
}

#[test]
fn a_legacy_database_is_revision_1_and_keeps_its_data() {
    let (_d, mut conn) = db();
    // A database written before revisions: the baseline tables, data, no key.
    conn.execute_batch(BASELINE).unwrap();
    conn.execute_batch("INSERT INTO meta (key, value) VALUES ('last_seq', '7');")
        .unwrap();
    assert_eq!(revision(&conn), None);
    assert_eq!(migrate(&mut conn, 1, &[]).unwrap(), 1);
    assert_eq!(revision(&conn), Some(1));
    let seq: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(seq, "7");
    // ... and later revisions migrate it from 1.
    assert_eq!(migrate(&mut conn, 3, TEST).unwrap(), 3);
    assert_eq!(logged(&conn), ["2", "3"]);
}

#[test]
fn a_legacy_store_directory_opens_at_this_builds_revision() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = Connection::open(dir.path().join("studio.db")).unwrap();
        conn.execute_batch(BASELINE).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.meta_get(REVISION_KEY).unwrap(),
        Some(SCHEMA_REVISION.to_string())
    );
}

#[test]
fn migrations_apply_in_order_one_revision_at_a_time() {
    let (_d, mut conn) = db();
    assert_eq!(migrate(&mut conn, 2, TEST).unwrap(), 2);
    assert_eq!(logged(&conn), ["2"]);
    assert_eq!(migrate(&mut conn, 4, TEST).unwrap(), 4);
    assert_eq!(logged(&conn), ["2", "3", "4"]);
    // A gap in the list is an error, not a skipped revision.
    let (_d, mut conn) = db();
    let gap = [TEST[0], TEST[2]];
    assert!(matches!(
        migrate(&mut conn, 4, &gap),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(revision(&conn), Some(2));
    // A target no migration reaches is an error too.
    assert!(matches!(
        migrate(&mut conn, 9, TEST),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn a_newer_database_is_refused_untouched() {
    let (_d, mut conn) = db();
    conn.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO meta (key, value) VALUES ('schema_revision', '5');",
    )
    .unwrap();
    match migrate(&mut conn, 4, TEST) {
        Err(StoreError::SchemaTooNew { data: 5, build: 4 }) => {}
        other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
    }
    assert!(!has_table(&conn, "journal"), "refused data was written to");
    assert_eq!(revision(&conn), Some(5));
}

#[test]
fn a_store_with_newer_data_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .meta_set(REVISION_KEY, &(SCHEMA_REVISION + 1).to_string())
            .unwrap();
    }
    let err = Store::open(dir.path()).err().unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    assert!(err.to_string().contains("newer than this build"), "{err}");
    let conn = Connection::open(dir.path().join("studio.db")).unwrap();
    assert_eq!(revision(&conn), Some(SCHEMA_REVISION + 1));
}

#[test]
fn a_failing_migration_leaves_the_previous_revision_and_its_data() {
    let (_d, mut conn) = db();
    let failing = [
        TEST[0],
        TEST[1],
        Migration {
            to: 4,
            what: "extra column",
            run: to4_fails,
        },
    ];
    match migrate(&mut conn, 4, &failing) {
        Err(StoreError::Migration { to: 4, .. }) => {}
        other => panic!("expected a failed migration, got {:?}", other.map(|_| ())),
    }
    assert_eq!(revision(&conn), Some(3));
    assert_eq!(logged(&conn), ["2", "3"]);
    // The column of the failed migration is gone with it, so the fixed list applies.
    assert_eq!(migrate(&mut conn, 4, TEST).unwrap(), 4);
    assert_eq!(logged(&conn), ["2", "3", "4"]);
}

#[test]
fn the_migration_list_is_well_formed() {
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.to as usize, i + 2, "{}", m.what);
    }
    assert_eq!(
        MIGRATIONS.last().map(|m| m.to).unwrap_or(1),
        SCHEMA_REVISION
    );
    assert!((1..=SCHEMA_REVISION).contains(&MIN_COMPATIBLE_REVISION));
}

#[test]
fn compatibility_rule() {
    let r = |revision, min_compatible| Revisions {
        revision,
        min_compatible,
    };
    // Same revision.
    assert!(r(1, 1).compatible_with(r(1, 1)));
    assert!(r(3, 2).compatible_with(r(3, 3)));
    // Additive revision 2 (still replicates with 1): both directions.
    assert!(r(2, 1).compatible_with(r(1, 1)));
    assert!(r(1, 1).compatible_with(r(2, 1)));
    // Incompatible revision 2: neither direction.
    assert!(!r(2, 2).compatible_with(r(1, 1)));
    assert!(!r(1, 1).compatible_with(r(2, 2)));
    // Two additive steps, the newest no longer accepting 1.
    assert!(r(3, 2).compatible_with(r(2, 1)));
    assert!(!r(3, 2).compatible_with(r(1, 1)));
    // Peers that announce nothing are revision 1.
    assert_eq!(Revisions::announced(0, 0), r(1, 1));
    assert_eq!(Revisions::announced(3, 0), r(3, 3));
    assert_eq!(Revisions::announced(3, 7), r(3, 3));
    assert!(Revisions::OWN.compatible_with(Revisions::OWN));
}

#[test]
fn restoring_a_newer_snapshot_is_refused_before_the_swap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let put = |p: &str| Op::Put {
        path: p.into(),
        item_type: "doc".into(),
        properties: serde_json::json!({}),
        expected_version: None,
        author: "t".into(),
    };
    store.write(put("/a"), 1).unwrap();
    let snap = dir.path().join("snap.db");
    store.snapshot_to(&snap).unwrap();
    store.write(put("/b"), 1).unwrap();
    {
        let c = Connection::open(&snap).unwrap();
        c.execute(
            "UPDATE meta SET value = ?1 WHERE key = ?2",
            params![(SCHEMA_REVISION + 1).to_string(), REVISION_KEY],
        )
        .unwrap();
    }
    let err = store.restore_from(&snap).err().unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    assert_eq!(store.position().seq, 2);
    assert_eq!(store.entries_after(0, 10).unwrap().len(), 2);
    // A snapshot from a node before revisions (baseline, no key) restores, migrated.
    let legacy = dir.path().join("legacy.db");
    {
        let c = Connection::open(&legacy).unwrap();
        c.execute_batch(BASELINE).unwrap();
        c.execute_batch("INSERT INTO meta (key, value) VALUES ('last_seq', '0');")
            .unwrap();
    }
    assert_eq!(store.restore_from(&legacy).unwrap().seq, 0);
    assert_eq!(
        store.meta_get(REVISION_KEY).unwrap(),
        Some(SCHEMA_REVISION.to_string())
    );
}
