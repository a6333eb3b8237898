//! A real Prometheus for the monitoring suite: its scrape configuration is derived from
//! the chart's own PodMonitor and ServiceMonitor (as the Prometheus Operator derives
//! it: Kubernetes service discovery, keep-relabelings for the selectors and the port,
//! the standard target labels, then the monitor's relabelings), and it evaluates the
//! chart's alert rules file unchanged.
//!
//! The binary is built from the Go module proxy by `scripts/build-prometheus.sh`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

/// Prometheus' label-name form of a Kubernetes label key (`studio.cms.io/role` →
/// `studio_cms_io_role`), as in `__meta_kubernetes_pod_label_<name>`.
fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A monitor's relabeling (camelCase, Prometheus Operator API) in Prometheus' own
/// snake_case form.
fn relabeling(r: &Value) -> anyhow::Result<Value> {
    let obj = r.as_object().context("a relabeling is not an object")?;
    let mut out = serde_json::Map::new();
    for (k, v) in obj {
        let key = match k.as_str() {
            "sourceLabels" => "source_labels",
            "targetLabel" => "target_label",
            "separator" | "regex" | "modulus" | "replacement" | "action" => k.as_str(),
            other => bail!("relabeling field {other} is not translated"),
        };
        out.insert(key.to_string(), v.clone());
    }
    Ok(Value::Object(out))
}

/// Keep-relabelings for a label selector (`matchLabels`, `matchExpressions` with
/// Exists/In) on the objects whose labels appear as `__meta_kubernetes_<object>_label*`.
fn selector_relabelings(selector: &Value, object: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            let k = sanitize(k);
            out.push(json!({
                "action": "keep",
                "source_labels": [
                    format!("__meta_kubernetes_{object}_label_{k}"),
                    format!("__meta_kubernetes_{object}_labelpresent_{k}")
                ],
                "regex": format!("({});true", v.as_str().unwrap_or_default()),
            }));
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = sanitize(e["key"].as_str().unwrap_or_default());
            match e["operator"].as_str() {
                Some("Exists") => out.push(json!({
                    "action": "keep",
                    "source_labels": [format!("__meta_kubernetes_{object}_labelpresent_{key}")],
                    "regex": "true",
                })),
                Some("In") => {
                    let values: Vec<&str> = e["values"]
                        .as_array()
                        .map(|v| v.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    out.push(json!({
                        "action": "keep",
                        "source_labels": [
                            format!("__meta_kubernetes_{object}_label_{key}"),
                            format!("__meta_kubernetes_{object}_labelpresent_{key}")
                        ],
                        "regex": format!("({});true", values.join("|")),
                    }));
                }
                other => bail!("selector operator {other:?} is not translated"),
            }
        }
    }
    Ok(out)
}

/// The `kubernetes_sd_configs` entry for a monitor's `namespaceSelector`.
fn discovery(role: &str, namespace_selector: &Value, own_ns: &str, kubeconfig: &Path) -> Value {
    let mut sd = json!({"role": role, "kubeconfig_file": kubeconfig});
    if namespace_selector["any"].as_bool() == Some(true) {
        return sd;
    }
    let names: Vec<Value> = match namespace_selector["matchNames"].as_array() {
        Some(n) if !n.is_empty() => n.clone(),
        _ => vec![json!(own_ns)],
    };
    sd["namespaces"] = json!({"names": names});
    sd
}

fn metadata(doc: &Value) -> (String, String) {
    let s = |k: &str| doc["metadata"][k].as_str().unwrap_or_default().to_string();
    (s("namespace"), s("name"))
}

/// The scrape configs of one PodMonitor (one per podMetricsEndpoint).
fn pod_monitor(doc: &Value, kubeconfig: &Path) -> anyhow::Result<Vec<Value>> {
    let (ns, name) = metadata(doc);
    let spec = &doc["spec"];
    let mut out = Vec::new();
    let endpoints = spec["podMetricsEndpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, ep) in endpoints.iter().enumerate() {
        let port = ep["port"]
            .as_str()
            .context("podMetricsEndpoint without a port name")?;
        let mut relabel = vec![json!({
            "action": "drop",
            "source_labels": ["__meta_kubernetes_pod_phase"],
            "regex": "(Failed|Succeeded)",
        })];
        relabel.extend(selector_relabelings(&spec["selector"], "pod")?);
        relabel.push(json!({
            "action": "keep",
            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
            "regex": port,
        }));
        relabel.extend(standard_labels());
        relabel.push(json!({"target_label": "job", "replacement": format!("{ns}/{name}")}));
        relabel.push(json!({"target_label": "endpoint", "replacement": port}));
        for r in ep["relabelings"].as_array().cloned().unwrap_or_default() {
            relabel.push(relabeling(&r)?);
        }
        out.push(scrape_config(
            format!("podMonitor/{ns}/{name}/{i}"),
            discovery("pod", &spec["namespaceSelector"], &ns, kubeconfig),
            ep,
            relabel,
        )?);
    }
    Ok(out)
}

