//! Acceptance tests of the foundation (issue 2) on the real local cluster: a StatefulSet
//! of the test program gets Ready pods with real addresses behind a Service, pods are
//! restarted and recreated with their PVC data, and RBAC is enforced for pods.
//!
//! The pods run the pushed `studio-testapp` image (`make images`) on the real node
//! (`real-1`: the upstream kubelet, containerd, runc, CNI) as uid 65532; the kill goes
//! through the runtime (the container's PIDs from containerd).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use reqwest::Method;
use serde_json::json;
use studio_e2e::{
    TESTAPP_PORT, app_pods, describe, is_ready, name, pod_ip, ready_endpoints,
    real_node::{
        IMAGE_UID, REAL_NODE, data_dir, owned_by_the_image_user, real_node_ready, testapp_image,
        uid_and_read_only_root,
    },
    restart_count, service, testapp_pod, testapp_statefulset,
};
use studio_harness::{TestEnv, http, http_client, join, pod_pids, wait_for};

/// The real node is Ready; the pushed testapp image (by digest).
async fn real_node_and_image(env: &TestEnv) -> anyhow::Result<String> {
    real_node_ready(env).await?;
    testapp_image(env.cluster)
}

/// First start of pods: scheduling, PVC provisioning, process start, readiness.
const START: Duration = Duration::from_secs(120);

/// Waits until the `app` pods are exactly `replicas` Ready pods with addresses.
async fn wait_ready_pods(pods: &Api<Pod>, app: &str, replicas: usize) -> anyhow::Result<Vec<Pod>> {
    wait_for(
        &format!("{replicas} Ready pods of {app} with an IP"),
        START,
        || async {
            let list = app_pods(pods, app).await?;
            let ok = list.len() == replicas
                && list.iter().all(|p| is_ready(p) && pod_ip(p).is_some())
                && list.iter().all(|p| p.metadata.deletion_timestamp.is_none());
            if ok {
                for p in &list {
                    let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
                    ensure!(
                        node == Some(REAL_NODE),
                        "{} runs on {node:?}, not {REAL_NODE}",
                        name(p)
                    );
                }
                Ok(list)
            } else {
                bail!("pods: [{}]", join(list.iter().map(describe)))
            }
        },
    )
    .await
}

fn url(ip: Ipv4Addr, path: &str) -> String {
    format!("http://{ip}:{TESTAPP_PORT}{path}")
}

