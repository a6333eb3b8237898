//! Acceptance of cluster coordination (issue 4) on the real local cluster: studio-node
//! pods (3 data nodes + 1 arbiter, sync mode K=1) written by the test itself
//! (StatefulSets, Services, ServiceAccount/Role/RoleBinding), then: one bootstrap and one
//! primary with exact -primary/-replicas EndpointSlices; switchovers under load, two at
//! once; kill -9 of the primary 20 times under continuous sync writes; SIGSTOP/SIGCONT
//! of the primary; deletion of every pod at once with a lagging lowest ordinal (the most
//! advanced node must win). A watcher checks that no two pods are ever labelled primary,
//! and every acknowledged write is read back from the final primary. Separate clusters:
//! missing RBAC and foreign data; kube-apiserver stopped for 30 s (alone on the cluster
//! meanwhile); the primary alone cut off from the API; an async primary cut off and frozen
//! (its unreplicated writes end in its quarantine); a write only the arbiter holds, with
//! a binary, surviving the loss of the primary.
//!
//! The suite runs with TLS and authentication on, as the operator deploys real
//! clusters: each test cluster gets its own CA, made by the test (rcgen), and one member
//! certificate (server and client: members call each other with it, checking the chain
//! only, since pods are reached by IP) in Secret `<cluster>-tls`; the nodes serve HTTPS
//! only (HTTPS readiness probes). The content and status API is called with an HS256
//! user JWT (role admin) signed with the cluster's random key (Secret `<cluster>-auth`);
//! internal routes (switchover, quarantine) with a client certificate from the cluster
//! CA, which is what admits a caller there with TLS (there is no cluster token).
//!
//! Timings (failover: kill → first acknowledged write through the new primary's
//! endpoint; switchover: last write acknowledged by the old primary → first by the new)
//! are printed as p50/p99 (`COORD-BENCH` lines).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
// The API server's address and its Service's ClusterIP (what pods on the real node
// dial): cutting a pod's routes to both looks like an API server outage to that pod.
use studio_e2e::nemesis::{API_SERVER, API_SERVICE};
use studio_e2e::real_node::{IMAGE_UID, Images, real_node_placement};
use studio_e2e::{describe, is_ready, name, percentiles, pod_ip, ready_endpoints};
use studio_harness::{TestEnv, join, pod_pids, wait_for};

mod common;
use common::jwt;

const PORT: u16 = 8080;
/// Where the pods mount their Secret `<cluster>-tls` (as the operator does).
const TLS_DIR: &str = "/etc/studio/tls";
const CLUSTER_LABEL: &str = "studio.cms.io/cluster";
const ROLE_LABEL: &str = "studio.cms.io/role";
const START: Duration = Duration::from_secs(180);
const FAILOVER: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a test cluster is laid out.
struct Layout {
    data: i32,
    arbiter: bool,
    sync: bool,
    /// Verbs the node's Role grants on leases (all it needs by default).
    lease_verbs: &'static [&'static str],
}

const FULL: Layout = Layout {
    data: 3,
    arbiter: true,
    sync: true,
    lease_verbs: &["get", "list", "watch", "create", "update"],
};

/// A test cluster's secrets, made by the test: its own CA; the members' certificate
/// (one for every pod, for serving and for calling other members); the test's client
/// certificate for internal routes; the HS256 key of user JWTs.
struct Credentials {
    ca: String,
    member_cert: String,
    member_key: String,
    /// The test's client certificate and key, PEM, one after the other.
    client: String,
    jwt_key: String,
}

