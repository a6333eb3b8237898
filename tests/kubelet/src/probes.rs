//! Readiness, liveness and startup probes (httpGet, tcpSocket, exec).
//!
//! httpGet/tcpSocket connect from the root netns to the pod IP over the bridge;
//! exec runs the command inside the pod's netns (`ip netns exec`), with the
//! container's environment. gRPC probes are not supported and always fail.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Timing and thresholds of a probe, with Kubernetes defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    pub fn of(p: &Probe) -> Self {
        let secs =
            |v: Option<i32>, d: i32, min: i32| Duration::from_secs(v.unwrap_or(d).max(min) as u64);
        ProbeTiming {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Consecutive-result bookkeeping: the verdict flips only after the thresholds.
#[derive(Debug, Clone)]
pub struct ProbeCounter {
    success_threshold: u32,
    failure_threshold: u32,
    ok_run: u32,
    fail_run: u32,
    verdict: Option<bool>,
}

impl ProbeCounter {
    pub fn new(t: &ProbeTiming) -> Self {
        ProbeCounter {
            success_threshold: t.success_threshold,
            failure_threshold: t.failure_threshold,
            ok_run: 0,
            fail_run: 0,
            verdict: None,
        }
    }

    /// Records a result; returns the new verdict if it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.ok_run += 1;
            self.fail_run = 0;
            if self.ok_run >= self.success_threshold && self.verdict != Some(true) {
                self.verdict = Some(true);
                return Some(true);
            }
        } else {
            self.fail_run += 1;
            self.ok_run = 0;
            if self.fail_run >= self.failure_threshold && self.verdict != Some(false) {
                self.verdict = Some(false);
                return Some(false);
            }
        }
        None
    }
}

/// Where a probe goes.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub pod_ip: std::net::Ipv4Addr,
    pub netns: &'a str,
    pub container: &'a Container,
    pub env: &'a [(String, String)],
    pub bin_dir: &'a Path,
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("named port {name:?} not found in container"))
        }
    }
}

/// One HTTP client for every probe (connection set-up, TLS config built once).
fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .danger_accept_invalid_certs(true)
                .redirect(reqwest::redirect::Policy::limited(10))
                // Probes open a fresh connection each time, like the kubelet's.
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| format!("building HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Runs one probe attempt; `Err` carries the failure message.
pub async fn run_once(probe: &Probe, target: &Target<'_>, timeout: Duration) -> Result<(), String> {
    if let Some(h) = &probe.http_get {
        let port = resolve_port(&h.port, target.container)?;
        let host = h.host.clone().unwrap_or_else(|| target.pod_ip.to_string());
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let path = h.path.clone().unwrap_or_else(|| "/".to_string());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let url = format!("{scheme}://{host}:{port}{path}");
        let client = http_client()?;
        let mut req = client
            .get(&url)
            .timeout(timeout)
            .header("User-Agent", "kube-probe/1.36");
        for hh in h.http_headers.iter().flatten() {
            req = req.header(hh.name.as_str(), hh.value.as_str());
        }
        let resp = req.send().await.map_err(|e| format!("Get {url:?}: {e}"))?;
        let code = resp.status().as_u16();
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let port = resolve_port(&t.port, target.container)?;
        let host: std::net::IpAddr = match &t.host {
            Some(h) => h
                .parse()
                .map_err(|e| format!("tcpSocket host {h:?}: {e}"))?,
            None => target.pod_ip.into(),
        };
        let addr = SocketAddr::new(host, port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: timeout")),
        };
    }
    if let Some(x) = &probe.exec {
        let cmd = x.command.clone().unwrap_or_default();
        let Some((first, rest)) = cmd.split_first() else {
            return Err("exec probe without command".to_string());
        };
        let in_bin = Path::new(first).file_name().map(|f| target.bin_dir.join(f));
        let program = match in_bin {
            Some(p) if !first.starts_with('/') && p.is_file() => p.display().to_string(),
            _ => first.clone(),
        };
        let mut c = crate::network::command_in(target.netns, Path::new(&program));
        c.args(rest)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(target.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(timeout, c.output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(format!("exec {program}: {e}")),
            Err(_) => return Err(format!("command {cmd:?} timed out")),
        };
        return if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "command {cmd:?} exited with {}: {}",
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        };
    }
    Err("probe has no supported handler (httpGet, tcpSocket, exec)".to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_thresholds() {
        let p: Probe = serde_json::from_value(json!({"httpGet": {"port": 8080}})).unwrap();
        let t = ProbeTiming::of(&p);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));

        let p: Probe = serde_json::from_value(json!({"periodSeconds": 1, "successThreshold": 2,
            "failureThreshold": 2, "initialDelaySeconds": 3}))
        .unwrap();
        let t = ProbeTiming::of(&p);
        assert_eq!(t.initial_delay, Duration::from_secs(3));
        let mut c = ProbeCounter::new(&t);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(true));
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a success resets the failure run");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false));
        assert_eq!(c.record(false), None);
    }

    #[test]
    fn named_ports() {
        let c: Container = serde_json::from_value(json!({"name": "c",
            "ports": [{"name": "http", "containerPort": 8080}]}))
        .unwrap();
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c).unwrap(),
            8080
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &c).unwrap(), 81);
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
    }

    #[tokio::test]
    async fn tcp_and_http_against_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let c: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let target = Target {
            pod_ip: std::net::Ipv4Addr::LOCALHOST,
            netns: "unused",
            container: &c,
            env: &[],
            bin_dir: Path::new("/nonexistent"),
        };
        let t = Duration::from_secs(2);
        let ok: Probe =
            serde_json::from_value(json!({"httpGet": {"port": port, "path": "/ok"}})).unwrap();
        run_once(&ok, &target, t).await.unwrap();
        let bad: Probe =
            serde_json::from_value(json!({"httpGet": {"port": port, "path": "/bad"}})).unwrap();
        assert!(
            run_once(&bad, &target, t)
                .await
                .unwrap_err()
                .contains("503")
        );
        let tcp: Probe = serde_json::from_value(json!({"tcpSocket": {"port": port}})).unwrap();
        run_once(&tcp, &target, t).await.unwrap();
        let closed: Probe = serde_json::from_value(json!({"tcpSocket": {"port": 1}})).unwrap();
        assert!(run_once(&closed, &target, t).await.is_err());
        let none: Probe = serde_json::from_value(json!({})).unwrap();
        assert!(run_once(&none, &target, t).await.is_err());
    }
}
