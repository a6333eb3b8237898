//! Watches the pods bound to our Nodes and runs one [`crate::pod`] worker per pod.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::pod::{Shared, run_pod};

struct Handle {
    node: String,
    tx: watch::Sender<Option<Pod>>,
    join: JoinHandle<()>,
}

/// Reserves the IPs pods already have (so that new pods do not take them before the
/// old ones are restarted after a kubelet restart).
async fn seed_ipam(sh: &Shared) {
    let api: Api<Pod> = Api::all(sh.client.clone());
    for node in &sh.settings.nodes {
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        match api.list(&lp).await {
            Ok(list) => {
                for p in list.items {
                    let ip = p
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ip.as_deref())
                        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
                    if let (Some(ip), Some(uid)) = (ip, p.metadata.uid.as_deref())
                        && sh.settings.cidr.contains(ip)
                    {
                        let mut ipam = sh.ipam.lock().unwrap_or_else(|e| e.into_inner());
                        ipam.reserve(uid, ip);
                    }
                }
            }
            Err(e) => tracing::warn!(node = %node, error = %e, "listing pods to seed IPAM"),
        }
    }
}

/// Runs until `shutdown` resolves, then stops every pod (processes, netns, veths).
pub async fn run(sh: Arc<Shared>, shutdown: impl std::future::Future<Output = ()>) {
    seed_ipam(&sh).await;
    let api: Api<Pod> = Api::all(sh.client.clone());
    let streams = sh.settings.nodes.iter().map(|node| {
        let node = node.clone();
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        watcher(api.clone(), cfg)
            .default_backoff()
            .map(move |ev| (node.clone(), ev))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let (kstop_tx, kstop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut listing: HashMap<String, HashSet<String>> = HashMap::new();
    tokio::pin!(shutdown);

    let apply = |workers: &mut HashMap<String, Handle>, node: &str, pod: Pod| {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(h) = workers.get(&uid) {
            h.tx.send_replace(Some(pod));
            return;
        }
        let (tx, rx) = watch::channel(Some(pod));
        let sh = sh.clone();
        let kstop = kstop_rx.clone();
        let done = done_tx.clone();
        let uid2 = uid.clone();
        let join = tokio::spawn(async move {
            run_pod(sh, rx, kstop).await;
            let _ = done.send(uid2);
        });
        workers.insert(
            uid,
            Handle {
                node: node.to_string(),
                tx,
                join,
            },
        );
    };

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(uid) = done_rx.recv() => {
                // A later event for the same pod (e.g. deleting, already deleted)
                // starts a fresh worker, which handles that state.
                workers.remove(&uid);
            }
            ev = events.next() => {
                let Some((node, ev)) = ev else { break };
                match ev {
                    Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => {
                        if let Some(seen) = listing.get_mut(&node)
                            && let Some(uid) = pod.metadata.uid.clone() {
                                seen.insert(uid);
                            }
                        let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
                        tracing::debug!(pod = %name, node = %node, "pod event");
                        apply(&mut workers, &node, pod);
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        if let Some(uid) = pod.metadata.uid.as_deref()
                            && let Some(h) = workers.get(uid) {
                                h.tx.send_replace(None);
                            }
                    }
                    Ok(watcher::Event::Init) => {
                        listing.insert(node.clone(), HashSet::new());
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(seen) = listing.remove(&node) {
                            for (uid, h) in &workers {
                                if h.node == node && !seen.contains(uid) {
                                    h.tx.send_replace(None);
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(node = %node, error = %e, "pod watch error; retrying"),
                }
            }
        }
    }

    tracing::info!(pods = workers.len(), "stopping all pods");
    let _ = kstop_tx.send(true);
    let joins: Vec<_> = workers.into_values().map(|h| h.join).collect();
    if tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(joins))
        .await
        .is_err()
    {
        tracing::warn!("some pods did not stop within 30s");
    }
}