impl Credentials {
    /// New credentials for cluster `c` in namespace `ns`.
    fn new(c: &str, ns: &str) -> anyhow::Result<Credentials> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, format!("e2e {ns}/{c} CA"));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let issue = |cn: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let mut p = CertificateParams::new(sans)?;
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = usages;
            let key = KeyPair::generate()?;
            let cert = p.signed_by(&key, &issuer)?;
            anyhow::Ok((cert.pem(), key.serialize_pem()))
        };
        // The names the operator gives members (every pod through the headless
        // Service, the Services); peers check the chain only, as pods are reached by IP.
        let mut sans = Vec::new();
        for host in [
            format!("*.{c}-nodes"),
            format!("{c}-nodes"),
            format!("{c}-primary"),
            format!("{c}-replicas"),
        ] {
            sans.push(format!("{host}.{ns}"));
            sans.push(format!("{host}.{ns}.svc"));
            sans.push(host);
        }
        sans.push("localhost".into());
        let (member_cert, member_key) = issue(
            &format!("{c}-member"),
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        let (cert, key) = issue(
            "studio-e2e",
            vec!["studio-e2e".into()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        Ok(Credentials {
            ca: ca_pem,
            member_cert,
            member_key,
            client: format!("{cert}\n{key}"),
            jwt_key: random_hex(32)?,
        })
    }
}

/// `n` random bytes, hex-encoded.
fn random_hex(n: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// How the test reaches a cluster's nodes: HTTPS trusting only the cluster's CA (the
/// chain, not the name: pods are reached by IP, as members and the operator do); the
/// content and status API with a user JWT; internal routes with the test's client
/// certificate from the cluster CA.
#[derive(Clone)]
struct Nodes {
    /// Presents no certificate: its requests carry the JWT.
    api: reqwest::Client,
    /// Presents the test's client certificate.
    member: reqwest::Client,
    /// HS256, role admin, with `exp`.
    token: String,
}

impl Nodes {
    fn new(cr: &Credentials) -> anyhow::Result<Nodes> {
        // The timeouts of the harness's plain client, so the timings stay comparable.
        let client = |identity: Option<reqwest::Identity>| {
            let mut b = reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(cr.ca.as_bytes())?)
                .danger_accept_invalid_hostnames(true);
            if let Some(id) = identity {
                b = b.identity(id);
            }
            b.build().context("building an HTTPS client")
        };
        Ok(Nodes {
            api: client(None)?,
            member: client(Some(reqwest::Identity::from_pem(cr.client.as_bytes())?))?,
            token: jwt::token(cr.jwt_key.as_bytes(), "e2e", &["admin"]),
        })
    }

    fn url(ip: Ipv4Addr, path: &str) -> String {
        format!("https://{ip}:{PORT}{path}")
    }

    /// A request to the API of the node at `ip`, with the user JWT.
    fn api(&self, method: reqwest::Method, ip: Ipv4Addr, path: &str) -> reqwest::RequestBuilder {
        self.api
            .request(method, Self::url(ip, path))
            .bearer_auth(&self.token)
    }

    fn get(&self, ip: Ipv4Addr, path: &str) -> reqwest::RequestBuilder {
        self.api(reqwest::Method::GET, ip, path)
    }

    fn put(&self, ip: Ipv4Addr, path: &str) -> reqwest::RequestBuilder {
        self.api(reqwest::Method::PUT, ip, path)
    }

    fn post(&self, ip: Ipv4Addr, path: &str) -> reqwest::RequestBuilder {
        self.api(reqwest::Method::POST, ip, path)
    }

    /// A request to an internal route of the node at `ip`, with the client certificate.
    fn internal(
        &self,
        method: reqwest::Method,
        ip: Ipv4Addr,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.member.request(method, Self::url(ip, path))
    }
}

fn objects(c: &str, l: &Layout, cr: &Credentials) -> anyhow::Result<Vec<serde_json::Value>> {
    let sa = format!("{c}-node");
    let (tls_secret, auth_secret) = (format!("{c}-tls"), format!("{c}-auth"));
    let mode = if l.sync { "sync" } else { "async" };
    // The pushed image on the real node, with the securityContext the operator writes.
    let image = Images::load(studio_harness::cluster()?)?.node;
    let container = |arbiter: bool| {
        let mut env = vec![
            json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
            json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
            json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
            json!({"name": "STUDIO_CLUSTER", "value": c}),
            json!({"name": "STUDIO_REPLICATION_MODE", "value": mode}),
            json!({"name": "STUDIO_SYNC_REPLICAS", "value": "1"}),
            json!({"name": "STUDIO_SYNC_TIMEOUT", "value": "3s"}),
            json!({"name": "STUDIO_TLS_DIR", "value": TLS_DIR}),
            json!({"name": "STUDIO_JWT_SECRET", "valueFrom": {"secretKeyRef": {
                "name": auth_secret, "key": "jwt-key", "optional": false
            }}}),
            json!({"name": "STUDIO_LOG_FORMAT", "value": "text"}),
            json!({"name": "STUDIO_LOG", "value": "info"}),
        ];
        if arbiter {
            env.push(json!({"name": "STUDIO_ROLE", "value": "arbiter"}));
        }
        json!({
            "name": "node",
            "image": image,
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]}
            },
            "args": ["--data-dir", "/data", "--listen", format!("0.0.0.0:{PORT}")],
            "env": env,
            "ports": [{"name": "http", "containerPort": PORT}],
            "readinessProbe": {
                "httpGet": {"path": "/readyz", "port": PORT, "scheme": "HTTPS"},
                "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1, "timeoutSeconds": 1
            },
            "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "tls", "mountPath": TLS_DIR, "readOnly": true}
            ]
        })
    };
    let sts = |name: &str, component: &str, replicas: i32, arbiter: bool| {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "serviceName": format!("{c}-nodes"),
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {CLUSTER_LABEL: c, "studio.cms.io/component": component}},
                "template": {
                    "metadata": {"labels": {CLUSTER_LABEL: c, "studio.cms.io/component": component}},
                    "spec": {
                        "serviceAccountName": sa,
                        "terminationGracePeriodSeconds": 10,
                        "nodeSelector": real_node_placement()["nodeSelector"],
                        "tolerations": real_node_placement()["tolerations"],
                        "securityContext": {
                            "runAsNonRoot": true, "runAsUser": IMAGE_UID,
                            "runAsGroup": IMAGE_UID, "fsGroup": IMAGE_UID
                        },
                        "containers": [container(arbiter)],
                        "volumes": [
                            {"name": "tmp", "emptyDir": {}},
                            {"name": "tls", "secret": {
                                "secretName": tls_secret, "defaultMode": 0o440
                            }}
                        ]
                    }
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}
                }]
            }
        })
    };
    let svc = |name: String, role: Option<&str>, headless: bool| {
        let mut selector = json!({CLUSTER_LABEL: c});
        if let Some(r) = role {
            selector[ROLE_LABEL] = json!(r);
        }
        let mut spec = json!({"selector": selector, "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]});
        if headless {
            spec["clusterIP"] = json!("None");
            spec["publishNotReadyAddresses"] = json!(true);
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
    };
    let mut v = vec![
        // The files the node reads from its TLS directory.
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": tls_secret},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": cr.member_cert, "tls.key": cr.member_key, "ca.crt": cr.ca}
        }),
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": auth_secret},
            "stringData": {"jwt-key": cr.jwt_key}
        }),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}),
        // The same rules as examples/node-rbac.yaml.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": sa},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": l.lease_verbs},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]},
                {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"]}
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa}]
        }),
        svc(format!("{c}-nodes"), None, true),
        svc(format!("{c}-primary"), Some("primary"), false),
        svc(format!("{c}-replicas"), Some("replica"), false),
        sts(c, "data", l.data, false),
    ];
    if l.arbiter {
        v.push(sts(&format!("{c}-arbiter"), "arbiter", 1, true));
    }
    Ok(v)
}

/// Deploys cluster `c` with its own credentials; returns how to reach its nodes.
async fn deploy(env: &TestEnv, c: &str, l: &Layout) -> anyhow::Result<Nodes> {
    let pp = PostParams::default();
    let cr = Credentials::new(c, &env.ns)?;
    for o in objects(c, l, &cr)? {
        let kind = o["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "Secret" => {
                env.api::<Secret>()
                    .create(&pp, &serde_json::from_value(o)?)
                    .await?;
            }
            "ServiceAccount" => {
                env.api::<ServiceAccount>()
                    .create(&pp, &serde_json::from_value(o)?)
                    .await?;
            }
            "Role" => {
                env.api::<Role>()
                    .create(&pp, &serde_json::from_value(o)?)
                    .await?;
            }
            "RoleBinding" => {
                env.api::<RoleBinding>()
                    .create(&pp, &serde_json::from_value(o)?)
                    .await?;
            }
            "Service" => {
                env.api::<Service>()
                    .create(&pp, &serde_json::from_value(o)?)
                    .await?;
            }
            "StatefulSet" => {
                env.api::<StatefulSet>()
                    .create(&pp, &serde_json::from_value(o)?)
                    .await?;
            }
            k => bail!("unexpected kind {k}"),
        }
    }
    Nodes::new(&cr)
}

/// A test's own cluster, deployed and healthy.
struct Healthy {
    env: TestEnv,
    client: Nodes,
    /// Its first primary: name, address, pod.
    primary: String,
    primary_ip: Ipv4Addr,
    primary_pod: Pod,
    /// Every pod, by name.
    all: Vec<Pod>,
}

/// Deploys cluster `c` with layout `l` in the test's namespace and waits until it is
/// healthy.
async fn deploy_healthy(env: TestEnv, c: &str, l: &Layout) -> anyhow::Result<Healthy> {
    let client = deploy(&env, c, l).await?;
    let (primary, primary_ip) = wait_healthy(&env, c, START).await?;
    let all = cluster_pods(&env.api(), c).await?;
    let primary_pod = all
        .iter()
        .find(|p| name(p) == primary)
        .cloned()
        .context("the primary's pod")?;
    Ok(Healthy {
        env,
        client,
        primary,
        primary_ip,
        primary_pod,
        all,
    })
}

fn role_of(p: &Pod) -> Option<String> {
    p.metadata.labels.as_ref()?.get(ROLE_LABEL).cloned()
}

