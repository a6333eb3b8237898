//! Where the members' certificates come from (spec.tls), on the real cluster:
//!
//! * `issuerRef`: a real cert-manager (its controller built from the Go module proxy
//!   by `scripts/build-cert-manager.sh`, run as a host process against the cluster)
//!   with a self-signed Issuer → a CA Certificate → a CA Issuer; the operator's
//!   Certificates are issued by it, the cluster becomes Ready (members replicate and
//!   the operator reads them over mutual TLS with cert-manager's certificates), content
//!   is written and read over TLS, and what the members serve chains to cert-manager's
//!   CA and to nothing else;
//! * `caSecret`: a CA generated here; the same, and the user's Secret is left as it was.
//!
//! In both cases the operator generates no CA of its own (`<name>-ca`).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::json;
use studio_harness::{TestEnv, wait_for};

use common::*;

/// 2 data nodes, no arbiter, async: members still replicate to each other over mutual
/// TLS, with half the pods of the default manifest (the machine has 2 cores).
fn small(tls: serde_json::Value) -> serde_json::Value {
    json!({
        "nodes": 2,
        "arbiter": {"enabled": false},
        "replication": {"mode": "async", "syncReplicas": 1},
        "tls": tls,
    })
}

// ---- cert-manager as a host process -------------------------------------------------

