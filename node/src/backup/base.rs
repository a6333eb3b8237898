//! Base backups: a consistent online copy of the content (`VACUUM INTO`), compressed,
//! with every binary it references, uploaded under `base/<id>/`; the manifest goes
//! last, so a backup is either complete or ignored. Listing and retention too.

use std::io::{BufReader, BufWriter};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;
use studio_crds::node_api::{BackupPhase, BaseBackupList, BaseBackupStatus, PruneAnswer};

use super::archiver::upload_blob;
use super::layout::{self, Manifest, SegmentName};
use super::{BackupError, Backups, Objects, now_ms};
use crate::replication::Replication;
use crate::storage::Store;

/// Starts base backup `id` in the background. Answers its status: Running, or the
/// recorded outcome when `id` already ran on this node (one completed elsewhere is
/// found by the background task from its manifest).
pub async fn start(
    state: &Replication,
    backups: &Arc<Backups>,
    id: &str,
) -> Result<BaseBackupStatus, BackupError> {
    if !layout::valid_backup_id(id) {
        return Err(BackupError::Refused(format!(
            "backup id {id:?}: use 1-128 letters, digits, '-', '_' or '.', not starting with '.'"
        )));
    }
    let objects = backups.objects()?.clone();
    if let Some(run) = backups.run(id) {
        return Ok(run);
    }
    let Some(cluster_id) = state.store.call(|s| s.cluster_id()).await? else {
        return Err(BackupError::NoClusterId);
    };
    let status = BaseBackupStatus {
        id: id.to_string(),
        phase: BackupPhase::Running,
        message: "taking a snapshot".into(),
        cluster_id: cluster_id.clone(),
        node_id: state.node_id.to_string(),
        started_ms: now_ms(),
        stopped_ms: None,
        seq: 0,
        term: 0,
        time_ms: 0,
        size_bytes: 0,
        location: objects.describe(&cluster_id) + "/" + layout::BASE + "/" + id,
    };
    backups.record_run(status.clone())?;
    let (state, backups, run) = (state.clone(), backups.clone(), status.clone());
    tokio::spawn(async move {
        let tmp = state.config.data_dir.join(format!(".backup-{}", run.id));
        // A backup of this id already in the archive (the node restarted since) is
        // answered, not taken again; the object store is only asked here, in the
        // background, so an unreachable store fails the run instead of the request.
        let result = match manifest(&objects, &run.cluster_id, &run.id).await {
            Ok(Some(done)) => Ok(done),
            Ok(None) => take(&state, &objects, &run, &tmp).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        let m = &state.metrics.backup;
        let mut done = run.clone();
        done.stopped_ms = Some(now_ms());
        match result {
            Ok(finished) => {
                tracing::info!(id = %finished.id, seq = finished.seq, bytes = finished.size_bytes, "base backup completed");
                m.base_completed.inc();
                m.base_last_success.set(now_ms() / 1000);
                done = finished;
            }
            Err(e) => {
                tracing::warn!(id = %run.id, error = %e, "base backup failed");
                m.base_failed.inc();
                m.base_last_failure.set(now_ms() / 1000);
                done.phase = BackupPhase::Failed;
                done.message = e.to_string();
            }
        }
        let _ = backups.record_run(done);
    });
    Ok(status)
}

async fn take(
    state: &Replication,
    objects: &Objects,
    run: &BaseBackupStatus,
    tmp: &FsPath,
) -> Result<BaseBackupStatus, BackupError> {
    let _ = tokio::fs::remove_dir_all(tmp).await;
    tokio::fs::create_dir_all(tmp)
        .await
        .map_err(BackupError::Io)?;
    let db = tmp.join("content.db");
    let db2 = db.clone();
    state.store.call(move |s| s.snapshot_to(&db2)).await?;
    let (info, gz, sum) = {
        let db = db.clone();
        let gz = tmp.join(layout::CONTENT);
        tokio::task::spawn_blocking(move || -> Result<_, BackupError> {
            let info = Store::snapshot_info(&db)?;
            let sum = compress(&db, &gz)?;
            Ok((info, gz, sum))
        })
        .await
        .map_err(|e| BackupError::Io(std::io::Error::other(e)))??
    };
    let base = format!("{}/{}", layout::BASE, run.id);
    let mut size = objects
        .put_file(
            &objects.key(&run.cluster_id, &format!("{base}/{}", layout::CONTENT)),
            &gz,
        )
        .await?;
    for (sha, _) in &info.blobs {
        size += upload_blob(state, objects, &run.cluster_id, sha).await?;
    }
    let mut done = run.clone();
    done.phase = BackupPhase::Completed;
    done.message = format!("content sha256 {sum}");
    done.seq = info.position.seq;
    done.term = info.position.term;
    done.time_ms = info.time_ms;
    done.size_bytes = size;
    done.stopped_ms = Some(now_ms());
    objects
        .put_json(
            &objects.key(&run.cluster_id, &format!("{base}/{}", layout::MANIFEST)),
            &done,
        )
        .await?;
    Ok(done)
}

/// gzip `src` into `dst`; returns the sha256 of the uncompressed bytes.
fn compress(src: &FsPath, dst: &PathBuf) -> Result<String, BackupError> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Write};
    let mut input = BufReader::new(std::fs::File::open(src).map_err(BackupError::Io)?);
    let out = BufWriter::new(std::fs::File::create(dst).map_err(BackupError::Io)?);
    let mut gz = GzEncoder::new(out, Compression::fast());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(BackupError::Io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        gz.write_all(&buf[..n]).map_err(BackupError::Io)?;
    }
    let mut out = gz.finish().map_err(BackupError::Io)?;
    out.flush().map_err(BackupError::Io)?;
    out.get_ref().sync_all().map_err(BackupError::Io)?;
    Ok(hex::encode(hasher.finalize()))
}

