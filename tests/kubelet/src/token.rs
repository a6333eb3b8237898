//! ServiceAccount tokens (TokenRequest API, bound to the pod) and the per-pod
//! kubeconfig that points at them.
//!
//! The kubeconfig uses `tokenFile`, which client-go and kube-rs re-read, so the file
//! is simply rewritten (atomically) at 80% of the token's lifetime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};

/// A token file to keep fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTarget {
    pub path: PathBuf,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
}

/// Identity a token is requested for.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
}

/// Requests a token; returns it and its lifetime.
pub async fn request(
    client: &Client,
    id: &PodIdentity,
    target: &TokenTarget,
) -> Result<(String, Duration), String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &id.namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: target.audiences.clone(),
            expiration_seconds: Some(target.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Pod".to_string()),
                name: Some(id.pod_name.clone()),
                uid: Some(id.pod_uid.clone()),
            }),
        },
        ..Default::default()
    };
    let resp = api
        .create_token_request(&id.service_account, &PostParams::default(), &req)
        .await
        .map_err(|e| {
            format!(
                "TokenRequest for serviceaccount {}/{}: {e}",
                id.namespace, id.service_account
            )
        })?;
    let status = resp
        .status
        .ok_or_else(|| "TokenRequest returned no status".to_string())?;
    let lifetime = (crate::status::from_k8s(status.expiration_timestamp.0) - Utc::now())
        .to_std()
        .unwrap_or(Duration::from_secs(60));
    Ok((status.token, lifetime))
}

/// Writes `data` to `path` atomically (mode 0600).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))
}

/// The per-pod kubeconfig.
pub fn kubeconfig_yaml(server: &str, ca_file: &Path, token_file: &Path, namespace: &str) -> String {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "studio", "cluster": {
            "server": server,
            "certificate-authority": ca_file.display().to_string(),
        }}],
        "users": [{"name": "pod", "user": {"tokenFile": token_file.display().to_string()}}],
        "contexts": [{"name": "pod", "context": {"cluster": "studio", "user": "pod", "namespace": namespace}}],
        "current-context": "pod",
    });
    serde_yaml::to_string(&v).unwrap_or_default()
}

/// Obtains the first token for each target synchronously.
pub async fn write_initial(
    client: &Client,
    id: &PodIdentity,
    targets: &[TokenTarget],
) -> Result<Vec<Duration>, String> {
    let mut lifetimes = Vec::new();
    for t in targets {
        let (token, life) = request(client, id, t).await?;
        write_private(&t.path, token.as_bytes())?;
        lifetimes.push(life);
    }
    Ok(lifetimes)
}

/// Keeps a token file fresh until the task is aborted.
pub async fn refresh_loop(
    client: Client,
    id: PodIdentity,
    target: TokenTarget,
    first_lifetime: Duration,
) {
    let mut wait = first_lifetime.mul_f64(0.8);
    loop {
        tokio::time::sleep(wait).await;
        match request(&client, &id, &target).await {
            Ok((token, life)) => match write_private(&target.path, token.as_bytes()) {
                Ok(()) => wait = life.mul_f64(0.8),
                Err(e) => {
                    tracing::warn!(pod = %id.pod_name, error = %e, "writing refreshed token");
                    wait = Duration::from_secs(10);
                }
            },
            Err(e) => {
                tracing::warn!(pod = %id.pod_name, error = %e, "refreshing token");
                wait = Duration::from_secs(10);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_is_valid() {
        let y = kubeconfig_yaml(
            "https://10.213.0.2:6443",
            Path::new("/pki/ca.crt"),
            Path::new("/pods/x/token"),
            "ns1",
        );
        let kc: kube::config::Kubeconfig = serde_yaml::from_str(&y).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("pod"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.213.0.2:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/pki/ca.crt")
        );
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.token_file.as_deref(), Some("/pods/x/token"));
        assert_eq!(
            kc.contexts[0]
                .context
                .as_ref()
                .unwrap()
                .namespace
                .as_deref(),
            Some("ns1")
        );
    }

    #[test]
    fn private_files_are_atomic_and_0600() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/token");
        write_private(&p, b"t1").unwrap();
        write_private(&p, b"t2").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"t2");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