/// The cert-manager controller (killed on drop), watching one namespace.
struct CertManager {
    child: std::sync::Mutex<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl CertManager {
    /// Installs the release's CRDs and starts the controller for `ns`.
    fn start(env: &TestEnv) -> anyhow::Result<CertManager> {
        let bin_dir = &env.cluster.cp_bin;
        let bin = bin_dir.join("cert-manager-controller");
        let crds = bin_dir.join("cert-manager-crds.yaml");
        ensure!(
            bin.is_file() && crds.is_file(),
            "{} or {} missing: run scripts/build-cert-manager.sh (make controlplane builds it)",
            bin.display(),
            crds.display()
        );
        // Server-side: the CRDs are too large for the last-applied annotation.
        studio_harness::kubectl(
            env.cluster,
            [
                "apply".as_ref(),
                "--server-side".as_ref(),
                "--force-conflicts".as_ref(),
                "-f".as_ref(),
                crds.as_os_str(),
            ],
        )
        .context("installing cert-manager's CRDs")?;
        studio_harness::kubectl(
            env.cluster,
            [
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/certificates.cert-manager.io",
                "crd/certificaterequests.cert-manager.io",
                "crd/issuers.cert-manager.io",
                "crd/clusterissuers.cert-manager.io",
            ],
        )?;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("cert-manager.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&bin)
            .arg(format!("--kubeconfig={}", env.cluster.kubeconfig.display()))
            .arg(format!("--namespace={}", env.ns))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        eprintln!(
            "[certificates] cert-manager controller pid {} (log {})",
            child.id(),
            log.display()
        );
        Ok(CertManager {
            child: std::sync::Mutex::new(child),
            log,
            _dir: dir,
        })
    }

    fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Fails if the process has exited.
    fn alive(&self) -> anyhow::Result<()> {
        let status = match self.child.lock() {
            Ok(mut c) => c.try_wait()?,
            Err(_) => None,
        };
        if let Some(st) = status {
            bail!(
                "the cert-manager controller exited ({st}); its log:\n{}",
                self.log_tail(40)
            );
        }
        Ok(())
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        if let Ok(c) = self.child.get_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cert_manager_resource(kind: &str, plural: &str) -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "cert-manager.io".into(),
        version: "v1".into(),
        api_version: "cert-manager.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Status of a cert-manager object's Ready condition ("True", "False: reason", ...).
async fn ready_condition(env: &TestEnv, kind: &str, plural: &str, name: &str) -> String {
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &cert_manager_resource(kind, plural),
    );
    match api.get_opt(name).await {
        Ok(Some(o)) => o.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| {
                format!(
                    "{}: {} {}",
                    c["status"].as_str().unwrap_or_default(),
                    c["reason"].as_str().unwrap_or_default(),
                    c["message"].as_str().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "no Ready condition".into()),
        Ok(None) => "absent".into(),
        Err(e) => format!("error: {e}"),
    }
}

// ---- shared checks ------------------------------------------------------------------

fn secret_text(s: &Secret, key: &str) -> anyhow::Result<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .with_context(|| {
            format!(
                "Secret {} has no {key}",
                s.metadata.name.as_deref().unwrap_or_default()
            )
        })
}

/// A TLS handshake with the node at `ip` trusting only `ca_pem` (any host name):
/// succeeds only if the certificate it serves chains to that CA.
async fn chains_to(ip: std::net::Ipv4Addr, ca_pem: &str) -> anyhow::Result<()> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .danger_accept_invalid_hostnames(true)
        .timeout(Duration::from_secs(5));
    for c in reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())? {
        b = b.add_root_certificate(c);
    }
    let r = b
        .build()?
        .get(format!("https://{ip}:{NODE_PORT}/healthz"))
        .send()
        .await?;
    ensure!(r.status().is_success(), "healthz: {}", r.status());
    Ok(())
}

/// A CA of its own (PEM certificate, PKCS#8 key).
fn new_ca(cn: &str) -> anyhow::Result<(String, String)> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Ready, content written and read over TLS, the served certificate chains to `ca_pem`
/// (and not to another CA), no generated CA.
async fn serves_from(env: &TestEnv, cluster: &str, ca_pem: &str) -> anyhow::Result<()> {
    let ip = primary_ip(env, cluster).await?.context("no primary")?;
    let content = Content::new(env, cluster).await?;
    ensure!(content.scheme == "https", "content over {}", content.scheme);
    content.put(ip, "certificates/hello", "over tls").await?;
    let back = content.get(ip, "certificates/hello").await?;
    ensure!(
        back.as_deref() == Some("over tls"),
        "read back {back:?} from the primary"
    );
    // Every member, the replica too, serves a certificate from that CA.
    for pod in cluster_pods(env, cluster).await? {
        let ip = studio_e2e::pod_ip(&pod).context("a member without an IP")?;
        chains_to(ip, ca_pem).await.with_context(|| {
            format!(
                "{} does not serve a certificate from the expected CA",
                studio_e2e::name(&pod)
            )
        })?;
    }
    let (other, _) = new_ca("another CA")?;
    ensure!(
        chains_to(ip, &other).await.is_err(),
        "the primary's certificate was accepted by a client trusting another CA"
    );
    let members = env.api::<Secret>().get(&format!("{cluster}-tls")).await?;
    ensure!(
        secret_text(&members, "ca.crt")?.contains(ca_pem.trim()),
        "Secret {cluster}-tls does not trust the expected CA"
    );
    ensure!(
        env.api::<Secret>()
            .get_opt(&format!("{cluster}-ca"))
            .await?
            .is_none(),
        "the operator generated a CA (Secret {cluster}-ca) although one was given"
    );
    let events = cluster_events(env, cluster).await?;
    ensure!(
        !events
            .iter()
            .any(|(r, _)| r == "CertificateAuthorityCreated"),
        "events: {events:?}"
    );
    Ok(())
}

// ---- the tests ----------------------------------------------------------------------

#[tokio::test]
async fn cert_manager_issues_the_members_and_operator_certificates() -> anyhow::Result<()> {
    let env = OpEnv::new("certmgr").await?;
    let cm = CertManager::start(&env)?;
    let r = async {
        let issuers = r#"
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: selfsigned}
spec: {selfSigned: {}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: studio-ca}
spec:
  isCA: true
  commonName: studio e2e cert-manager CA
  secretName: studio-ca
  duration: 87600h
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {name: selfsigned, kind: Issuer, group: cert-manager.io}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: studio-ca}
spec: {ca: {secretName: studio-ca}}
"#;
        apply(&env, "issuers.yaml", issuers)?;
        wait_for(
            "cert-manager: the CA Issuer Ready",
            Duration::from_secs(90),
            || async {
                cm.alive()?;
                let s = ready_condition(&env, "Issuer", "issuers", "studio-ca").await;
                ensure!(
                    s.starts_with("True"),
                    "Issuer studio-ca: {s}; Certificate studio-ca: {}",
                    ready_condition(&env, "Certificate", "certificates", "studio-ca").await
                );
                Ok(())
            },
        )
        .await?;
        let ca = env.api::<Secret>().get("studio-ca").await?;
        let ca_pem = secret_text(&ca, "tls.crt")?;

