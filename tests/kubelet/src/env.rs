//! Container environment resolution (pure: Secrets/ConfigMaps are fetched by the
//! caller and passed in as [`Sources`]).
//!
//! Order and semantics follow the real kubelet: `envFrom` first (in order, with its
//! prefix, invalid names skipped), then `env` (later definitions win); `$(VAR)` in
//! `env` values, command and args expands to a variable defined earlier, `$$(VAR)`
//! escapes, an undefined reference is left as written.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod};

/// Secrets and ConfigMaps by name: `None` = not found.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub secrets: HashMap<String, Option<BTreeMap<String, String>>>,
    pub config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
}

/// Run-time pod facts not in the spec.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub pod_ip: String,
    pub host_ip: String,
}

/// Names of the Secrets and ConfigMaps a container's env refers to.
pub fn referenced(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut cms = BTreeSet::new();
    for ef in container.env_from.iter().flatten() {
        if let Some(s) = &ef.secret_ref {
            secrets.insert(s.name.clone());
        }
        if let Some(c) = &ef.config_map_ref {
            cms.insert(c.name.clone());
        }
    }
    for e in container.env.iter().flatten() {
        if let Some(vf) = &e.value_from {
            if let Some(s) = &vf.secret_key_ref {
                secrets.insert(s.name.clone());
            }
            if let Some(c) = &vf.config_map_key_ref {
                cms.insert(c.name.clone());
            }
        }
    }
    (secrets, cms)
}

/// Resolves a downward-API field path.
pub fn field_ref(pod: &Pod, sel: &ObjectFieldSelector, facts: &PodFacts) -> Result<String, String> {
    let path = sel.field_path.as_str();
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let rest = path.strip_prefix(prefix)?;
        let key = rest
            .strip_prefix("['")
            .and_then(|r| r.strip_suffix("']"))
            .or_else(|| rest.strip_prefix("[\"").and_then(|r| r.strip_suffix("\"]")))?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.labels", meta.labels.as_ref()) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.annotations", meta.annotations.as_ref()) {
        return Ok(v);
    }
    let fmt_map = |m: Option<&BTreeMap<String, String>>| {
        m.map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => fmt_map(meta.labels.as_ref()),
        "metadata.annotations" => fmt_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string()),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        other => return Err(format!("unsupported fieldRef path {other:?}")),
    })
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Ordered list of variables with last-definition-wins semantics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnvList {
    vars: Vec<(String, String)>,
}

impl EnvList {
    pub fn set(&mut self, name: &str, value: String) {
        if let Some(slot) = self.vars.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
        } else {
            self.vars.push((name.to_string(), value));
        }
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn as_map(&self) -> HashMap<String, String> {
        self.vars.iter().cloned().collect()
    }
    pub fn into_vec(self) -> Vec<(String, String)> {
        self.vars
    }
    pub fn iter(&self) -> impl Iterator<Item = &(String, String)> {
        self.vars.iter()
    }
}

/// Resolves a container's environment (without the kubelet-added variables).
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    src: &Sources,
) -> Result<EnvList, String> {
    let mut out = EnvList::default();
    for ef in container.env_from.iter().flatten() {
        let prefix = ef.prefix.clone().unwrap_or_default();
        let (data, optional, what, name) = if let Some(s) = &ef.secret_ref {
            (
                src.secrets.get(&s.name).cloned().flatten(),
                s.optional.unwrap_or(false),
                "secret",
                s.name.clone(),
            )
        } else if let Some(c) = &ef.config_map_ref {
            (
                src.config_maps.get(&c.name).cloned().flatten(),
                c.optional.unwrap_or(false),
                "configmap",
                c.name.clone(),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    let full = format!("{prefix}{k}");
                    if valid_env_name(&full) {
                        out.set(&full, v);
                    }
                }
            }
            None if optional => {}
            None => return Err(format!("{what} {name:?} not found")),
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(vf) = &e.value_from {
            if let Some(sel) = &vf.field_ref {
                field_ref(pod, sel, facts)?
            } else if let Some(r) = &vf.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match src.secrets.get(&r.name).cloned().flatten() {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {:?}",
                                r.key, r.name
                            ));
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("secret {:?} not found", r.name)),
                }
            } else if let Some(r) = &vf.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match src.config_maps.get(&r.name).cloned().flatten() {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {:?}",
                                r.key, r.name
                            ));
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("configmap {:?} not found", r.name)),
                }
            } else if let Some(r) = &vf.resource_field_ref {
                resource_field(container, &r.resource)
            } else {
                String::new()
            }
        } else {
            expand(e.value.as_deref().unwrap_or(""), &out.as_map())
        };
        out.set(&e.name, value);
    }
    Ok(out)
}

fn resource_field(container: &Container, resource: &str) -> String {
    let Some((kind, name)) = resource.split_once('.') else {
        return String::new();
    };
    let res = container.resources.as_ref();
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => None,
    };
    map.and_then(|m| m.get(name))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