#[tokio::test]
async fn statefulset_pods_are_ready_addressable_and_behind_their_service() -> anyhow::Result<()> {
    let env = TestEnv::new("foundation-sts").await?;
    let image = real_node_and_image(&env).await?;
    let pods: Api<Pod> = env.api();
    let slices: Api<EndpointSlice> = env.api();
    let web = "web";
    env.api::<Service>()
        .create(&PostParams::default(), &service(web)?)
        .await
        .context("creating the Service")?;
    env.api::<StatefulSet>()
        .create(
            &PostParams::default(),
            &testapp_statefulset(web, 3, &image)?,
        )
        .await
        .context("creating the StatefulSet")?;

    // 3 Ready pods with distinct, real (non-loopback) addresses.
    let ready = wait_ready_pods(&pods, web, 3).await?;
    let ips: BTreeMap<String, Ipv4Addr> = ready
        .iter()
        .filter_map(|p| Some((name(p), pod_ip(p)?)))
        .collect();
    eprintln!("pods: {ips:?}");
    let distinct: BTreeSet<Ipv4Addr> = ips.values().copied().collect();
    ensure!(distinct.len() == 3, "pod IPs are not distinct: {ips:?}");
    for (pod, ip) in &ips {
        ensure!(
            !ip.is_loopback() && !ip.is_unspecified() && !ip.is_link_local(),
            "{pod} has no real address: {ip}"
        );
    }

    // Each pod answers HTTP on its own address with its own name.
    let client = http_client()?;
    for (pod, ip) in &ips {
        let (status, body) = http(&client, Method::GET, &url(*ip, "/"), None).await?;
        ensure!(
            status == 200 && body == *pod,
            "GET {} answered {status} {body:?}, expected 200 {pod:?}",
            url(*ip, "/")
        );
    }

    // The Service's EndpointSlices list exactly the Ready pods.
    let all: BTreeSet<Ipv4Addr> = ips.values().copied().collect();
    wait_for(
        "the EndpointSlices of the Service to list the 3 Ready pods",
        Duration::from_secs(20),
        || async {
            let eps = ready_endpoints(&slices, web).await?;
            if eps == all {
                Ok(())
            } else {
                bail!("ready endpoints {eps:?}, pods {all:?}")
            }
        },
    )
    .await?;

    // A pod whose readiness probe fails leaves the ready endpoints; it comes back when
    // the probe passes again.
    let web1 = ips["web-1"];
    let (status, _) = http(&client, Method::POST, &url(web1, "/readyz/fail"), None).await?;
    ensure!(status == 200, "POST /readyz/fail answered {status}");
    let without_web1: BTreeSet<Ipv4Addr> = all.iter().copied().filter(|ip| *ip != web1).collect();
    wait_for(
        "web-1 to be reported not Ready and to leave the ready endpoints",
        Duration::from_secs(20),
        || async {
            let pod = pods.get("web-1").await?;
            let eps = ready_endpoints(&slices, web).await?;
            if !is_ready(&pod) && eps == without_web1 {
                Ok(())
            } else {
                bail!("{}; ready endpoints {eps:?}", describe(&pod))
            }
        },
    )
    .await?;
    let (status, _) = http(&client, Method::POST, &url(web1, "/readyz/ok"), None).await?;
    ensure!(status == 200, "POST /readyz/ok answered {status}");
    wait_for(
        "web-1 to be Ready and listed again",
        Duration::from_secs(20),
        || async {
            let eps = ready_endpoints(&slices, web).await?;
            if eps == all {
                Ok(())
            } else {
                bail!("ready endpoints {eps:?}")
            }
        },
    )
    .await?;

    // Relabelling a pod out of the Service's selector removes it from the EndpointSlice
    // within 2 s; relabelling it back adds it within 2 s.
    let web2 = ips["web-2"];
    for (label, expected) in [("no", without(&all, web2)), ("yes", all.clone())] {
        let patch = json!({"metadata": {"labels": {"serve": label}}});
        let started = Instant::now();
        pods.patch("web-2", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("relabelling web-2")?;
        wait_for(
            &format!("the EndpointSlice to follow web-2's label serve={label}"),
            Duration::from_secs(2),
            || async {
                let eps = ready_endpoints(&slices, web).await?;
                if eps == expected {
                    Ok(())
                } else {
                    bail!("ready endpoints {eps:?}, expected {expected:?}")
                }
            },
        )
        .await?;
        eprintln!(
            "EndpointSlice followed serve={label} in {} ms",
            started.elapsed().as_millis()
        );
    }
    env.pass().await
}

fn without(set: &BTreeSet<Ipv4Addr>, ip: Ipv4Addr) -> BTreeSet<Ipv4Addr> {
    set.iter().copied().filter(|i| *i != ip).collect()
}

/// Every status the watch delivers for one pod: (uid, ready, restart count).
type Seen = Arc<Mutex<Vec<(String, bool, i32)>>>;

fn record(seen: &Seen, pod: &Pod) {
    if let Ok(mut s) = seen.lock() {
        s.push((
            pod.metadata.uid.clone().unwrap_or_default(),
            is_ready(pod),
            restart_count(pod),
        ));
    }
}

#[tokio::test]
async fn killed_or_deleted_pods_come_back_with_their_pvc_data() -> anyhow::Result<()> {
    let env = TestEnv::new("foundation-restart").await?;
    let image = real_node_and_image(&env).await?;
    let pods: Api<Pod> = env.api();
    let app = "store";
    env.api::<StatefulSet>()
        .create(
            &PostParams::default(),
            &testapp_statefulset(app, 1, &image)?,
        )
        .await
        .context("creating the StatefulSet")?;
    let pod = wait_ready_pods(&pods, app, 1).await?.remove(0);
    let ip = pod_ip(&pod).context("pod without IP")?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let client = http_client()?;

    // Write into the PVC through the program.
    let content = format!("written by {} at {:?}", env.ns, Instant::now());
    let (status, body) = http(
        &client,
        Method::PUT,
        &url(ip, "/data"),
        Some(content.clone()),
    )
    .await?;
    ensure!(status == 200, "PUT /data answered {status} {body:?}");
    // The image's user wrote it into the PVC (the kubelet applied fsGroup to the volume).
    let dir = data_dir(&env, "store-0").await?;
    owned_by_the_image_user(&dir)?;

    // Watch the pod from now on, so that a short NotReady spell is seen too.
    let seen: Seen = Arc::default();
    let watch = {
        let seen = seen.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let cfg = watcher::Config::default().fields("metadata.name=store-0");
            let mut stream = watcher(pods, cfg).applied_objects().boxed();
            while let Some(ev) = stream.next().await {
                if let Ok(p) = ev {
                    record(&seen, &p);
                }
            }
        })
    };
    // Make sure the watch is established before the kill.
    wait_for(
        "the pod watch to deliver the pod",
        Duration::from_secs(10),
        || async {
            let n = seen.lock().map(|s| s.len()).unwrap_or(0);
            if n > 0 { Ok(()) } else { bail!("no event yet") }
        },
    )
    .await?;

    // Kill the pod's process (the container's, from containerd; not the sandbox).
    let pids = pod_pids(&pod)?;
    ensure!(!pids.is_empty(), "no running container process in the pod");
    for pid in &pids {
        let (uid, read_only) = uid_and_read_only_root(*pid)?;
        ensure!(
            uid == IMAGE_UID && read_only,
            "pid {pid} runs as uid {uid} (read-only root: {read_only}), expected {IMAGE_UID} on a read-only root"
        );
    }
    eprintln!("killing {app}-0's processes {pids:?}");
    for pid in &pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL)
            .with_context(|| format!("kill -9 {pid}"))?;
    }
    let restarted = wait_for(
        "store-0 to be restarted (restartCount 1) and Ready again",
        START,
        || async {
            let p = pods.get("store-0").await?;
            if p.metadata.uid.as_deref() == Some(uid.as_str())
                && restart_count(&p) >= 1
                && is_ready(&p)
            {
                Ok(p)
            } else {
                bail!("{}", describe(&p))
            }
        },
    )
    .await?;
    ensure!(
        restart_count(&restarted) == 1,
        "restartCount is {}, expected 1 after one kill",
        restart_count(&restarted)
    );
    let history = seen.lock().map(|s| s.clone()).unwrap_or_default();
    ensure!(
        history.iter().any(|(u, ready, _)| *u == uid && !ready),
        "the pod was never reported not Ready after its process was killed; statuses seen: {history:?}"
    );
    watch.abort();
    let ip = pod_ip(&restarted).context("restarted pod without IP")?;
    let (status, body) = http(&client, Method::GET, &url(ip, "/data"), None).await?;
    ensure!(
        status == 200 && body == content,
        "after the restart GET /data answered {status} {body:?}, expected {content:?}"
    );

    // Delete the pod: the StatefulSet controller recreates it and it finds its data.
    pods.delete("store-0", &DeleteParams::default())
        .await
        .context("deleting store-0")?;
    let recreated = wait_for(
        "store-0 to be recreated (new uid) and Ready",
        START,
        || async {
            let p = pods.get("store-0").await?;
            if p.metadata.uid.as_deref() != Some(uid.as_str())
                && is_ready(&p)
                && pod_ip(&p).is_some()
            {
                Ok(p)
            } else {
                bail!("{} uid={:?}", describe(&p), p.metadata.uid)
            }
        },
    )
    .await?;
    let ip = pod_ip(&recreated).context("recreated pod without IP")?;
    let (status, body) = http(&client, Method::GET, &url(ip, "/data"), None).await?;
    ensure!(
        status == 200 && body == content,
        "after re-creation GET /data answered {status} {body:?}, expected {content:?}"
    );
    env.pass().await
}