/// The scrape configs of one ServiceMonitor (one per endpoint).
fn service_monitor(doc: &Value, kubeconfig: &Path) -> anyhow::Result<Vec<Value>> {
    let (ns, name) = metadata(doc);
    let spec = &doc["spec"];
    let mut out = Vec::new();
    let endpoints = spec["endpoints"].as_array().cloned().unwrap_or_default();
    for (i, ep) in endpoints.iter().enumerate() {
        let port = ep["port"]
            .as_str()
            .context("endpoint without a port name")?;
        let mut relabel = selector_relabelings(&spec["selector"], "service")?;
        relabel.push(json!({
            "action": "keep",
            "source_labels": ["__meta_kubernetes_endpoint_port_name"],
            "regex": port,
        }));
        relabel.extend(standard_labels());
        relabel.push(json!({
            "source_labels": ["__meta_kubernetes_service_name"],
            "target_label": "service",
        }));
        relabel.push(json!({
            "source_labels": ["__meta_kubernetes_service_name"],
            "target_label": "job",
        }));
        relabel.push(json!({"target_label": "endpoint", "replacement": port}));
        for r in ep["relabelings"].as_array().cloned().unwrap_or_default() {
            relabel.push(relabeling(&r)?);
        }
        out.push(scrape_config(
            format!("serviceMonitor/{ns}/{name}/{i}"),
            discovery("endpoints", &spec["namespaceSelector"], &ns, kubeconfig),
            ep,
            relabel,
        )?);
    }
    Ok(out)
}

/// namespace, pod and container target labels from the discovered pod.
fn standard_labels() -> Vec<Value> {
    [
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_pod_name", "pod"),
        ("__meta_kubernetes_pod_container_name", "container"),
    ]
    .iter()
    .map(|(s, t)| json!({"source_labels": [s], "target_label": t}))
    .collect()
}

fn scrape_config(job: String, sd: Value, ep: &Value, relabel: Vec<Value>) -> anyhow::Result<Value> {
    let mut c = json!({
        "job_name": job,
        "kubernetes_sd_configs": [sd],
        "metrics_path": ep["path"].as_str().unwrap_or("/metrics"),
        "honor_labels": ep["honorLabels"].as_bool().unwrap_or(false),
        "relabel_configs": relabel,
    });
    for (from, to) in [
        ("interval", "scrape_interval"),
        ("scrapeTimeout", "scrape_timeout"),
    ] {
        if let Some(v) = ep.get(from) {
            c[to] = v.clone();
        }
    }
    if let Some(t) = ep.get("tlsConfig") {
        let mut tls = serde_json::Map::new();
        for (k, v) in t.as_object().into_iter().flatten() {
            let key = match k.as_str() {
                "insecureSkipVerify" => "insecure_skip_verify",
                "serverName" => "server_name",
                other => bail!("tlsConfig field {other} is not translated"),
            };
            tls.insert(key.to_string(), v.clone());
        }
        c["tls_config"] = Value::Object(tls);
    }
    if let Some(m) = ep["metricRelabelings"].as_array() {
        let translated: anyhow::Result<Vec<Value>> = m.iter().map(relabeling).collect();
        c["metric_relabel_configs"] = Value::Array(translated?);
    }
    Ok(c)
}

/// The scrape configs for every PodMonitor and ServiceMonitor in `rendered` (the
/// multi-document output of `helm template`). Errors when there is none.
pub fn scrape_configs(rendered: &str, kubeconfig: &Path) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(rendered) {
        let v: Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(e) => bail!("the rendered chart is not YAML: {e}"),
        };
        match v["kind"].as_str() {
            Some("PodMonitor") => out.extend(pod_monitor(&v, kubeconfig)?),
            Some("ServiceMonitor") => out.extend(service_monitor(&v, kubeconfig)?),
            _ => {}
        }
    }
    if out.is_empty() {
        bail!("the rendered chart has no PodMonitor or ServiceMonitor");
    }
    Ok(out)
}