/// Kubernetes `$(VAR)` expansion.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let bytes: Vec<char> = input.chars().collect();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == '$' && i + 1 < bytes.len() {
            let n = bytes[i + 1];
            if n == '$' {
                out.push('$');
                i += 2;
                continue;
            }
            if n == '('
                && let Some(close) = bytes[i + 2..].iter().position(|&ch| ch == ')')
            {
                let name: String = bytes[i + 2..i + 2 + close].iter().collect();
                match vars.get(&name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("$(");
                        out.push_str(&name);
                        out.push(')');
                    }
                }
                i += 3 + close;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Environment variable name for a volume mount: `STUDIO_MOUNT_<NAME>` with the
/// mount's volume name upper-cased and non-alphanumerics replaced by `_`.
pub fn mount_env_name(volume_name: &str) -> String {
    let s: String = volume_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("STUDIO_MOUNT_{s}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "ns1", "uid": "u-1",
                         "labels": {"app": "web", "role": "primary"}},
            "spec": {"nodeName": "local-2", "serviceAccountName": "sa1", "containers": []}
        }))
        .unwrap()
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: "10.213.1.5".into(),
            host_ip: "10.213.0.1".into(),
        }
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.secrets.insert(
            "creds".into(),
            Some(
                [
                    ("user".to_string(), "alice".to_string()),
                    ("pw".to_string(), "s3cr3t".to_string()),
                ]
                .into(),
            ),
        );
        s.secrets.insert("gone".into(), None);
        s.config_maps.insert(
            "cfg".into(),
            Some(
                [
                    ("MODE".to_string(), "fast".to_string()),
                    ("bad key".to_string(), "x".to_string()),
                ]
                .into(),
            ),
        );
        s
    }

    #[test]
    fn resolves_all_kinds() {
        let c = container(json!({
            "name": "c",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                        {"secretRef": {"name": "gone", "optional": true}}],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "ROLE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['role']"}}},
                {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": true}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
                {"name": "URL", "value": "http://$(IP):8080/$(POD_NAME)/$(UNDEFINED)/$$(IP)"},
                {"name": "CFG_MODE", "value": "override"}
            ]
        }));
        let env = resolve_env(&pod(), &c, &facts(), &sources()).unwrap();
        let get = |k: &str| env.get(k).map(str::to_string);
        assert_eq!(get("POD_NAME").as_deref(), Some("web-0"));
        assert_eq!(get("NS").as_deref(), Some("ns1"));
        assert_eq!(get("UID").as_deref(), Some("u-1"));
        assert_eq!(get("IP").as_deref(), Some("10.213.1.5"));
        assert_eq!(get("HOST").as_deref(), Some("10.213.0.1"));
        assert_eq!(get("NODE").as_deref(), Some("local-2"));
        assert_eq!(get("SA").as_deref(), Some("sa1"));
        assert_eq!(get("ROLE").as_deref(), Some("primary"));
        assert_eq!(get("USER").as_deref(), Some("alice"));
        assert_eq!(get("OPT"), None);
        assert_eq!(get("MODE").as_deref(), Some("fast"));
        assert_eq!(get("CFG_MODE").as_deref(), Some("override"));
        assert_eq!(
            get("CFG_bad key"),
            None,
            "invalid names from envFrom are skipped"
        );
        assert_eq!(
            get("URL").as_deref(),
            Some("http://10.213.1.5:8080/web-0/$(UNDEFINED)/$(IP)")
        );
        // envFrom entries come first in order.
        assert_eq!(env.iter().next().map(|(k, _)| k.as_str()), Some("CFG_MODE"));
    }

    #[test]
    fn missing_references_fail_unless_optional() {
        let c = container(json!({"name": "c", "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}));
        let e = resolve_env(&pod(), &c, &facts(), &sources()).unwrap_err();
        assert!(e.contains("gone"), "{e}");
        let c = container(json!({"name": "c", "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "missing"}}}]}));
        assert!(resolve_env(&pod(), &c, &facts(), &sources()).is_err());
        let c = container(json!({"name": "c", "envFrom": [{"configMapRef": {"name": "absent"}}]}));
        assert!(resolve_env(&pod(), &c, &facts(), &sources()).is_err());
        let c = container(json!({"name": "c", "env": [
            {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}));
        assert!(resolve_env(&pod(), &c, &facts(), &sources()).is_err());
    }

    #[test]
    fn references_are_collected() {
        let c = container(json!({"name": "c",
            "envFrom": [{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "c", "key": "k"}}},
                    {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "d", "key": "k"}}}]}));
        let (s, c) = referenced(&c);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(c.into_iter().collect::<Vec<_>>(), vec!["b", "d"]);
    }

    #[test]
    fn expansion_edge_cases() {
        let vars: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("$(A)$(A)", &vars), "11");
        assert_eq!(expand("$", &vars), "$");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("a$b", &vars), "a$b");
        assert_eq!(expand("$$", &vars), "$");
        assert_eq!(mount_env_name("data-vol.1"), "STUDIO_MOUNT_DATA_VOL_1");
    }
}
