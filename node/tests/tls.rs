//! TLS on the node's port (`--tls-dir`): plaintext refused; a client certificate from
//! the cluster CA admits a caller to internal routes (no cluster token needed), one
//! from another CA is refused at the handshake; replication runs over mutual TLS; a
//! renewed certificate written into the directory is served without a restart while
//! replication and writes go on.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{replica, wait_for};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use reqwest::{Client, StatusCode};
use serde_json::json;
use studio_crds::node_api;

/// A CA that signs member certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("CA");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// (certificate PEM, key PEM) for `cn`, valid for 127.0.0.1, server and client,
    /// for `days` from now.
    fn issue(&self, cn: &str, days: i64) -> (String, String) {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a Kubernetes-TLS-Secret-like directory for `cn`, valid `days`.
    fn write_dir(&self, dir: &Path, cn: &str, days: i64) {
        std::fs::create_dir_all(dir).expect("mkdir");
        let (cert, key) = self.issue(cn, days);
        // The key first, then the certificate: a reader between the two writes sees a
        // mismatch and keeps the old pair.
        std::fs::write(dir.join("tls.key"), key).expect("write key");
        std::fs::write(dir.join("tls.crt"), cert).expect("write cert");
        std::fs::write(dir.join("ca.crt"), &self.pem).expect("write ca");
    }

    /// A client trusting this CA, optionally presenting a certificate of `as_ca`.
    fn client(&self, identity: Option<(&Ca, &str)>) -> Client {
        let mut b = Client::builder()
            .use_rustls_tls()
            .tls_info(true)
            .timeout(Duration::from_secs(10))
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.pem.as_bytes()).expect("ca pem"),
            );
        if let Some((ca, cn)) = identity {
            let (cert, key) = ca.issue(cn, 1);
            b = b.identity(
                reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity"),
            );
        }
        b.build().expect("client")
    }
}

/// The DER of the certificate the node serves now (on a new connection: a pooled one
/// keeps the certificate of its handshake).
async fn served_cert(ca: &Ca, url: &str) -> Vec<u8> {
    let r = ca
        .client(None)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("healthz over TLS");
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("the peer certificate")
}

async fn digest(member: &Client, url: &str) -> Option<String> {
    let v: serde_json::Value = member
        .get(format!("{url}{}", node_api::ADMIN_DIGEST))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["digest"].as_str().map(str::to_string)
}

/// Waits until the replica's content digest equals the primary's.
async fn converged(member: &Client, primary: &str, replica: &str) {
    wait_for(
        "the replica to converge over TLS",
        Duration::from_secs(20),
        || async {
            let (a, b) = (
                digest(member, primary).await?,
                digest(member, replica).await?,
            );
            (a == b).then_some(())
        },
    )
    .await
}

/// `studio_tls_certificate_expiry_timestamp_seconds` from /metrics.
async fn expiry_metric(http: &Client, url: &str) -> i64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("studio_tls_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no expiry metric in {text}"))
}

