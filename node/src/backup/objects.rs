//! The object store a cluster archives into, through the `object_store` crate (S3),
//! with bounded requests and the archive's key layout.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::BackupError;
use crate::config::BackupArgs;

/// One request (a part of a multipart upload included) ends after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Multipart parts; object stores want at least 5 MiB per part.
const PART_BYTES: usize = 8 << 20;
/// Files up to this size are uploaded in one PUT.
const SINGLE_PUT_BYTES: u64 = 16 << 20;
/// A JSON object (manifest, mark, timeline record) may not be larger than this.
const MAX_JSON_BYTES: usize = 1 << 20;

/// A bucket, a prefix, and a client for them.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
}

impl Objects {
    /// The object store of `args`, or None without a bucket.
    pub fn from_args(args: &BackupArgs) -> Result<Option<Objects>, BackupError> {
        let Some(bucket) = args.bucket.clone().filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let mut options = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        if let Some(ca) = &args.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                BackupError::Config(format!("reading the CA file {}: {e}", ca.display()))
            })?;
            for cert in object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| BackupError::Config(format!("the CA file {}: {e}", ca.display())))?
            {
                options = options.with_root_certificate(cert);
            }
        }
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region(&args.region)
            .with_client_options(options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            });
        if let Some(endpoint) = &args.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&args.access_key_id, &args.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = b.build().map_err(|e| BackupError::Config(e.to_string()))?;
        Ok(Some(Objects {
            store: Arc::new(store),
            bucket,
            prefix: args.path.trim_matches('/').to_string(),
        }))
    }

    /// The key `<path>/<cluster id>/<rest>`.
    pub fn key(&self, cluster_id: &str, rest: &str) -> Path {
        let mut parts: Vec<&str> = Vec::new();
        if !self.prefix.is_empty() {
            parts.push(&self.prefix);
        }
        parts.push(cluster_id);
        if !rest.is_empty() {
            parts.push(rest);
        }
        Path::from(parts.join("/"))
    }

    /// `s3://bucket/path/<cluster id>` (for status and logs).
    pub fn describe(&self, cluster_id: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(cluster_id, ""))
    }

    pub async fn put(&self, key: &Path, bytes: Vec<u8>) -> Result<(), BackupError> {
        self.store.put(key, PutPayload::from(bytes)).await?;
        Ok(())
    }

    pub async fn put_json<T: serde::Serialize>(
        &self,
        key: &Path,
        v: &T,
    ) -> Result<(), BackupError> {
        let bytes = serde_json::to_vec(v).map_err(|e| BackupError::Corrupt(e.to_string()))?;
        self.put(key, bytes).await
    }

    /// A whole object into memory (segments, JSON); `max` bounds what is accepted.
    pub async fn get(&self, key: &Path, max: usize) -> Result<Bytes, BackupError> {
        let r = self.store.get(key).await?;
        if r.meta.size > max as u64 {
            return Err(BackupError::Corrupt(format!(
                "{key} is {} bytes, more than the {max} expected",
                r.meta.size
            )));
        }
        Ok(r.bytes().await?)
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &Path,
    ) -> Result<T, BackupError> {
        let bytes = self.get(key, MAX_JSON_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| BackupError::Corrupt(format!("{key}: {e}")))
    }

    /// None when the object does not exist.
    pub async fn get_json_opt<T: serde::de::DeserializeOwned>(
        &self,
        key: &Path,
    ) -> Result<Option<T>, BackupError> {
        match self.get_json(key).await {
            Ok(v) => Ok(Some(v)),
            Err(BackupError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn exists(&self, key: &Path) -> Result<bool, BackupError> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `prefix` whose key sorts after `offset` (if given).
    pub async fn list(
        &self,
        prefix: &Path,
        offset: Option<&Path>,
    ) -> Result<Vec<ObjectMeta>, BackupError> {
        let stream = match offset {
            Some(o) => self.store.list_with_offset(Some(prefix), o),
            None => self.store.list(Some(prefix)),
        };
        Ok(stream.try_collect().await?)
    }

    pub async fn delete(&self, key: &Path) -> Result<(), BackupError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Uploads a file, in parts when it is large. Returns its size.
    pub async fn put_file(&self, key: &Path, file: &FsPath) -> Result<u64, BackupError> {
        let mut f = tokio::fs::File::open(file).await.map_err(BackupError::Io)?;
        let size = f.metadata().await.map_err(BackupError::Io)?.len();
        if size <= SINGLE_PUT_BYTES {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).await.map_err(BackupError::Io)?;
            self.put(key, buf).await?;
            return Ok(size);
        }
        let upload = self.store.put_multipart(key).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; PART_BYTES];
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(BackupError::Io(e));
                }
            };
            if n == 0 {
                break;
            }
            // At most two parts in flight: memory stays bounded.
            w.wait_for_capacity(2).await?;
            w.write(&buf[..n]);
        }
        w.finish().await?;
        Ok(size)
    }

    /// Downloads an object into a file (created or truncated), streaming.
    pub async fn get_to_file(&self, key: &Path, file: &FsPath) -> Result<u64, BackupError> {
        let r = self.store.get(key).await?;
        let mut stream = r.into_stream();
        let mut out = tokio::fs::File::create(file)
            .await
            .map_err(BackupError::Io)?;
        let mut n = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            n += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(BackupError::Io)?;
        }
        out.flush().await.map_err(BackupError::Io)?;
        out.sync_all().await.map_err(BackupError::Io)?;
        Ok(n)
    }

    /// An object as a stream of chunks (binaries into the blob store).
    pub async fn get_stream(
        &self,
        key: &Path,
    ) -> Result<futures::stream::BoxStream<'static, object_store::Result<Bytes>>, BackupError> {
        Ok(self.store.get(key).await?.into_stream())
    }
}