        let cluster = "cm";
        apply(
            &env,
            "cm.json",
            &cluster_manifest(
                cluster,
                small(json!({"enabled": true, "issuerRef": {"name": "studio-ca"}})),
            ),
        )?;
        let ready = wait_ready(&env, cluster, 2, START).await;
        cm.alive()?;
        if let Err(e) = ready {
            let members =
                ready_condition(&env, "Certificate", "certificates", &format!("{cluster}-members"))
                    .await;
            let client = ready_condition(
                &env,
                "Certificate",
                "certificates",
                &format!("{cluster}-operator-client"),
            )
            .await;
            return Err(e.context(format!(
                "Certificate {cluster}-members: {members}; {cluster}-operator-client: {client}; cert-manager log:\n{}",
                cm.log_tail(30)
            )));
        }
        // The operator's Certificates: Ready, owned by the StudioCluster, with the
        // operator's labels on the Secret cert-manager wrote.
        let certs: Api<DynamicObject> = Api::namespaced_with(
            env.client.clone(),
            &env.ns,
            &cert_manager_resource("Certificate", "certificates"),
        );
        for name in [format!("{cluster}-members"), format!("{cluster}-operator-client")] {
            let c = certs.get(&name).await?;
            let owner = c
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .any(|o| o.kind == "StudioCluster" && o.name == cluster);
            ensure!(owner, "Certificate {name} is not owned by the StudioCluster");
            let s = ready_condition(&env, "Certificate", "certificates", &name).await;
            ensure!(s.starts_with("True"), "Certificate {name}: {s}");
        }
        let members = env.api::<Secret>().get(&format!("{cluster}-tls")).await?;
        ensure!(
            members
                .metadata
                .labels
                .unwrap_or_default()
                .get("studio.cms.io/cluster")
                .map(String::as_str)
                == Some(cluster),
            "Secret {cluster}-tls lacks the cluster label"
        );
        serves_from(&env, cluster, &ca_pem).await?;
        eprintln!("[certificates] cert-manager: Ready, content over TLS, chain to its CA");
        Ok(())
    }
    .await;
    if r.is_err() {
        eprintln!("[certificates] cert-manager log tail:\n{}", cm.log_tail(40));
    }
    drop(cm);
    r?;
    env.pass().await
}

#[tokio::test]
async fn a_user_ca_issues_the_members_certificate_and_stays_untouched() -> anyhow::Result<()> {
    let env = OpEnv::new("byoca").await?;
    let (ca_pem, key_pem) = new_ca("studio e2e user CA")?;
    let secrets = env.api::<Secret>();
    let user = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("my-ca".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                (
                    "tls.crt".to_string(),
                    ByteString(ca_pem.clone().into_bytes()),
                ),
                ("tls.key".to_string(), ByteString(key_pem.into_bytes())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let created = secrets.create(&PostParams::default(), &user).await?;
    let cluster = "byo";
    apply(
        &env,
        "byo.json",
        &cluster_manifest(
            cluster,
            small(json!({"enabled": true, "caSecret": "my-ca"})),
        ),
    )?;
    wait_ready(&env, cluster, 2, START).await?;
    serves_from(&env, cluster, &ca_pem).await?;
    // The user's Secret: same content, same version, nobody else's fields or owner.
    let now = secrets.get("my-ca").await?;
    ensure!(
        now.metadata.resource_version == created.metadata.resource_version
            && now.data == created.data
            && now.metadata.owner_references.is_none(),
        "Secret my-ca was changed: {:?}",
        now.metadata
    );
    let managers: Vec<String> = now
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    ensure!(
        !managers.iter().any(|m| m.contains("studio")),
        "managers of my-ca: {managers:?}"
    );
    let events = cluster_events(&env, cluster).await?;
    ensure!(
        events.iter().any(|(r, _)| r == "CertificateIssued"),
        "events: {events:?}"
    );
    eprintln!("[certificates] caSecret: Ready, content over TLS, chain to the user CA");
    env.pass().await
}
