//! spec.tls on the real cluster: the operator creates the cluster CA and the members'
//! certificate, the members serve only TLS and replicate over mutual TLS, the operator
//! reads their status over mutual TLS (the cluster becomes Ready), plaintext gets no
//! answer, a client certificate from another CA is refused, and the members'
//! certificate is renewed (its validity shortened for the test) while a client keeps
//! writing, without a write gap beyond the liveness bound and without losing a write.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use serde_json::json;
use studio_e2e::history::INTERNAL_PORT;

use studio_harness::{TestEnv, wait_for};

use common::*;

/// The members' certificate lives 180 s and is renewed 120 s before it expires: a
/// renewal a minute after each issuance.
const DURATION: i64 = 180;
const RENEW_BEFORE: i64 = 120;
/// Writes must not stop for longer than this during a renewal (issue 9's bound for a
/// lease of 6 s: lease + 5 s).
const MAX_GAP: Duration = Duration::from_secs(11);

async fn tls_secret(env: &TestEnv, cluster: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let s = env.api::<Secret>().get(&format!("{cluster}-tls")).await?;
    let not_after = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("studio.cms.io/not-after"))
        .cloned()
        .context("no not-after annotation")?;
    let cert = s
        .data
        .unwrap_or_default()
        .get("tls.crt")
        .map(|b| b.0.clone())
        .context("no tls.crt")?;
    Ok((not_after, cert))
}

/// The DER of the certificate a node serves now (a fresh connection).
async fn served(env: &TestEnv, cluster: &str, ip: std::net::Ipv4Addr) -> anyhow::Result<Vec<u8>> {
    let (http, _) = node_client(env, cluster, None).await?;
    let r = http
        .get(format!("https://{ip}:{NODE_PORT}{}", "/healthz"))
        .send()
        .await?;
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .context("no peer certificate")
}

/// A client certificate signed by a CA of its own (another cluster's, say).
fn foreign_identity() -> anyhow::Result<reqwest::Identity> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "another CA");
    let ca_key = KeyPair::generate()?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut p = CertificateParams::new(vec!["studio-operator".to_string()])?;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(reqwest::Identity::from_pem(
        format!("{}\n{}", cert.pem(), key.serialize_pem()).as_bytes(),
    )?)
}