async fn put(http: &Client, url: &str, path: &str) -> StatusCode {
    http.put(format!("{url}/api/v1/content/{path}"))
        .bearer_auth(editor())
        .json(&json!({"type": "page", "properties": {"title": path}}))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

#[tokio::test]
async fn members_speak_mutual_tls_and_pick_up_a_renewed_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("studio cluster CA");
    let foreign = Ca::new("another cluster's CA");
    let (p_tls, r_tls) = (tmp.path().join("p-tls"), tmp.path().join("r-tls"));
    ca.write_dir(&p_tls, "studio-0", 30);
    ca.write_dir(&r_tls, "studio-1", 30);
    let p_tls_arg = p_tls.display().to_string();
    let primary = Node::standalone(&tmp.path().join("p"), &["--tls-dir", &p_tls_arg]);
    assert!(primary.url.starts_with("https://"), "{}", primary.url);

    // Plaintext is refused: no HTTP answer on the TLS port.
    let plain = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let r = plain
        .get(format!("http://127.0.0.1:{}/healthz", primary.port))
        .send()
        .await;
    assert!(r.is_err(), "plaintext HTTP got an answer: {r:?}");

    // A user (no client certificate) reaches public routes, not internal ones.
    let user = ca.client(None);
    assert_eq!(put(&user, &primary.url, "a").await, StatusCode::CREATED);
    let digest_url = format!("{}{}", primary.url, node_api::ADMIN_DIGEST);
    let r = user.get(&digest_url).send().await.expect("answer");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_json_error(
        &r.text().await.unwrap_or_default(),
        "internal route without credentials",
    );

    // The cluster's state: a user needs the reader role; a member's certificate will do.
    let status_url = format!("{}{}", primary.url, node_api::CLUSTER_STATUS);
    let r = user.get(&status_url).send().await.expect("answer");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = user
        .get(&status_url)
        .bearer_auth(editor())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::OK);

    // A member's certificate admits; there is no cluster token to present instead.
    let member = ca.client(Some((&ca, "studio-operator")));
    let r = member.get(&digest_url).send().await.expect("answer");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "member certificate on an internal route"
    );

    // A certificate from another cluster's CA: the handshake is refused.
    let stranger = ca.client(Some((&foreign, "studio-0")));
    let r = stranger.get(&digest_url).send().await;
    assert!(
        r.is_err(),
        "a foreign client certificate got an answer: {r:?}"
    );

    // Replication over mutual TLS.
    let r_tls_arg = r_tls.display().to_string();
    let rep = replica(
        &tmp.path().join("r"),
        &primary,
        "replica-1",
        &["--tls-dir", &r_tls_arg],
    );
    assert_eq!(put(&user, &primary.url, "b").await, StatusCode::CREATED);
    converged(&member, &primary.url, &rep.url).await;

    // Renewal: a new certificate for the primary, written in place.
    let before = served_cert(&ca, &primary.url).await;
    let expiry_before = expiry_metric(&user, &primary.url).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now + 29 * 86400..=now + 31 * 86400).contains(&expiry_before),
        "the expiry metric says {expiry_before}, not about 30 days from now ({now})"
    );
    ca.write_dir(&p_tls, "studio-0", 60);
    let t0 = Instant::now();
    let mut writes = 0;
    wait_for(
        "the renewed certificate to be served",
        Duration::from_secs(20),
        || {
            let user = user.clone();
            let url = primary.url.clone();
            let before = before.clone();
            let ca = &ca;
            writes += 1;
            let path = format!("during-renewal-{writes}");
            async move {
                assert_eq!(
                    put(&user, &url, &path).await,
                    StatusCode::CREATED,
                    "a write during renewal"
                );
                (served_cert(ca, &url).await != before).then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "renewed certificate served {:.1}s after it was written; {writes} writes meanwhile all acknowledged",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(put(&user, &primary.url, "after").await, StatusCode::CREATED);
    let expiry_after = expiry_metric(&user, &primary.url).await;
    assert!(
        expiry_after > expiry_before + 29 * 86400,
        "the expiry metric did not follow the renewal: {expiry_before} → {expiry_after}"
    );
    converged(&member, &primary.url, &rep.url).await;
}

/// With TLS, members prove themselves by certificate only: a cluster token beside
/// `--tls-dir` is refused at start, and the error says what to remove.
#[test]
fn a_cluster_token_beside_tls_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("studio cluster CA");
    let tls_dir = tmp.path().join("tls");
    ca.write_dir(&tls_dir, "studio-0", 30);
    let stderr = refused_start(
        &tmp.path().join("data"),
        &["--tls-dir".as_ref(), tls_dir.as_os_str()],
        &[
            ("STUDIO_JWT_SECRET", "a-jwt-secret-for-the-test"),
            ("STUDIO_CLUSTER_TOKEN", "a-cluster-token"),
        ],
    );
    assert!(
        stderr.contains("STUDIO_CLUSTER_TOKEN") && stderr.contains("client certificate"),
        "the error names the setting to remove: {stderr}"
    );
}
