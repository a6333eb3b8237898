//! Calls to the nodes' HTTP API (`studio_crds::node_api`): status and switchover.

use std::time::Duration;

use futures::future::join_all;
use studio_crds::node_api::{self, AdminResponse, ClusterStatus, ErrorBody, SwitchoverRequest};

use crate::build::HTTP_PORT;
use crate::error::{Error, Result};
use crate::plan::Member;

/// How long the node may take to hand over in a switchover.
pub const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    scheme: &'static str,
}

impl Default for NodeClient {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(SWITCHOVER_TIMEOUT + Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        NodeClient {
            http,
            scheme: "http",
        }
    }

    /// A client for a cluster with spec.tls: trusts only the cluster CA and presents
    /// the operator's certificate. Nodes are reached by pod IP, which their
    /// certificate cannot name (it exists before the pod has an address), so the
    /// chain to the cluster's own CA is what is checked, not the host name.
    pub fn tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<NodeClient> {
        let tls_err = |e: reqwest::Error| Error::Tls(e.to_string());
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(tls_err)?;
        let identity = reqwest::Identity::from_pem(format!("{cert_pem}\n{key_pem}").as_bytes())
            .map_err(tls_err)?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .danger_accept_invalid_hostnames(true)
            .connect_timeout(Duration::from_secs(1))
            .timeout(SWITCHOVER_TIMEOUT + Duration::from_secs(5))
            .build()
            .map_err(tls_err)?;
        Ok(NodeClient {
            http,
            scheme: "https",
        })
    }

    fn base(&self, m: &Member) -> Option<String> {
        let scheme = self.scheme;
        m.ip.as_ref().map(|ip| {
            if ip.contains(':') {
                format!("{scheme}://[{ip}]:{HTTP_PORT}")
            } else {
                format!("{scheme}://{ip}:{HTTP_PORT}")
            }
        })
    }

    /// Fills each member's `node` with its `/api/v1/cluster/status` (members that do
    /// not answer within a second keep `None`).
    pub async fn fill_status(&self, members: &mut [Member]) {
        let futs = members.iter().map(|m| {
            let url = self
                .base(m)
                .map(|b| format!("{b}{}", node_api::CLUSTER_STATUS));
            let http = self.http.clone();
            async move {
                let url = url?;
                let resp = http
                    .get(url)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                resp.json::<ClusterStatus>().await.ok()
            }
        });
        let results = join_all(futs).await;
        for (m, r) in members.iter_mut().zip(results) {
            m.node = r;
        }
    }

    /// Asks the primary to hand over to `target` (a pod name, which is the node id).
    pub async fn switchover(
        &self,
        primary: &Member,
        target: &str,
        token: Option<&str>,
    ) -> Result<String> {
        let base = self
            .base(primary)
            .ok_or(Error::MissingField("status.podIP of the primary"))?;
        let body = SwitchoverRequest {
            target: target.to_string(),
            timeout_ms: Some(SWITCHOVER_TIMEOUT.as_millis() as u64),
        };
        let mut req = self
            .http
            .post(format!("{base}{}", node_api::ELECTION_SWITCHOVER))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|source| Error::NodeUnreachable {
            node: primary.name.clone(),
            source,
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.message)
                .unwrap_or(text);
            return Err(Error::NodeApi {
                node: primary.name.clone(),
                status: status.as_u16(),
                message,
            });
        }
        match serde_json::from_str::<AdminResponse>(&text) {
            Ok(r) if !r.ok => Err(Error::NodeApi {
                node: primary.name.clone(),
                status: status.as_u16(),
                message: r.message,
            }),
            Ok(r) => Ok(r.message),
            Err(_) => Ok(text),
        }
    }
}
