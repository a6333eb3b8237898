//! Calls to the nodes' HTTP API (`studio_crds::node_api`): status, switchover and base
//! backups.

use std::time::Duration;

use futures::future::join_all;
use studio_crds::node_api::{
    self, AdminResponse, BaseBackupList, BaseBackupRequest, BaseBackupStatus, ClusterStatus,
    ErrorBody, PruneAnswer, PruneRequest, SwitchoverRequest,
};

use crate::build::{HTTP_PORT, INTERNAL_PORT};
use crate::error::{Error, Result};
use crate::plan::Member;

/// How long the node may take to hand over in a switchover.
pub const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound of each base-backup call (start, status, list): they answer from memory or one
/// object-store read.
pub const BACKUP_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound of a prune (deletes objects in the store).
pub const PRUNE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    scheme: &'static str,
    /// The nodes' port for these calls: the internal port with TLS.
    port: i32,
    /// The cluster token, for a cluster without TLS (with TLS the client certificate
    /// is the credential).
    token: Option<String>,
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
            port: HTTP_PORT,
            token: None,
        }
    }

    /// A client for a cluster with spec.tls: trusts only the cluster CA and presents
    /// the operator's certificate. Nodes are reached by pod IP, which their
    /// certificate cannot name (it exists before the pod has an address), so the
    /// chain to the cluster's own CA is what is checked, not the host name.
    pub fn tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<NodeClient> {
        let tls_err = |e: reqwest::Error| Error::Tls(e.to_string());
        // Every certificate of `ca_pem` is trusted (a `ca.crt` may be a bundle).
        let cas = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).map_err(tls_err)?;
        if cas.is_empty() {
            return Err(Error::Tls("no CA certificate to trust".into()));
        }
        let identity = reqwest::Identity::from_pem(format!("{cert_pem}\n{key_pem}").as_bytes())
            .map_err(tls_err)?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false);
        for ca in cas {
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .identity(identity)
            .danger_accept_invalid_hostnames(true)
            .connect_timeout(Duration::from_secs(1))
            .timeout(SWITCHOVER_TIMEOUT + Duration::from_secs(5))
            .build()
            .map_err(tls_err)?;
        Ok(NodeClient {
            http,
            scheme: "https",
            port: INTERNAL_PORT,
            token: None,
        })
    }

    /// This client calling the nodes on `port` (tests: a fake node on a free port).
    pub fn with_port(mut self, port: i32) -> NodeClient {
        self.port = port;
        self
    }

    /// This client presenting the cluster token (clusters without TLS).
    pub fn with_token(mut self, token: Option<String>) -> NodeClient {
        self.token = token;
        self
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    fn base(&self, m: &Member) -> Option<String> {
        let (scheme, port) = (self.scheme, self.port);
        m.ip.as_ref().map(|ip| {
            if ip.contains(':') {
                format!("{scheme}://[{ip}]:{port}")
            } else {
                format!("{scheme}://{ip}:{port}")
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
            let req = url.map(|u| self.authorized(self.http.get(u)));
            async move {
                let resp = req?.timeout(Duration::from_secs(1)).send().await.ok()?;
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
    pub async fn switchover(&self, primary: &Member, target: &str) -> Result<String> {
        let base = self
            .base(primary)
            .ok_or(Error::MissingField("status.podIP of the primary"))?;
        let body = SwitchoverRequest {
            target: target.to_string(),
            timeout_ms: Some(SWITCHOVER_TIMEOUT.as_millis() as u64),
        };
        let req = self
            .authorized(
                self.http
                    .post(format!("{base}{}", node_api::ELECTION_SWITCHOVER)),
            )
            .json(&body);
        let resp = req.send().await.map_err(|source| Error::NodeUnreachable {
            node: primary.name.clone(),
            source,
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(api_error(&primary.name, status, text));
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

    /// Sends `req` with `timeout` to `m` and decodes a JSON answer; a non-2xx answer is
    /// [`Error::NodeApi`] with the node's message.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        m: &Member,
        req: impl FnOnce(&reqwest::Client, String) -> reqwest::RequestBuilder,
        path: &str,
        timeout: Duration,
    ) -> Result<T> {
        let base = self
            .base(m)
            .ok_or(Error::MissingField("status.podIP of the member"))?;
        let resp = self
            .authorized(req(&self.http, format!("{base}{path}")))
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| Error::NodeUnreachable {
                node: m.name.clone(),
                source,
            })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(api_error(&m.name, status, text));
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Asks `m` to take base backup `id` (the same id again answers its status).
    pub async fn start_backup(&self, m: &Member, id: &str) -> Result<BaseBackupStatus> {
        let body = BaseBackupRequest { id: id.to_string() };
        self.call(
            m,
            |c, u| c.post(u).json(&body),
            node_api::BACKUPS,
            BACKUP_CALL_TIMEOUT,
        )
        .await
    }

    /// Base backup `id` as `m` knows it (taking it, or from the archive's manifest).
    pub async fn backup_status(&self, m: &Member, id: &str) -> Result<BaseBackupStatus> {
        let path = format!("{}/{id}", node_api::BACKUP_PREFIX);
        self.call(m, |c, u| c.get(u), &path, BACKUP_CALL_TIMEOUT)
            .await
    }

    /// Every completed base backup in the cluster's archive, oldest first.
    pub async fn list_backups(&self, m: &Member) -> Result<BaseBackupList> {
        self.call(m, |c, u| c.get(u), node_api::BACKUPS, BACKUP_CALL_TIMEOUT)
            .await
    }

    /// Deletes the named base backups (and the journal segments only they needed).
    pub async fn prune_backups(&self, m: &Member, delete: Vec<String>) -> Result<PruneAnswer> {
        let body = PruneRequest { delete };
        self.call(
            m,
            |c, u| c.post(u).json(&body),
            node_api::BACKUPS_PRUNE,
            PRUNE_TIMEOUT,
        )
        .await
    }
}

/// A non-2xx answer as [`Error::NodeApi`], with the node's JSON message if it sent one.
fn api_error(node: &str, status: reqwest::StatusCode, text: String) -> Error {
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|e| e.message)
        .unwrap_or(text);
    Error::NodeApi {
        node: node.to_string(),
        status: status.as_u16(),
        message,
    }
}