#[tokio::test]
async fn pods_are_held_to_their_service_account_rbac() -> anyhow::Result<()> {
    let env = TestEnv::new("foundation-rbac").await?;
    let image = real_node_and_image(&env).await?;
    let pods: Api<Pod> = env.api();
    let sa = "reader";
    env.api::<ServiceAccount>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": sa}}))?,
        )
        .await
        .context("creating the ServiceAccount")?;
    pods.create(&PostParams::default(), &testapp_pod("probe", sa, &image)?)
        .await
        .context("creating the pod")?;
    let pod = wait_ready_pods(&pods, "probe", 1).await?.remove(0);
    let ip = pod_ip(&pod).context("pod without IP")?;
    let client = http_client()?;
    let list_pods = || async {
        let (status, body) = http(&client, Method::GET, &url(ip, "/list-pods"), None).await?;
        ensure!(status == 200, "GET /list-pods answered {status} {body:?}");
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("GET /list-pods body {body:?}"))?;
        Ok::<_, anyhow::Error>((v["status"].as_u64().unwrap_or(0), body))
    };

    // Without a Role the API server refuses.
    let (status, body) = list_pods().await?;
    ensure!(
        status == 403,
        "listing pods as {sa} without a Role gave {body}, expected status 403"
    );

    // With a Role that allows it (RBAC takes effect after the authorizer's cache sees it).
    env.api::<Role>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
            }))?,
        )
        .await
        .context("creating the Role")?;
    env.api::<RoleBinding>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "pod-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": env.ns}]
            }))?,
        )
        .await
        .context("creating the RoleBinding")?;
    wait_for(
        "the pod to list pods once the Role allows it",
        Duration::from_secs(15),
        || async {
            let (status, body) = list_pods().await?;
            if status == 200 {
                Ok(())
            } else {
                bail!("{body}")
            }
        },
    )
    .await?;
    env.pass().await
}
