//! `kubectl studio report`: a support bundle of one cluster as a .tar.gz — the
//! StudioCluster (spec and status), Events, pods, StatefulSets, the primary Lease,
//! every member's own view (`/api/v1/cluster/status` through the API server's pod
//! proxy) and its recent log, plus the members' logs merged by time.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, ResourceExt};
use studio_crds::{StudioCluster, labels, names, node_api};

/// One file of the bundle.
pub struct Entry {
    pub path: String,
    pub data: Vec<u8>,
}

fn yaml<T: serde::Serialize>(path: String, v: &T) -> Entry {
    let data = serde_yaml::to_string(v)
        .unwrap_or_else(|e| format!("# could not render: {e}\n"))
        .into_bytes();
    Entry { path, data }
}

fn text(path: String, s: String) -> Entry {
    Entry {
        path,
        data: s.into_bytes(),
    }
}

/// What could not be collected is written down in the bundle, never fatal: a support
/// bundle of a broken cluster is when it is needed most.
fn or_note<T>(r: Result<T, kube::Error>, what: &str, notes: &mut Vec<String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!("{what}: {e}"));
            None
        }
    }
}

/// Collects the bundle entries of `cluster` in `ns`; `tail` log lines per member.
pub async fn collect(
    client: &Client,
    ns: &str,
    cluster: &str,
    tail: i64,
    token: Option<&str>,
) -> anyhow::Result<Vec<Entry>> {
    let scs: Api<StudioCluster> = Api::namespaced(client.clone(), ns);
    let sc = scs.get(cluster).await?;
    let mut notes = Vec::new();
    let mut out = vec![yaml("studiocluster.yaml".into(), &sc)];
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{}={cluster}", labels::CLUSTER);
    let pods = or_note(
        pods_api
            .list(&ListParams::default().labels(&selector))
            .await,
        "pods",
        &mut notes,
    )
    .map(|l| l.items)
    .unwrap_or_default();
    out.push(yaml("pods.yaml".into(), &pods));
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    if let Some(l) = or_note(
        sts.list(&ListParams::default().labels(&format!("{}={cluster}", labels::CLUSTER)))
            .await,
        "statefulsets",
        &mut notes,
    ) {
        out.push(yaml("statefulsets.yaml".into(), &l.items));
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    if let Some(Some(l)) = or_note(
        leases.get_opt(&names::primary_lease(cluster)).await,
        "lease",
        &mut notes,
    ) {
        out.push(yaml("lease.yaml".into(), &l));
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    if let Some(l) = or_note(
        events.list(&ListParams::default()).await,
        "events",
        &mut notes,
    ) {
        let pod_names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        let mine: Vec<&Event> = l
            .items
            .iter()
            .filter(|e| {
                e.involved_object
                    .name
                    .as_ref()
                    .is_some_and(|n| n == cluster || pod_names.contains(n))
            })
            .collect();
        out.push(yaml("events.yaml".into(), &mine));
    }
    let mut logs = Vec::new();
    for p in &pods {
        let name = p.name_any();
        // The member's own view, through the API server (the client need not reach
        // pod addresses); `https:` for the pods of a cluster with spec.tls.
        let scheme = if p
            .labels()
            .get(studio_crds::labels::TLS)
            .is_some_and(|v| v == "true")
        {
            "https:"
        } else {
            ""
        };
        let path = format!(
            "/api/v1/namespaces/{ns}/pods/{scheme}{name}:{}/proxy{}",
            crate::build::HTTP_PORT,
            node_api::CLUSTER_STATUS
        );
        // The API server owns `Authorization` on this path; the node also reads the
        // reader token from `X-Studio-Authorization`.
        match token {
            Some(t) => match member_view(client, &path, t).await {
                Ok(body) => out.push(text(format!("members/{name}/cluster-status.json"), body)),
                Err(e) => notes.push(format!("{name} cluster status: {e}")),
            },
            None => notes.push(format!(
                "{name} cluster status: skipped (pass --token-file with a reader token)"
            )),
        }
        let lp = LogParams {
            container: Some(crate::build::CONTAINER.into()),
            tail_lines: Some(tail),
            ..Default::default()
        };
        if let Some(log) = or_note(
            pods_api.logs(&name, &lp).await,
            &format!("{name} log"),
            &mut notes,
        ) {
            out.push(text(format!("members/{name}/studio.log"), log.clone()));
            logs.push((name, log));
        }
    }
    out.push(text(
        "logs-merged.log".into(),
        crate::cli::merge_logs(&logs).join("\n") + "\n",
    ));
    out.push(text(
        "NOTES.txt".into(),
        if notes.is_empty() {
            "everything was collected\n".into()
        } else {
            format!("not collected:\n{}\n", notes.join("\n"))
        },
    ));
    Ok(out)
}

async fn member_view(client: &Client, path: &str, token: &str) -> anyhow::Result<String> {
    let req = http::Request::get(path)
        .header(node_api::ALT_AUTHORIZATION, format!("Bearer {token}"))
        .body(Vec::new())?;
    Ok(client.request_text(req).await?)
}

/// The entries as a .tar.gz under a top directory `prefix/`.
pub fn tar_gz(prefix: &str, entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(e.data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("{prefix}/{}", e.path), e.data.as_slice())?;
    }
    tar.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_bundle_is_a_tar_gz_with_every_entry_under_its_prefix() -> std::io::Result<()> {
        let entries = vec![
            text("studiocluster.yaml".into(), "kind: StudioCluster\n".into()),
            text(
                "members/demo-0/studio.log".into(),
                "{\"message\":\"hi\"}\n".into(),
            ),
        ];
        let bytes = tar_gz("demo-report", &entries)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut seen = Vec::new();
        for f in archive.entries()? {
            let mut f = f?;
            let path = f.path()?.to_string_lossy().to_string();
            let mut body = String::new();
            f.read_to_string(&mut body)?;
            seen.push((path, body));
        }
        assert_eq!(
            seen,
            [
                (
                    "demo-report/studiocluster.yaml".to_string(),
                    "kind: StudioCluster\n".to_string()
                ),
                (
                    "demo-report/members/demo-0/studio.log".to_string(),
                    "{\"message\":\"hi\"}\n".to_string()
                )
            ]
        );
        Ok(())
    }
}
