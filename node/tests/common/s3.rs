//! A real S3 server (versitygw, POSIX backend) on loopback for node tests; built by
//! scripts/build-versitygw.sh (`STUDIO_VERSITYGW` overrides the path).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct LocalS3 {
    pub port: u16,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    root: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn versitygw() -> PathBuf {
    if let Some(p) = std::env::var_os("STUDIO_VERSITYGW") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("STUDIO_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("studio")))
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/studio"));
    let p = cache.join("bin/versitygw");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-versitygw.sh (make test does)",
        p.display()
    );
    p
}

impl LocalS3 {
    pub fn start(bucket: &str) -> LocalS3 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        // With the POSIX backend a bucket is a directory of the root.
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let mut s3 = LocalS3 {
            port: free_port(),
            bucket: bucket.into(),
            access_key_id: format!("AK{}", uuid::Uuid::new_v4().simple()).to_uppercase()[..20]
                .to_string(),
            secret_access_key: uuid::Uuid::new_v4().simple().to_string(),
            log: dir.path().join("versitygw.log"),
            root,
            child: None,
            _dir: dir,
        };
        s3.start_again();
        s3
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The node flags that archive into this server under `path`.
    pub fn node_args(&self, path: &str) -> Vec<String> {
        vec![
            "--backup-bucket".into(),
            self.bucket.clone(),
            "--backup-endpoint".into(),
            self.endpoint(),
            "--backup-path".into(),
            path.into(),
            "--backup-access-key-id".into(),
            self.access_key_id.clone(),
            "--backup-secret-access-key".into(),
            self.secret_access_key.clone(),
        ]
    }

    /// Objects under `prefix` of the bucket (files of the POSIX backend).
    pub fn files_under(&self, prefix: &str) -> Vec<String> {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else if let Ok(rel) = p.strip_prefix(base) {
                    out.push(rel.display().to_string());
                }
            }
        }
        let base = self.root.join(&self.bucket);
        let mut out = Vec::new();
        walk(&base.join(prefix), &base, &mut out);
        out.sort();
        out
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts on the same port and data; waits until it accepts connections.
    pub fn start_again(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(versitygw())
            .env("ROOT_ACCESS_KEY_ID", &self.access_key_id)
            .env("ROOT_SECRET_ACCESS_KEY", &self.secret_access_key)
            .env("VGW_REGION", "us-east-1")
            .arg("--port")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("posix")
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start versitygw");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "versitygw did not listen: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        self.stop();
    }
}