/// The manifest of a completed base backup, if there is one.
pub async fn manifest(
    objects: &Objects,
    cluster_id: &str,
    id: &str,
) -> Result<Option<Manifest>, BackupError> {
    if !layout::valid_backup_id(id) {
        return Ok(None);
    }
    objects
        .get_json_opt(&objects.key(
            cluster_id,
            &format!("{}/{id}/{}", layout::BASE, layout::MANIFEST),
        ))
        .await
}

/// Every completed base backup of `cluster_id`, oldest (lowest seq) first.
pub async fn list(objects: &Objects, cluster_id: &str) -> Result<BaseBackupList, BackupError> {
    let all = objects
        .list(&objects.key(cluster_id, layout::BASE), None)
        .await?;
    let mut backups = Vec::new();
    for m in all {
        if m.location.filename() == Some(layout::MANIFEST) {
            let b: Manifest = objects.get_json(&m.location).await?;
            if b.phase == BackupPhase::Completed {
                backups.push(b);
            }
        }
    }
    backups.sort_by_key(|b| (b.seq, b.started_ms));
    Ok(BaseBackupList {
        first_recoverability_seq: backups.first().map(|b| b.seq),
        first_recoverability_time_ms: backups.first().map(|b| b.time_ms),
        backups,
    })
}

/// Deletes the named base backups, then every segment wholly below the oldest base
/// backup that remains (nothing can restore from it any more). Binaries stay.
pub async fn prune(
    objects: &Objects,
    cluster_id: &str,
    delete: &[String],
) -> Result<PruneAnswer, BackupError> {
    let mut answer = PruneAnswer::default();
    for id in delete {
        if !layout::valid_backup_id(id) {
            return Err(BackupError::Refused(format!(
                "backup id {id:?} is not valid"
            )));
        }
        let dir = objects.key(cluster_id, &format!("{}/{id}", layout::BASE));
        let objs = objects.list(&dir, None).await?;
        if objs.is_empty() {
            continue;
        }
        // The manifest first: a half-deleted backup is then simply incomplete.
        let manifest_key = objects.key(
            cluster_id,
            &format!("{}/{id}/{}", layout::BASE, layout::MANIFEST),
        );
        objects.delete(&manifest_key).await?;
        for o in objs {
            objects.delete(&o.location).await?;
        }
        answer.deleted_backups.push(id.clone());
    }
    let remaining = list(objects, cluster_id).await?;
    let Some(oldest) = remaining.first_recoverability_seq else {
        return Ok(answer);
    };
    let wal = objects.key(cluster_id, layout::WAL);
    for o in objects.list(&wal, None).await? {
        if let Some(s) = o.location.filename().and_then(SegmentName::parse)
            && s.last <= oldest
        {
            objects.delete(&o.location).await?;
            answer.deleted_segments += 1;
        }
    }
    Ok(answer)
}
