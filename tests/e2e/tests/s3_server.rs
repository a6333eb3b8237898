//! The S3 server of the backup tests (`studio_harness::s3`, versitygw built by
//! `scripts/build-versitygw.sh`) is a real S3 service: the `object_store` S3 client puts,
//! gets and lists objects on it; a stop (an outage) refuses requests and a restart keeps
//! the objects; a pod of the local cluster (the pushed `studio-testapp` image on the real
//! node) reaches it on the pods' endpoint with the same credentials.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, aws::AmazonS3Builder,
    path::Path as ObjectPath,
};
use studio_e2e::{
    is_ready,
    real_node::{REAL_NODE, real_node_ready, testapp_image},
    testapp_pod,
};
use studio_harness::{TestEnv, pod_netns, s3::S3Server, wait_for};

/// An S3 client for `server` at `endpoint`; no retries, so that an outage shows at once.
fn client(server: &S3Server, endpoint: &str) -> anyhow::Result<impl ObjectStore> {
    install_crypto_provider();
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_region(server.region())
        .with_bucket_name(server.bucket())
        .with_access_key_id(server.access_key_id())
        .with_secret_access_key(server.secret_access_key())
        .with_retry(RetryConfig {
            max_retries: 0,
            retry_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .build()
        .context("building the S3 client")
}

/// object_store's reqwest has no bundled rustls provider (see tests/e2e/Cargo.toml):
/// ring, the one the rest of the workspace uses, becomes the process default. An error
/// means a provider is installed already.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn get(store: &impl ObjectStore, key: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = store
        .get(&ObjectPath::from(key))
        .await
        .with_context(|| format!("GET {key}"))?
        .bytes()
        .await
        .with_context(|| format!("reading the body of {key}"))?;
    Ok(bytes.to_vec())
}

async fn list(store: &impl ObjectStore, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut keys: Vec<String> = store
        .list(Some(&ObjectPath::from(prefix)))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .with_context(|| format!("LIST {prefix}"))?;
    keys.sort();
    Ok(keys)
}

#[tokio::test]
async fn versitygw_serves_s3_to_the_host_and_to_pods_and_keeps_objects_across_a_restart()
-> anyhow::Result<()> {
    let env = TestEnv::new("s3-server").await?;
    real_node_ready(&env).await?;
    let image = testapp_image(env.cluster)?;
    let mut s3 = S3Server::start("studio-backups").await?;
    let store = client(&s3, &s3.endpoint_for_host())?;

    // PUT, GET, LIST from the host.
    let objects = [
        ("wal/000000010000000000000001", b"segment one".to_vec()),
        ("wal/000000010000000000000002", vec![7u8; 256 * 1024]),
        (
            "base/20260101T000000Z/backup.tar.gz",
            b"a base backup".to_vec(),
        ),
    ];
    for (key, data) in &objects {
        store
            .put(&ObjectPath::from(*key), PutPayload::from(data.clone()))
            .await
            .with_context(|| format!("PUT {key}"))?;
    }
    for (key, data) in &objects {
        ensure!(get(&store, key).await? == *data, "GET {key}: other bytes");
    }
    let wal = list(&store, "wal").await?;
    ensure!(
        wal == [
            "wal/000000010000000000000001",
            "wal/000000010000000000000002"
        ],
        "LIST wal: {wal:?}"
    );
    ensure!(
        s3.data_dir()
            .join(s3.bucket())
            .join("wal/000000010000000000000001")
            .is_file(),
        "the object is not a file under the POSIX backend's root"
    );
    // Wrong credentials are refused: the server checks signatures.
    install_crypto_provider();
    let forged = AmazonS3Builder::new()
        .with_endpoint(s3.endpoint_for_host())
        .with_allow_http(true)
        .with_region(s3.region())
        .with_bucket_name(s3.bucket())
        .with_access_key_id(s3.access_key_id())
        .with_secret_access_key("not-the-secret")
        .with_retry(RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .build()?;
    ensure!(
        get(&forged, objects[0].0).await.is_err(),
        "a GET with a wrong secret succeeded"
    );

    // An outage: requests fail; after the restart (same port, same data) the objects
    // are there and new writes work.
    s3.stop()?;
    ensure!(!s3.is_running(), "the server still runs after stop()");
    ensure!(
        get(&store, objects[0].0).await.is_err(),
        "a GET succeeded while the server was stopped"
    );
    s3.start_again().await?;
    for (key, data) in &objects {
        ensure!(
            get(&store, key).await? == *data,
            "GET {key} after the restart: other bytes"
        );
    }
    store
        .put(
            &ObjectPath::from("wal/000000010000000000000003"),
            PutPayload::from_static(b"segment three"),
        )
        .await
        .context("PUT after the restart")?;
    ensure!(
        list(&store, "wal").await?.len() == 3,
        "LIST wal after the restart"
    );

    // From a pod: its network namespace reaches the pods' endpoint, and a signed GET
    // with the server's credentials returns the object.
    let pods = env.api::<Pod>();
    pods.create(
        &PostParams::default(),
        &testapp_pod("s3-client", "default", &image)?,
    )
    .await
    .context("creating the pod")?;
    let pod = wait_for("the pod to be Ready", Duration::from_secs(60), || async {
        let p = pods.get("s3-client").await?;
        if is_ready(&p) {
            Ok(p)
        } else {
            bail!("phase {:?}", p.status.and_then(|s| s.phase))
        }
    })
    .await?;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    ensure!(
        node == Some(REAL_NODE),
        "s3-client runs on {node:?}, not {REAL_NODE}"
    );
    let netns = pod_netns(&pod).context("the pod's network namespace")?;
    let url = format!(
        "{}/{}/{}",
        s3.endpoint_for_pods(),
        s3.bucket(),
        objects[0].0
    );
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "curl", "-sS", "--fail-with-body"])
        .args(["--max-time", "10", "--aws-sigv4"])
        .arg(format!("aws:amz:{}:s3", s3.region()))
        .arg("--user")
        .arg(format!("{}:{}", s3.access_key_id(), s3.secret_access_key()))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", &url])
        .output()
        .await
        .context("running curl in the pod's network namespace")?;
    ensure!(
        out.status.success() && out.stdout == objects[0].1,
        "GET {url} from the pod's network namespace {}: {} {:?} {}",
        netns.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    drop(s3);
    env.pass().await
}
