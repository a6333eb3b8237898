//! Content-addressed binaries: `<data-dir>/blobs/<sha256>`, written through a temp
//! file that is fsynced and renamed, so a file under its final name is always whole.

use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::types::is_sha256_hex;
use super::{Store, StoreError};

impl Store {
    /// Final location of a blob (valid sha256 only).
    pub fn blob_path(&self, sha256: &str) -> Option<PathBuf> {
        is_sha256_hex(sha256).then(|| self.dir().join("blobs").join(sha256))
    }

    /// Whether the blob file is on disk.
    pub fn has_blob(&self, sha256: &str) -> bool {
        self.blob_path(sha256).is_some_and(|p| p.is_file())
    }

    /// Streams a blob to disk, hashing it on the way. Fails with `TooLarge` past
    /// `max_bytes`, and with `BadRequest` when `expected` is given and differs.
    /// Returns (sha256, size); a blob already present is deduplicated.
    pub async fn put_blob_stream<S, E>(
        &self,
        mut body: S,
        max_bytes: u64,
        expected: Option<&str>,
    ) -> Result<(String, u64), StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp_dir = self.dir().join("blobs").join("tmp");
        tokio::fs::create_dir_all(&tmp_dir).await?;
        let tmp = tmp_dir.join(uuid::Uuid::new_v4().to_string());
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| StoreError::BadRequest(format!("reading body: {e}")))?;
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(StoreError::TooLarge { limit: max_bytes });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            let sha = hex::encode(hasher.finalize());
            if let Some(exp) = expected
                && exp != sha
            {
                return Err(StoreError::BadRequest(format!(
                    "content hash {sha} differs from expected {exp}"
                )));
            }
            let dest = self.dir().join("blobs").join(&sha);
            if tokio::fs::try_exists(&dest).await? {
                tokio::fs::remove_file(&tmp).await?;
            } else {
                tokio::fs::rename(&tmp, &dest).await?;
                let dir = self.dir().join("blobs");
                tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))??;
            }
            Ok((sha, size))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Opens a blob for reading, with its size.
    pub async fn open_blob(&self, sha256: &str) -> Result<(tokio::fs::File, u64), StoreError> {
        let Some(path) = self.blob_path(sha256) else {
            return Err(StoreError::NotFound(sha256.to_string()));
        };
        match tokio::fs::File::open(&path).await {
            Ok(f) => {
                let len = f.metadata().await?.len();
                Ok((f, len))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(sha256.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