async fn cluster_pods(pods: &Api<Pod>, c: &str) -> anyhow::Result<Vec<Pod>> {
    let mut l = pods
        .list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={c}")))
        .await?
        .items;
    l.sort_by_key(name);
    Ok(l)
}

/// Waits for 4 Ready pods: exactly one labelled primary, 2 replica, 1 arbiter, the
/// -primary and -replicas EndpointSlices exact. Returns (primary name, IP).
async fn wait_healthy(
    env: &TestEnv,
    c: &str,
    timeout: Duration,
) -> anyhow::Result<(String, Ipv4Addr)> {
    let pods: Api<Pod> = env.api();
    let slices: Api<EndpointSlice> = env.api();
    wait_for(
        "4 Ready pods: one primary, 2 replicas, 1 arbiter, EndpointSlices exact",
        timeout,
        || async {
            let list = cluster_pods(&pods, c).await?;
            let summary = || {
                join(
                    list.iter()
                        .map(|p| format!("{} role={:?}", describe(p), role_of(p))),
                )
            };
            if list.len() != 4
                || !list
                    .iter()
                    .all(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
            {
                bail!("pods: [{}]", summary());
            }
            let by_role = |r: &str| -> Vec<&Pod> {
                list.iter()
                    .filter(|p| role_of(p).as_deref() == Some(r))
                    .collect()
            };
            let (prim, reps, arb) = (by_role("primary"), by_role("replica"), by_role("arbiter"));
            if prim.len() != 1 || reps.len() != 2 || arb.len() != 1 {
                bail!("roles: [{}]", summary());
            }
            let pip = pod_ip(prim[0]).context("primary without IP")?;
            let rips: BTreeSet<Ipv4Addr> = reps.iter().filter_map(|p| pod_ip(p)).collect();
            let ep_p = ready_endpoints(&slices, &format!("{c}-primary")).await?;
            let ep_r = ready_endpoints(&slices, &format!("{c}-replicas")).await?;
            if ep_p != BTreeSet::from([pip]) || ep_r != rips {
                bail!(
                    "endpoints primary {ep_p:?} replicas {ep_r:?}; pods [{}]",
                    summary()
                );
            }
            Ok((name(prim[0]), pip))
        },
    )
    .await
}

/// Continuous sequential sync-mode writes to the -primary EndpointSlice's address.
struct Writer {
    /// Acknowledged keys.
    acked: Mutex<Vec<u64>>,
    /// (sent, acknowledged, target) of each acknowledged write.
    successes: Mutex<Vec<(Instant, Instant, Ipv4Addr)>>,
    target: Mutex<Option<Ipv4Addr>>,
    stop: AtomicBool,
    /// Set by the test to hold the writes; `idle` tells that none is in flight.
    paused: AtomicBool,
    idle: AtomicBool,
    errors: Mutex<u64>,
}

impl Writer {
    fn last_success(&self) -> Option<(Instant, Ipv4Addr)> {
        lock(&self.successes).last().map(|(_, at, ip)| (*at, *ip))
    }

    /// The first acknowledged write sent after `t` (so served by a process that was
    /// alive then), by another address than `not`; returns when it was acknowledged.
    fn first_after(&self, t: Instant, not: Option<Ipv4Addr>) -> Option<(Instant, Ipv4Addr)> {
        lock(&self.successes)
            .iter()
            .find(|(sent, _, ip)| *sent > t && Some(*ip) != not)
            .map(|(_, at, ip)| (*at, *ip))
    }

    /// Waits until a write sent from now on is acknowledged by `ip`.
    async fn wait_writes_on(&self, ip: Ipv4Addr) -> anyhow::Result<()> {
        let before = Instant::now();
        wait_for(
            "writes on the current primary",
            Duration::from_secs(20),
            || async {
                match self.last_success() {
                    Some((t, at)) if t > before && at == ip => Ok(()),
                    s => bail!("last success {s:?}"),
                }
            },
        )
        .await
    }

    /// Waits for the first write sent after `t0` and acknowledged by another node than
    /// `old`; returns when, by whom, and the write gap in seconds (from `old`'s last
    /// acknowledgement).
    async fn resumed_elsewhere(
        &self,
        t0: Instant,
        old: Ipv4Addr,
    ) -> anyhow::Result<(Instant, Ipv4Addr, f64)> {
        let (t1, new_ip) = wait_for(
            "a write acknowledged by the new primary",
            FAILOVER,
            || async { self.first_after(t0, Some(old)).context("not yet") },
        )
        .await?;
        let last_old = self.last_on_before(old, t1).unwrap_or(t0);
        Ok((t1, new_ip, t1.duration_since(last_old).as_secs_f64()))
    }

    /// When `ip` last acknowledged a write before `t`.
    fn last_on_before(&self, ip: Ipv4Addr, t: Instant) -> Option<Instant> {
        lock(&self.successes)
            .iter()
            .filter(|(_, at, i)| *i == ip && *at < t)
            .map(|(_, at, _)| *at)
            .max()
    }
}

async fn track_primary_endpoint(w: Arc<Writer>, slices: Api<EndpointSlice>, c: String) {
    let svc = format!("{c}-primary");
    while !w.stop.load(Ordering::SeqCst) {
        if let Ok(eps) = ready_endpoints(&slices, &svc).await {
            *lock(&w.target) = eps.iter().next().copied().filter(|_| eps.len() == 1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write_loop(w: Arc<Writer>, client: Nodes) {
    let mut n = 0u64;
    while !w.stop.load(Ordering::SeqCst) {
        let paused = w.paused.load(Ordering::SeqCst);
        w.idle.store(paused, Ordering::SeqCst);
        if paused {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let Some(ip) = *lock(&w.target) else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        n += 1;
        let sent = Instant::now();
        let r = client
            .put(ip, &format!("/api/v1/content/e2e/k{n}"))
            .header("x-studio-direct", "true")
            .json(&json!({"type": "page", "properties": {"n": n}}))
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                lock(&w.acked).push(n);
                lock(&w.successes).push((sent, Instant::now(), ip));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => {
                *lock(&w.errors) += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Watches the role labels of the cluster's pods; records every change and any moment
/// with two pods labelled primary.
async fn watch_labels(
    pods: Api<Pod>,
    c: String,
    violations: Arc<Mutex<Vec<String>>>,
    changes: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
) {
    let cfg = watcher::Config::default().labels(&format!("{CLUSTER_LABEL}={c}"));
    let stream = watcher(pods, cfg).default_backoff();
    futures::pin_mut!(stream);
    let mut roles: BTreeMap<String, Option<String>> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let Some(ev) = ev else { break };
        match ev {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                let r = role_of(&p);
                let prev = roles.insert(name(&p), r.clone());
                if prev.as_ref() != Some(&r) {
                    *lock(&changes) += 1;
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                roles.remove(&name(&p));
            }
            _ => {}
        }
        let prim: Vec<&String> = roles
            .iter()
            .filter(|(_, r)| r.as_deref() == Some("primary"))
            .map(|(n, _)| n)
            .collect();
        if prim.len() > 1 {
            lock(&violations).push(format!("two primaries labelled: {prim:?}"));
        }
    }
}

fn signal_pod(pod: &Pod, sig: Signal) -> anyhow::Result<()> {
    let pids = pod_pids(pod)?;
    ensure!(!pids.is_empty(), "no process in the netns of {}", name(pod));
    for p in pids {
        kill(Pid::from_raw(p), sig).with_context(|| format!("kill -{sig:?} {p}"))?;
    }
    Ok(())
}

async fn status(client: &Nodes, ip: Ipv4Addr) -> anyhow::Result<serde_json::Value> {
    Ok(client
        .get(ip, "/api/v1/cluster/status")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Writes an item straight to the node at `ip`; returns the HTTP status.
async fn put_item(
    client: &Nodes,
    ip: Ipv4Addr,
    path: &str,
    properties: serde_json::Value,
) -> anyhow::Result<reqwest::StatusCode> {
    Ok(client
        .put(ip, &format!("/api/v1/content/{path}"))
        .header("x-studio-direct", "true")
        .json(&json!({"type": "page", "properties": properties}))
        .send()
        .await?
        .status())
}

/// A write refused for the node's role, not for the caller's credentials (with auth on,
/// a 401 or 403 would make "the ex-primary refused the write" hold for the wrong reason).
fn refused_by_role(code: reqwest::StatusCode) -> bool {
    !code.is_success()
        && code != reqwest::StatusCode::UNAUTHORIZED
        && code != reqwest::StatusCode::FORBIDDEN
}

/// Asks the primary at `ip` to hand its role to the replica `target`.
async fn switchover(client: &Nodes, ip: Ipv4Addr, target: &str) -> anyhow::Result<()> {
    let resp = client
        .internal(
            reqwest::Method::POST,
            ip,
            "/internal/v1/election/switchover",
        )
        .json(&json!({"target": target, "timeout_ms": 5000}))
        .send()
        .await?;
    let code = resp.status();
    let body = resp.text().await.unwrap_or_default();
    ensure!(code.is_success(), "switchover to {target}: {code} {body}");
    Ok(())
}

/// Waits until one of `ips` reports itself a writable primary; returns its address.
async fn writable_primary_among(
    client: &Nodes,
    ips: &[Ipv4Addr],
    timeout: Duration,
) -> anyhow::Result<Ipv4Addr> {
    wait_for("a writable primary", timeout, || async {
        for ip in ips {
            if let Ok(s) = status(client, *ip).await
                && s["role"] == "primary"
                && s["readOnly"] == false
            {
                return Ok(*ip);
            }
        }
        bail!("none of {ips:?} is a writable primary yet")
    })
    .await
}

/// Where the node's journal ends, as (term of its last entry, seq).
async fn position(client: &Nodes, ip: Ipv4Addr) -> anyhow::Result<(u64, u64)> {
    let s = status(client, ip).await?;
    Ok((
        s["lastTerm"].as_u64().context("status without lastTerm")?,
        s["seq"].as_u64().context("status without seq")?,
    ))
}

#[tokio::test]
async fn election_failover_switchover_and_restart() -> anyhow::Result<()> {
    let env = TestEnv::new("coordination").await?;
    let c = "studio";
    let pods: Api<Pod> = env.api();
    let client = deploy(&env, c, &FULL).await?;

    // 1. Bootstrap: one record, created by exactly one data node; one primary.
    let (first, _) = wait_healthy(&env, c, START).await?;
    let cm = env
        .api::<ConfigMap>()
        .get(&format!("{c}-bootstrap"))
        .await
        .context("the bootstrap record")?;
    let data = cm.data.unwrap_or_default();
    ensure!(
        data.contains_key("clusterId") && data.contains_key("createdBy"),
        "bootstrap record {data:?}"
    );
    let creators: Vec<String> = cluster_pods(&pods, c)
        .await?
        .iter()
        .map(name)
        .filter(|p| {
            env.pod_logs(p, 100_000)
                .contains("created the bootstrap record")
        })
        .collect();
    ensure!(creators.len() == 1, "bootstrap creators: {creators:?}");
    let lease = env.api::<Lease>().get(&format!("{c}-primary")).await?;
    let holder = lease.spec.and_then(|s| s.holder_identity);
    ensure!(
        holder.as_deref() == Some(first.as_str()),
        "Lease holder {holder:?} vs primary {first}"
    );
    eprintln!("COORD bootstrap by {creators:?}; first primary {first}");

    // Writer, endpoint tracker, label watcher.
    let w = Arc::new(Writer {
        acked: Mutex::new(Vec::new()),
        successes: Mutex::new(Vec::new()),
        target: Mutex::new(None),
        stop: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        idle: AtomicBool::new(false),
        errors: Mutex::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let changes = Arc::new(Mutex::new(0u64));
    let tasks = vec![
        tokio::spawn(track_primary_endpoint(w.clone(), env.api(), c.to_string())),
        tokio::spawn(write_loop(w.clone(), client.clone())),
        tokio::spawn(watch_labels(
            pods.clone(),
            c.to_string(),
            violations.clone(),
            changes.clone(),
            stop.clone(),
        )),
    ];
    wait_for(
        "a first acknowledged write",
        Duration::from_secs(30),
        || async {
            w.last_success()
                .map(|_| ())
                .context("no write acknowledged yet")
        },
    )
    .await?;

    // 2. Switchovers under load, to each replica in turn.
    let runs: usize = std::env::var("COORD_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut switch_gaps = Vec::new();
    for i in 0..runs {
        let (old, old_ip) = wait_healthy(&env, c, FAILOVER).await?;
        let target = cluster_pods(&pods, c)
            .await?
            .into_iter()
            .find(|p| role_of(p).as_deref() == Some("replica"))
            .map(|p| name(&p))
            .context("no replica")?;
        // Let a few writes land on the old primary first.
        w.wait_writes_on(old_ip).await?;
        let t0 = Instant::now();
        switchover(&client, old_ip, &target)
            .await
            .with_context(|| format!("switchover from {old}"))?;
        let (_, new_ip, gap) = w.resumed_elsewhere(t0, old_ip).await?;
        let new_pod = cluster_pods(&pods, c)
            .await?
            .into_iter()
            .find(|p| pod_ip(p) == Some(new_ip))
            .map(|p| name(&p))
            .unwrap_or_default();
        ensure!(
            new_pod == target,
            "switchover to {target} but writes went to {new_pod}"
        );
        eprintln!(
            "COORD switchover {i}: {old} → {target}: call {:.3}s, write gap {gap:.3}s",
            t0.elapsed().as_secs_f64()
        );
        switch_gaps.push(gap);
    }

    // 2a. Two switchovers at once, to different replicas: exactly one wins, the other
    //     is refused, and the cluster ends with the winner as its only primary.
    {
        let (old, old_ip) = wait_healthy(&env, c, FAILOVER).await?;
        let targets: Vec<String> = cluster_pods(&pods, c)
            .await?
            .iter()
            .filter(|p| role_of(p).as_deref() == Some("replica"))
            .map(name)
            .collect();
        ensure!(targets.len() == 2, "replicas {targets:?}");
        let (a, b) = tokio::join!(
            switchover(&client, old_ip, &targets[0]),
            switchover(&client, old_ip, &targets[1])
        );
        let won: Vec<&String> = [(&a, &targets[0]), (&b, &targets[1])]
            .into_iter()
            .filter(|(r, _)| r.is_ok())
            .map(|(_, t)| t)
            .collect();
        ensure!(
            won.len() == 1,
            "concurrent switchovers from {old}: {a:?} / {b:?}"
        );
        let (now, _) = wait_healthy(&env, c, FAILOVER).await?;
        ensure!(
            &now == won[0],
            "{} won the switchover but {now} is primary",
            won[0]
        );
        let refused = a.as_ref().err().or(b.as_ref().err());
        eprintln!(
            "COORD concurrent switchovers: {} won, the other was refused: {}",
            won[0],
            refused.map(|e| format!("{e:#}")).unwrap_or_default()
        );
    }

    // 2b. Deleting the primary's pod: on SIGTERM it hands over to the most advanced
    //     replica before exiting.
    let mut delete_gaps = Vec::new();
    for i in 0..runs.min(5) {
        let (old, old_ip) = wait_healthy(&env, c, Duration::from_secs(120)).await?;
        w.wait_writes_on(old_ip).await?;
        let t0 = Instant::now();
        pods.delete(&old, &DeleteParams::default()).await?;
        let (t1, new_ip, gap) = w.resumed_elsewhere(t0, old_ip).await?;
        eprintln!(
            "COORD delete-primary {i}: deleted {old}; writes resumed on {new_ip} {:.3}s after the delete, write gap {gap:.3}s",
            t1.duration_since(t0).as_secs_f64()
        );
        delete_gaps.push(gap);
    }

    // 3. kill -9 of the primary, `runs` times, under continuous sync writes.
    let mut failovers = Vec::new();
    for i in 0..runs {
        let (old, old_ip) = wait_healthy(&env, c, Duration::from_secs(120)).await?;
        w.wait_writes_on(old_ip).await?;
        let pod = pods.get(&old).await?;
        let t0 = Instant::now();
        signal_pod(&pod, Signal::SIGKILL)?;
        // The killed pod may win again after its restart if it holds the most advanced
        // journal: any primary counts, as long as the write was sent after the kill.
        let (t1, new_ip) = wait_for(
            "a write acknowledged by a new primary",
            FAILOVER,
            || async { w.first_after(t0, None).context("not yet") },
        )
        .await?;
        let secs = t1.duration_since(t0).as_secs_f64();
        eprintln!(
            "COORD failover {i}: killed {old} ({old_ip}); writes resumed on {new_ip} after {secs:.3}s"
        );
        failovers.push(secs);
    }

    // 4. SIGSTOP the primary past its lease, then SIGCONT: it takes no write afterwards
    //    and rejoins as a replica.
    let (old, old_ip) = wait_healthy(&env, c, Duration::from_secs(120)).await?;
    let pod = pods.get(&old).await?;
    let t0 = Instant::now();
    signal_pod(&pod, Signal::SIGSTOP)?;
    let resumed = wait_for(
        "a new primary while the old one is frozen",
        FAILOVER,
        || async { w.first_after(t0, Some(old_ip)).context("not yet") },
    )
    .await;
    signal_pod(&pod, Signal::SIGCONT)?;
    let (t1, _) = resumed?;
    eprintln!(
        "COORD sigstop: writes resumed after {:.3}s (lease expiry path)",
        t1.duration_since(t0).as_secs_f64()
    );
    let r = client
        .put(old_ip, "/api/v1/content/e2e/after-sigcont")
        .header("x-studio-direct", "true")
        .json(&json!({"type": "page"}))
        .send()
        .await?;
    ensure!(
        refused_by_role(r.status()),
        "the woken ex-primary {old} accepted a write: {}",
        r.status()
    );
    wait_for(
        "the woken ex-primary to rejoin as a replica",
        FAILOVER,
        || async {
            let s = status(&client, old_ip).await?;
            if s["role"] == "replica" && s["readOnly"] == true {
                Ok(())
            } else {
                bail!("status {s}")
            }
        },
    )
    .await?;
    wait_healthy(&env, c, Duration::from_secs(120)).await?;

    // 5. Delete every pod at once: back with the most advanced node as primary. The
    //    lowest ordinal would win a tie, so it is made to lag first (cut off from the
    //    primary while sync writes go on, acknowledged by the others): the position
    //    rule keeps it from being chosen until it holds the most advanced position.
    let laggard = format!("{c}-0");
    let (mut prim, mut prim_ip) = wait_healthy(&env, c, Duration::from_secs(120)).await?;
    if prim == laggard {
        switchover(&client, prim_ip, &format!("{c}-1")).await?;
        (prim, prim_ip) = wait_for(
            "the switchover away from the lowest ordinal",
            FAILOVER,
            || async {
                let (p, ip) = wait_healthy(&env, c, Duration::from_secs(1)).await?;
                ensure!(p != laggard, "{p} is still primary");
                Ok((p, ip))
            },
        )
        .await?;
    }
    let lag_pod = pods.get(&laggard).await?;
    let lag_ip = pod_ip(&lag_pod).context("laggard without IP")?;
    blackhole(&lag_pod, prim_ip, true)?;
    let behind = wait_for(
        "the lowest ordinal to fall 20 entries behind",
        Duration::from_secs(60),
        || async {
            let (lp, pp) = (
                position(&client, lag_ip).await?,
                position(&client, prim_ip).await?,
            );
            ensure!(pp.1 >= lp.1 + 20, "{laggard} at {lp:?}, {prim} at {pp:?}");
            Ok(())
        },
    )
    .await;
    // Hold the writes so that positions stand still: the most advanced position is
    // then known, and whoever wins must hold it.
    w.paused.store(true, Ordering::SeqCst);
    let mut most_advanced = (0, 0);
    let mut positions = Vec::new();
    let held = async {
        behind?;
        wait_for("the writer to hold", Duration::from_secs(10), || async {
            ensure!(w.idle.load(Ordering::SeqCst), "a write is in flight");
            Ok(())
        })
        .await?;
        for p in cluster_pods(&pods, c).await? {
            if let Some(ip) = pod_ip(&p)
                && !name(&p).contains("arbiter")
            {
                let pos = position(&client, ip).await?;
                most_advanced = most_advanced.max(pos);
                positions.push(format!("{} {pos:?}", name(&p)));
            }
        }
        anyhow::Ok(())
    }
    .await;
    let t0 = Instant::now();
    for p in cluster_pods(&pods, c).await? {
        pods.delete(&name(&p), &DeleteParams::default()).await?;
    }
    held?;
    let (last, last_ip) = wait_healthy(&env, c, Duration::from_secs(180)).await?;
    let won_at = position(&client, last_ip).await?;
    w.paused.store(false, Ordering::SeqCst);
    eprintln!(
        "COORD delete-all: back with primary {last} at {won_at:?} after {:.1}s (before: {})",
        t0.elapsed().as_secs_f64(),
        positions.join(", ")
    );
    // The winner may be the laggard only if it caught up first (from a member still
    // terminating, or from the arbiter); either way it must hold the most advanced
    // position there was (its promotion then adds one entry of its own).
    ensure!(
        won_at.1 >= most_advanced.1,
        "{last} became primary at {won_at:?}, behind the most advanced position {most_advanced:?} ({})",
        positions.join(", ")
    );
    wait_for(
        "writes after deleting every pod",
        Duration::from_secs(60),
        || async { w.first_after(t0, None).context("not yet") },
    )
    .await?;

    // Stop the load; every acknowledged write is on the final primary.
    w.stop.store(true, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    let (last2, last_ip2) = wait_healthy(&env, c, Duration::from_secs(60)).await?;
    ensure!(
        last2 == last && last_ip2 == last_ip,
        "primary moved at the end"
    );
    let acked = lock(&w.acked).clone();
    let mut missing = Vec::new();
    for chunk in acked.chunks(16) {
        let gets = chunk.iter().map(|n| {
            let client = client.clone();
            async move {
                let r = client
                    .get(last_ip, &format!("/api/v1/content/e2e/k{n}"))
                    .header("x-studio-direct", "true")
                    .send()
                    .await;
                (*n, r.map(|r| r.status().as_u16()).unwrap_or(0))
            }
        });
        for (n, code) in futures::future::join_all(gets).await {
            if code != 200 {
                missing.push((n, code));
            }
        }
    }
    let v = lock(&violations).clone();
    eprintln!(
        "COORD acknowledged writes {}, write errors {}, label changes seen {}, violations {}",
        acked.len(),
        *lock(&w.errors),
        *lock(&changes),
        v.len()
    );
    let (fp50, fp99, fmax) = percentiles(&mut failovers);
    let (sp50, sp99, smax) = percentiles(&mut switch_gaps);
    eprintln!(
        "COORD-BENCH failover (kill -9 → first acknowledged write on the new primary) n={} p50={fp50:.3}s p99={fp99:.3}s max={fmax:.3}s",
        failovers.len()
    );
    eprintln!(
        "COORD-BENCH switchover write gap n={} p50={sp50:.3}s p99={sp99:.3}s max={smax:.3}s",
        switch_gaps.len()
    );
    let (dp50, dp99, dmax) = percentiles(&mut delete_gaps);
    eprintln!(
        "COORD-BENCH delete of the primary's pod (SIGTERM hand-over) write gap n={} p50={dp50:.3}s p99={dp99:.3}s max={dmax:.3}s",
        delete_gaps.len()
    );
    ensure!(v.is_empty(), "label violations: {v:?}");
    ensure!(
        missing.is_empty(),
        "{} acknowledged writes missing on the final primary, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    env.pass().await
}

/// Waits until a container log of `pod` contains `needle`.
async fn wait_log(env: &TestEnv, pod: &str, needle: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_for(
        &format!("{pod}'s log to say {needle:?}"),
        timeout,
        || async {
            let logs = env.pod_logs(pod, 100_000);
            if logs.contains(needle) {
                Ok(())
            } else {
                bail!("{} log lines", logs.lines().count())
            }
        },
    )
    .await
}

#[tokio::test]
async fn missing_permission_and_foreign_data_fail_with_clear_messages() -> anyhow::Result<()> {
    let env = TestEnv::new("coordination-refusals").await?;
    let pods: Api<Pod> = env.api();
    // A Role without `update` on leases: the node bootstraps and creates the Lease,
    // then cannot renew it; the log names the verb and the resource.
    let norbac = Layout {
        data: 1,
        arbiter: false,
        sync: false,
        lease_verbs: &["get", "list", "watch", "create"],
    };
    deploy(&env, "norbac", &norbac).await?;
    // A healthy single node whose bootstrap record then names another cluster id.
    let solo = Layout {
        data: 1,
        arbiter: false,
        sync: false,
        lease_verbs: FULL.lease_verbs,
    };
    deploy(&env, "solo", &solo).await?;
    wait_log(
        &env,
        "norbac-0",
        "missing permission: the node's ServiceAccount may not update leases.coordination.k8s.io",
        START,
    )
    .await?;
    wait_for("solo-0 labelled primary", START, || async {
        let p = pods.get("solo-0").await?;
        if role_of(&p).as_deref() == Some("primary") && is_ready(&p) {
            Ok(())
        } else {
            bail!("{} role={:?}", describe(&p), role_of(&p))
        }
    })
    .await?;
    let cms: Api<ConfigMap> = env.api();
    let mut cm = cms.get("solo-bootstrap").await?;
    cm.data.get_or_insert_with(Default::default).insert(
        "clusterId".into(),
        "00000000-0000-4000-8000-000000000000".into(),
    );
    cms.replace("solo-bootstrap", &PostParams::default(), &cm)
        .await?;
    signal_pod(&pods.get("solo-0").await?, Signal::SIGKILL)?;
    wait_log(&env, "solo-0", "refusing to join", START).await?;
    let p = pods.get("solo-0").await?;
    ensure!(
        !is_ready(&p),
        "solo-0 with foreign data is Ready: {}",
        describe(&p)
    );
    env.pass().await
}

/// Cuts (or restores) a pod's route to `to` with a blackhole route in the pod's network
/// namespace: the pod sees `to` unreachable without disturbing anyone else's tests.
fn blackhole(pod: &Pod, to: Ipv4Addr, cut: bool) -> anyhow::Result<()> {
    let ns = studio_harness::pod_netns(pod)?;
    let verb = if cut { "add" } else { "del" };
    let to = format!("{to}/32");
    studio_harness::run_in_netns(&ns, "ip", &["route", verb, "blackhole", &to]).map(drop)
}

/// SIGSTOPs a process until dropped (SIGCONT), so a failing test never leaves it
/// frozen.
struct Frozen(Pid);

impl Frozen {
    fn new(pid: i32) -> anyhow::Result<Self> {
        let pid = Pid::from_raw(pid);
        kill(pid, Signal::SIGSTOP).with_context(|| format!("kill -STOP {pid}"))?;
        Ok(Frozen(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[tokio::test]
async fn stopping_the_api_server_turns_the_primary_read_only_before_its_lease_could_expire()
-> anyhow::Result<()> {
    // Every other test waits while the API server is stopped (and this one waits for
    // them to finish first).
    let env = TestEnv::new_exclusive("coordination-outage").await?;
    let c = "outage";
    let Healthy {
        env,
        client,
        primary,
        primary_ip: pip,
        all,
        ..
    } = deploy_healthy(env, c, &FULL).await?;
    let ips: Vec<Ipv4Addr> = all.iter().filter_map(pod_ip).collect();
    // Stop kube-apiserver for 30 s: it is frozen, so every request to it hangs, for
    // the nodes, the controllers and the kubelet alike.
    let apiserver = env.cluster.component_pid("kube-apiserver")?;
    let frozen = Frozen::new(apiserver)?;
    let t0 = Instant::now();
    let fenced = wait_for(
        "the primary to turn read-only",
        Duration::from_secs(10),
        || async {
            let s = status(&client, pip).await?;
            if s["readOnly"] == true {
                Ok(t0.elapsed())
            } else {
                bail!("status {s}")
            }
        },
    )
    .await;
    let mut writable_seen = Vec::new();
    if fenced.is_ok() {
        // During the rest of the outage no node may take writes.
        while t0.elapsed() < Duration::from_secs(30) {
            for ip in &ips {
                if let Ok(s) = status(&client, *ip).await
                    && s["role"] == "primary"
                    && s["readOnly"] == false
                {
                    writable_seen.push(format!("{ip} at {:.1}s", t0.elapsed().as_secs_f64()));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(frozen);
    let restored = Instant::now();
    let fenced = fenced?;
    eprintln!(
        "COORD api-outage: {primary} read-only {:.3}s after kube-apiserver stopped (lease 4 s)",
        fenced.as_secs_f64()
    );
    ensure!(
        fenced < Duration::from_secs(4),
        "the primary turned read-only only after {fenced:?}, when its lease could have expired"
    );
    ensure!(
        writable_seen.is_empty(),
        "writable primaries during the outage: {writable_seen:?}"
    );
    // The API is back: one primary again, and it takes writes.
    let (after, aip) = wait_healthy(&env, c, Duration::from_secs(60)).await?;
    wait_for(
        "a write after the outage",
        Duration::from_secs(30),
        || async {
            let code = put_item(&client, aip, "e2e/after-outage", json!({})).await?;
            ensure!(code.is_success(), "{code}");
            Ok(())
        },
    )
    .await?;
    let back = restored.elapsed();
    eprintln!(
        "COORD api-outage: back with primary {after} {:.1}s after kube-apiserver resumed",
        back.as_secs_f64()
    );
    // Watches retry within 3 s (node/src/coordination watch_backoff); kube-runtime's
    // default back-off once left the cluster without a primary for 26.7 s here.
    ensure!(
        back < Duration::from_secs(20),
        "the cluster took {back:?} to take writes again after the API returned"
    );
    env.pass().await
}

#[tokio::test]
async fn a_primary_cut_off_from_the_api_is_fenced_before_another_takes_over() -> anyhow::Result<()>
{
    let c = "partition";
    let Healthy {
        env,
        client,
        primary: old,
        primary_ip: old_ip,
        primary_pod: old_pod,
        all,
    } = deploy_healthy(TestEnv::new("coordination-partition").await?, c, &FULL).await?;
    let ips: Vec<Ipv4Addr> = all.iter().filter_map(pod_ip).collect();
    // Only the primary loses the API; the others still see it and its Lease expire.
    blackhole(&old_pod, API_SERVER, true)?;
    blackhole(&old_pod, API_SERVICE, true)?;
    let t0 = Instant::now();
    let mut fenced_at = None;
    let mut new_primary: Option<(Ipv4Addr, Duration)> = None;
    let mut overlaps = Vec::new();
    while t0.elapsed() < Duration::from_secs(30) && new_primary.is_none() {
        let mut writable = Vec::new();
        for ip in &ips {
            if let Ok(s) = status(&client, *ip).await {
                if *ip == old_ip && s["readOnly"] == true && fenced_at.is_none() {
                    fenced_at = Some(t0.elapsed());
                }
                if s["role"] == "primary" && s["readOnly"] == false {
                    writable.push(*ip);
                }
            }
        }
        if writable.len() > 1 {
            overlaps.push(format!(
                "{writable:?} at {:.2}s",
                t0.elapsed().as_secs_f64()
            ));
        }
        new_primary = writable
            .into_iter()
            .find(|ip| *ip != old_ip)
            .map(|ip| (ip, t0.elapsed()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blackhole(&old_pod, API_SERVER, false)?;
    blackhole(&old_pod, API_SERVICE, false)?;
    let fenced = fenced_at.context("the cut-off primary never turned read-only")?;
    let (new_ip, took_over) = new_primary.context("no other node took over within 30 s")?;
    eprintln!(
        "COORD partition: {old} read-only after {:.3}s; {new_ip} writable after {:.3}s",
        fenced.as_secs_f64(),
        took_over.as_secs_f64()
    );
    ensure!(overlaps.is_empty(), "two writable primaries: {overlaps:?}");
    ensure!(
        fenced < took_over,
        "{old} was still writable ({fenced:?}) when {new_ip} took over ({took_over:?})"
    );
    // Back on the API, the old primary stays fenced and rejoins as a replica.
    let (now, _) = wait_healthy(&env, c, Duration::from_secs(60)).await?;
    ensure!(now != old, "{old} is primary again");
    let code = put_item(&client, old_ip, "e2e/after-partition", json!({})).await?;
    ensure!(
        refused_by_role(code),
        "the ex-primary {old} accepted a write: {code}"
    );
    env.pass().await
}

const ASYNC: Layout = Layout {
    sync: false,
    ..FULL
};

/// The quarantine list of the node at `ip`, as JSON text.
async fn quarantine(client: &Nodes, ip: Ipv4Addr) -> anyhow::Result<String> {
    let resp = client
        .internal(reqwest::Method::GET, ip, "/internal/v1/admin/quarantine")
        .send()
        .await?;
    ensure!(resp.status().is_success(), "quarantine: {}", resp.status());
    Ok(resp.text().await?)
}

#[tokio::test]
async fn a_frozen_primarys_unreplicated_async_writes_end_in_quarantine() -> anyhow::Result<()> {
    let c = "frozen";
    let Healthy {
        env,
        client,
        primary: old,
        primary_ip: old_ip,
        primary_pod: old_pod,
        all,
    } = deploy_healthy(TestEnv::new("coordination-quarantine").await?, c, &ASYNC).await?;
    for i in 0..5 {
        let code = put_item(&client, old_ip, &format!("e2e/shared-{i}"), json!({"i": i})).await?;
        ensure!(code.is_success(), "write to the primary: {code}");
    }
    let others: Vec<Ipv4Addr> = all
        .iter()
        .filter(|p| name(p) != old)
        .filter_map(pod_ip)
        .collect();
    let shared = position(&client, old_ip).await?;
    wait_for(
        "every member to hold the first writes",
        Duration::from_secs(30),
        || async {
            for ip in &others {
                let p = position(&client, *ip).await?;
                ensure!(p >= shared, "{ip} at {p:?}, primary at {shared:?}");
            }
            Ok(())
        },
    )
    .await?;

    // Cut the primary off from every other member (not from the API nor from us):
    // async writes are acknowledged but reach no one.
    for ip in &others {
        blackhole(&old_pod, *ip, true)?;
    }
    let lost: Vec<String> = (0..5).map(|i| format!("e2e/unreplicated-{i}")).collect();
    let phase = async {
        for p in &lost {
            let code = put_item(&client, old_ip, p, json!({})).await?;
            ensure!(code.is_success(), "async write {p}: {code}");
        }
        for ip in &others {
            let p = position(&client, *ip).await?;
            ensure!(p == shared, "{ip} received entries through the cut: {p:?}");
        }
        // Freeze it past its lease: another member takes over and writes the same
        // sequence numbers in a new term.
        signal_pod(&old_pod, Signal::SIGSTOP)?;
        let t0 = Instant::now();
        let new_ip = writable_primary_among(&client, &others, FAILOVER).await?;
        eprintln!(
            "COORD quarantine: {new_ip} primary {:.3}s after freezing {old}",
            t0.elapsed().as_secs_f64()
        );
        for i in 0..8 {
            let path = format!("e2e/after-failover-{i}");
            wait_for("a write on the new primary", FAILOVER, || async {
                let code = put_item(&client, new_ip, &path, json!({"i": i})).await?;
                ensure!(code.is_success(), "{code}");
                Ok(())
            })
            .await?;
        }
        Ok(new_ip)
    }
    .await;
    for ip in &others {
        blackhole(&old_pod, *ip, false)?;
    }
    signal_pod(&old_pod, Signal::SIGCONT)?;
    let new_ip = phase?;

    // Awake, it takes no write, rejoins as a replica and keeps its unreplicated writes
    // in quarantine instead of dropping them.
    let code = put_item(&client, old_ip, "e2e/after-sigcont", json!({})).await?;
    ensure!(
        refused_by_role(code),
        "the woken ex-primary {old} accepted a write: {code}"
    );
    wait_for(
        "the ex-primary to rejoin with its unreplicated writes quarantined",
        FAILOVER,
        || async {
            let s = status(&client, old_ip).await?;
            ensure!(
                s["role"] == "replica" && s["readOnly"] == true,
                "status {s}"
            );
            let q = quarantine(&client, old_ip).await?;
            let missing: Vec<&String> = lost.iter().filter(|p| !q.contains(p.as_str())).collect();
            ensure!(missing.is_empty(), "not quarantined: {missing:?}; list {q}");
            Ok(())
        },
    )
    .await?;
    wait_healthy(&env, c, Duration::from_secs(120)).await?;
    let get = |ip: Ipv4Addr, path: String| {
        let client = client.clone();
        async move {
            Ok::<_, anyhow::Error>(
                client
                    .get(ip, &format!("/api/v1/content/{path}"))
                    .header("x-studio-direct", "true")
                    .send()
                    .await?
                    .status(),
            )
        }
    };
    for p in &lost {
        let code = get(new_ip, p.clone()).await?;
        ensure!(code == 404, "{p} on the new primary: {code}");
    }
    wait_for(
        "the ex-primary to hold the new primary's writes",
        FAILOVER,
        || async {
            for i in 0..8 {
                let code = get(old_ip, format!("e2e/after-failover-{i}")).await?;
                ensure!(code == 200, "after-failover-{i}: {code}");
            }
            Ok(())
        },
    )
    .await?;
    env.pass().await
}

#[tokio::test]
async fn a_write_only_the_arbiter_holds_survives_losing_the_primary() -> anyhow::Result<()> {
    let c = "arbcatch";
    let Healthy {
        env,
        client,
        primary: old,
        primary_ip: old_ip,
        primary_pod: old_pod,
        all,
    } = deploy_healthy(TestEnv::new("coordination-arbiter").await?, c, &FULL).await?;
    let replicas: Vec<Pod> = all
        .iter()
        .filter(|p| role_of(p).as_deref() == Some("replica"))
        .cloned()
        .collect();
    let replica_ips: Vec<Ipv4Addr> = replicas.iter().filter_map(pod_ip).collect();
    let arbiter_ip = all
        .iter()
        .find(|p| role_of(p).as_deref() == Some("arbiter"))
        .and_then(pod_ip)
        .context("the arbiter's address")?;
    // A binary of a few hundred KiB, not compressible, so it cannot ride inside an entry.
    let bytes: Vec<u8> = (0u32..300 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();

    // Freeze both replicas: only the arbiter can acknowledge sync writes now.
    for r in &replicas {
        signal_pod(r, Signal::SIGSTOP)?;
    }
    let phase = async {
        let resp = client
            .post(old_ip, "/api/v1/binaries")
            .header("x-studio-direct", "true")
            .body(bytes.clone())
            .send()
            .await?;
        ensure!(resp.status().is_success(), "upload: {}", resp.status());
        let up: serde_json::Value = resp.json().await?;
        let sha = up["sha256"].as_str().context("upload answer")?.to_string();
        let code = put_item(
            &client,
            old_ip,
            "e2e/with-binary",
            json!({"file": {"$binary": sha}}),
        )
        .await?;
        ensure!(
            code.is_success(),
            "sync write acknowledged by the arbiter: {code}"
        );
        let held = position(&client, old_ip).await?;
        let arb = position(&client, arbiter_ip).await?;
        ensure!(arb == held, "arbiter at {arb:?}, primary at {held:?}");
        // Lose the primary; wake the replicas, which lack the write and the binary.
        signal_pod(&old_pod, Signal::SIGSTOP)?;
        for r in &replicas {
            signal_pod(r, Signal::SIGCONT)?;
        }
        let t0 = Instant::now();
        let new_ip = writable_primary_among(&client, &replica_ips, FAILOVER).await?;
        eprintln!(
            "COORD arbiter catch-up: {new_ip} primary {:.3}s after losing {old}",
            t0.elapsed().as_secs_f64()
        );
        let item: serde_json::Value = client
            .get(new_ip, "/api/v1/content/e2e/with-binary")
            .header("x-studio-direct", "true")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ensure!(
            item.to_string().contains(&sha),
            "the item lost its binary reference: {item}"
        );
        let got = client
            .get(new_ip, &format!("/api/v1/binaries/{sha}"))
            .header("x-studio-direct", "true")
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        ensure!(
            got.as_ref() == bytes.as_slice(),
            "the new primary serves {} bytes for the binary, not the {} uploaded",
            got.len(),
            bytes.len()
        );
        Ok(())
    }
    .await;
    for r in &replicas {
        signal_pod(r, Signal::SIGCONT)?;
    }
    signal_pod(&old_pod, Signal::SIGCONT)?;
    phase?;
    // The ex-primary rejoins as a replica.
    let (now, _) = wait_healthy(&env, c, Duration::from_secs(120)).await?;
    ensure!(now != old, "{old} is primary again");
    env.pass().await
}