#[tokio::test]
async fn tls_cluster_refuses_plaintext_and_renews_its_certificate_under_writes()
-> anyhow::Result<()> {
    let env = OpEnv::new("tls").await?;
    let cluster = "secure";
    apply(
        &env,
        "secure.json",
        &cluster_manifest(
            cluster,
            json!({"tls": {"enabled": true, "certificateDurationSeconds": DURATION, "renewBeforeSeconds": RENEW_BEFORE}}),
        ),
    )?;
    // Ready means: HTTPS probes pass, the members replicate over mutual TLS and the
    // operator read every member's status over mutual TLS.
    wait_ready(&env, cluster, 3, START).await?;
    let events = cluster_events(&env, cluster).await?;
    ensure!(
        events
            .iter()
            .any(|(r, _)| r == "CertificateAuthorityCreated")
            && events.iter().any(|(r, _)| r == "CertificateIssued"),
        "events: {events:?}"
    );
    let ip = primary_ip(&env, cluster).await?.context("no primary")?;

    // Plaintext: no HTTP answer on the port.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    let r = plain
        .get(format!("http://{ip}:{NODE_PORT}{}", "/healthz"))
        .send()
        .await;
    ensure!(r.is_err(), "plaintext HTTP got an answer: {r:?}");

    // Internal routes live on their own port (8081): the public port answers 404 for
    // them; there, no certificate → 401 JSON; another CA's certificate → refused.
    let (user, scheme) = node_client(&env, cluster, None).await?;
    ensure!(scheme == "https");
    let on_public = format!("https://{ip}:{NODE_PORT}/internal/v1/admin/digest");
    let r = user.get(&on_public).send().await?;
    ensure!(
        r.status() == 404,
        "an internal route on the public port: {}",
        r.status()
    );
    let digest = format!("https://{ip}:{INTERNAL_PORT}/internal/v1/admin/digest");
    let r = user.get(&digest).send().await?;
    ensure!(
        r.status() == 401,
        "internal route without a certificate: {}",
        r.status()
    );
    let (stranger, _) = node_client(&env, cluster, Some(foreign_identity()?)).await?;
    let r = stranger.get(&digest).send().await;
    ensure!(
        r.is_err(),
        "a foreign client certificate got an answer: {r:?}"
    );
    // Only the cluster's pods and the operator may connect to that port (enforced by
    // network plugins that implement NetworkPolicy; the local cluster's does not).
    let np = env
        .api::<NetworkPolicy>()
        .get(&format!("{cluster}-internal"))
        .await
        .context("the cluster's NetworkPolicy")?;
    let rules = np.spec.and_then(|s| s.ingress).unwrap_or_default();
    let port_of = |r: &NetworkPolicyIngressRule| {
        r.ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.port.clone())
    };
    ensure!(
        rules.len() == 2
            && port_of(&rules[0]) == Some(IntOrString::Int(NODE_PORT.into()))
            && rules[0].from.is_none()
            && port_of(&rules[1]) == Some(IntOrString::Int(INTERNAL_PORT.into()))
            && rules[1].from.as_ref().map(Vec::len) == Some(2),
        "NetworkPolicy rules: {rules:?}"
    );

    // Renewal under a writer.
    let content = Content::new(&env, cluster).await?;
    let load = Load::start(&env, cluster, content.clone(), "tls");
    let (first_not_after, first_cert) = tls_secret(&env, cluster).await?;
    let before = served(&env, cluster, ip).await?;
    let t0 = Instant::now();
    let renewed = wait_for(
        "the operator to renew the members' certificate",
        Duration::from_secs(RENEW_BEFORE as u64 + 60),
        || async {
            let (not_after, cert) = tls_secret(&env, cluster).await?;
            ensure!(
                cert != first_cert && not_after != first_not_after,
                "still {not_after}"
            );
            Ok(not_after)
        },
    )
    .await?;
    let secret_at = t0.elapsed();
    let ip_now = primary_ip(&env, cluster).await?.context("no primary")?;
    wait_for(
        "the primary to serve the renewed certificate",
        Duration::from_secs(60),
        || async {
            let now = served(&env, cluster, ip_now).await?;
            ensure!(now != before, "still the old certificate");
            Ok(())
        },
    )
    .await?;
    let served_at = t0.elapsed();
    // Keep writing a little over the renewal, then check nothing stopped or got lost.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (acked, errors) = load.stop().await;
    ensure!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    verify_acked(&env, cluster, &content, &acked).await?;
    let s = status(&env, cluster).await?;
    ensure!(
        s.ready_now(),
        "not Ready after the renewal: {}",
        s.summary()
    );
    eprintln!(
        "[tls] TIMING renewed Secret (not-after {renewed}) {:.0}s after the writer started, served by the primary {:.0}s; {} writes acknowledged, {} failed attempts",
        secret_at.as_secs_f64(),
        served_at.as_secs_f64(),
        acked.len(),
        errors.len()
    );
    // Failed attempts come in bursts only when writes stopped: none may last.
    let longest_burst = burst(&errors);
    ensure!(
        longest_burst <= MAX_GAP,
        "writes failed for {:.1}s in a row during the renewal: {:?}",
        longest_burst.as_secs_f64(),
        errors.iter().take(10).map(|(_, e)| e).collect::<Vec<_>>()
    );
    // The nodes' ServiceAccount cannot read the CA key (nor any Secret): a member can
    // use its certificate, not mint new ones.
    let sa = format!("system:serviceaccount:{}:{cluster}-node", env.ns);
    for (verb, what) in [
        ("get", format!("secret/{cluster}-ca")),
        ("list", "secrets".to_string()),
    ] {
        let out = std::process::Command::new(env.cluster.tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&env.cluster.kubeconfig)
            .args(["auth", "can-i", verb, &what, "-n", &env.ns, "--as", &sa])
            .output()?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        ensure!(
            answer == "no",
            "kubectl auth can-i {verb} {what} as {sa}: {answer:?}"
        );
    }
    // The support bundle reaches the TLS members through the API server's pod proxy;
    // their own views need a reader token (the API server keeps `Authorization`).
    let bundle = env.cluster.dir.join(format!("{}-report.tar.gz", env.ns));
    let token_file = scratch_file(&env, "reader-token", &content.token)?;
    let plugin = env.cluster.target_dir.join("kubectl-studio");
    let out = std::process::Command::new(&plugin)
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .args(["-n", &env.ns, "report", cluster, "-o"])
        .arg(&bundle)
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .with_context(|| format!("running {}", plugin.display()))?;
    ensure!(
        out.status.success(),
        "kubectl studio report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = std::process::Command::new("tar")
        .arg("tzf")
        .arg(&bundle)
        .output()?;
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let _ = std::fs::remove_file(&bundle);
    ensure!(
        listing.contains(&format!("members/{cluster}-0/cluster-status.json")),
        "the report has no member view over TLS: {listing}"
    );
    env.pass().await
}

/// The longest run of failed attempts less than 500 ms apart (the writer retries ~50 ms
/// after a failure), first to last: an upper bound of how long writes kept failing.
fn burst(errors: &[(Instant, String)]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut start: Option<Instant> = None;
    let mut prev: Option<Instant> = None;
    for (at, _) in errors {
        match (start, prev) {
            (Some(s), Some(p)) if at.saturating_duration_since(p) < Duration::from_millis(500) => {
                longest = longest.max(at.saturating_duration_since(s));
            }
            _ => start = Some(*at),
        }
        prev = Some(*at);
    }
    longest
}
