//! The two watches of a node: the pods of its cluster (a reflector store, see
//! [`super::members`]) and the Lease (recorded by [`Coordinator::observe`]). Both wake
//! the election loop.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use studio_crds::labels;

use super::Coordinator;
use super::settings::watch_backoff;

impl Coordinator {
    pub(super) async fn watch_pods(self: Arc<Self>, writer: reflector::store::Writer<Pod>) {
        let cfg =
            watcher::Config::default().labels(&format!("{}={}", labels::CLUSTER, self.s.cluster));
        let stream = watcher(self.pods_api.clone(), cfg)
            .backoff(watch_backoff())
            .reflect(writer);
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    self.pods.synced.store(true, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(e) => self.warn(
                    "watch-pods",
                    format!(
                        "watching pods failed: {e} (the node needs list and watch on pods; see examples/node-rbac.yaml)"
                    ),
                ),
            }
            self.wake.notify_one();
        }
    }

    pub(super) async fn watch_lease(self: Arc<Self>) {
        let cfg =
            watcher::Config::default().fields(&format!("metadata.name={}", self.lease_name()));
        let stream = watcher(self.leases.clone(), cfg).backoff(watch_backoff());
        futures::pin_mut!(stream);
        let mut seen_in_init = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => seen_in_init = false,
                Ok(watcher::Event::InitApply(l)) => {
                    seen_in_init = true;
                    self.observe(Some(&l));
                }
                Ok(watcher::Event::InitDone) => {
                    if !seen_in_init {
                        self.observe(None);
                    }
                    self.view.synced.store(true, Ordering::SeqCst);
                }
                Ok(watcher::Event::Apply(l)) => self.observe(Some(&l)),
                Ok(watcher::Event::Delete(_)) => self.observe(None),
                Err(e) => self.warn(
                    "watch-lease",
                    format!(
                        "watching the Lease failed: {e} (the node needs list and watch on leases.coordination.k8s.io; see examples/node-rbac.yaml)"
                    ),
                ),
            }
        }
    }
}