/// A Prometheus server process (killed on drop) and its HTTP API.
pub struct Prometheus {
    child: std::process::Child,
    pub url: String,
    pub log: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `bin` with `scrape_configs`, the rule files `rules`, scrape and rule
    /// evaluation every `interval`; waits until it is ready.
    pub async fn start(
        bin: &Path,
        scrape_configs: Vec<Value>,
        rules: &[PathBuf],
        interval: Duration,
    ) -> anyhow::Result<Prometheus> {
        let dir = tempfile::tempdir().context("a directory for Prometheus")?;
        let secs = format!("{}s", interval.as_secs().max(1));
        // JSON is YAML: the configuration is written as JSON.
        let config = json!({
            "global": {"scrape_interval": secs, "evaluation_interval": secs, "scrape_timeout": secs},
            "rule_files": rules,
            "scrape_configs": scrape_configs,
        });
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log)?;
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (scripts/build-prometheus.sh builds it)",
                    bin.display()
                )
            })?;
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = p.http.get(format!("{}/-/ready", p.url)).send().await;
            if matches!(&ready, Ok(r) if r.status().is_success()) {
                return Ok(p);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "Prometheus not ready within 60 s; its log:\n{}",
                    p.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last `n` lines of the server's log (for failure reports).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let v: Value = self
            .http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if v["status"] != "success" {
            return Err(anyhow!("{path}: {v}"));
        }
        Ok(v["data"].clone())
    }

    /// An instant query: the result vector's samples as (labels, value).
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let v = s["value"][1]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(f64::NAN);
                (s["metric"].clone(), v)
            })
            .collect())
    }

    /// The alerts Prometheus holds (pending and firing).
    pub async fn alerts(&self) -> anyhow::Result<Vec<Value>> {
        let data = self.api("/api/v1/alerts", &[]).await?;
        Ok(data["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// The active scrape targets (for failure reports).
    pub async fn targets(&self) -> anyhow::Result<Vec<String>> {
        let data = self.api("/api/v1/targets", &[("state", "active")]).await?;
        Ok(data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                format!(
                    "{} {} {} {}",
                    t["scrapePool"].as_str().unwrap_or_default(),
                    t["scrapeUrl"].as_str().unwrap_or_default(),
                    t["health"].as_str().unwrap_or_default(),
                    t["lastError"].as_str().unwrap_or_default()
                )
            })
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: studio-operator, namespace: studio-system}
---
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: studio-operator-nodes, namespace: studio-system}
spec:
  namespaceSelector: {any: true}
  selector:
    matchLabels: {app.kubernetes.io/name: studio}
    matchExpressions: [{key: studio.cms.io/cluster, operator: Exists}]
  podMetricsEndpoints:
    - port: http
      path: /metrics
      relabelings:
        - {targetLabel: job, replacement: studio-node}
        - {sourceLabels: [__meta_kubernetes_pod_label_studio_cms_io_role], targetLabel: studio_role}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: studio-operator, namespace: studio-system}
spec:
  namespaceSelector: {matchNames: [studio-system]}
  selector: {matchLabels: {app.kubernetes.io/instance: studio-operator}}
  endpoints:
    - {port: http, path: /metrics, honorLabels: true, interval: 10s}
"#;

    #[test]
    fn monitors_become_kubernetes_sd_scrape_configs() -> anyhow::Result<()> {
        let c = scrape_configs(RENDERED, Path::new("/k"))?;
        assert_eq!(c.len(), 2);
        let pods = &c[0];
        assert_eq!(
            pods["job_name"],
            "podMonitor/studio-system/studio-operator-nodes/0"
        );
        assert_eq!(pods["kubernetes_sd_configs"][0]["role"], "pod");
        assert!(pods["kubernetes_sd_configs"][0].get("namespaces").is_none());
        let relabel = pods["relabel_configs"].as_array().context("relabel")?;
        assert!(relabel.contains(&json!({
            "action": "keep",
            "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name",
                              "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name"],
            "regex": "(studio);true"
        })));
        assert!(relabel.contains(&json!({
            "action": "keep",
            "source_labels": ["__meta_kubernetes_pod_labelpresent_studio_cms_io_cluster"],
            "regex": "true"
        })));
        // The monitor's own relabelings come last, so its job label wins.
        assert_eq!(
            relabel[relabel.len() - 2],
            json!({"target_label": "job", "replacement": "studio-node"})
        );
        let svc = &c[1];
        assert_eq!(
            svc["kubernetes_sd_configs"][0]["namespaces"]["names"],
            json!(["studio-system"])
        );
        assert_eq!(svc["honor_labels"], true);
        assert_eq!(svc["scrape_interval"], "10s");
        Ok(())
    }

    #[test]
    fn untranslatable_relabelings_are_refused() {
        let doc = RENDERED.replace("targetLabel: job,", "targetLabels: job,");
        assert!(scrape_configs(&doc, Path::new("/k")).is_err());
        assert!(scrape_configs("kind: Service\n", Path::new("/k")).is_err());
    }
}
