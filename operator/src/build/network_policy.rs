//! The NetworkPolicy of a cluster with spec.tls, whose internal routes (replication,
//! acknowledgements, election positions, switchover, snapshot, quarantine) have a port
//! of their own: anyone may reach the public port (content, cluster status, probes,
//! metrics); only the cluster's own pods and the operator reach the internal one. The
//! member certificate guards those routes too; the policy keeps everyone else from
//! even connecting (where the network plugin enforces NetworkPolicies).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use studio_crds::{StudioCluster, labels};

use super::{HTTP_PORT, INTERNAL_PORT, meta_of, object_meta};
use crate::error::Error;

/// Where the operator runs: its namespace and its pods' labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPeer {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
}

impl OperatorPeer {
    /// From `k=v,k=v` (the chart passes its selector labels this way).
    pub fn parse(namespace: &str, labels: &str) -> Result<OperatorPeer, String> {
        let mut pod_labels = BTreeMap::new();
        for kv in labels.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("operator pod label {kv:?} is not key=value"))?;
            pod_labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        if namespace.trim().is_empty() || pod_labels.is_empty() {
            return Err("the operator's namespace and pod labels are both needed".into());
        }
        Ok(OperatorPeer {
            namespace: namespace.trim().to_string(),
            pod_labels,
        })
    }
}

/// The policy's name: `<cluster>-internal`.
pub fn name(cluster: &str) -> String {
    format!("{cluster}-internal")
}

fn port(n: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(n)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn selector(l: BTreeMap<String, String>) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(l),
        ..Default::default()
    })
}

/// `None` without spec.tls (the internal routes then share the public port).
pub fn network_policy(
    sc: &StudioCluster,
    operator: &OperatorPeer,
) -> Result<Option<NetworkPolicy>, Error> {
    if sc.tls().is_none() {
        return Ok(None);
    }
    let m = meta_of(sc)?;
    let members = BTreeMap::from([(labels::CLUSTER.to_string(), m.name.to_string())]);
    let operator_ns = BTreeMap::from([(
        "kubernetes.io/metadata.name".to_string(),
        operator.namespace.clone(),
    )]);
    Ok(Some(NetworkPolicy {
        metadata: object_meta(&m, name(m.name), BTreeMap::new()),
        spec: Some(NetworkPolicySpec {
            pod_selector: selector(members.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                // The public port: from anywhere.
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(HTTP_PORT)]),
                    from: None,
                },
                // The internal port: the cluster's pods and the operator's.
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(INTERNAL_PORT)]),
                    from: Some(vec![
                        NetworkPolicyPeer {
                            pod_selector: selector(members),
                            ..Default::default()
                        },
                        NetworkPolicyPeer {
                            namespace_selector: selector(operator_ns),
                            pod_selector: selector(operator.pod_labels.clone()),
                            ..Default::default()
                        },
                    ]),
                },
            ]),
            ..Default::default()
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(tls: bool) -> StudioCluster {
        let yaml = format!(
            "apiVersion: studio.cms.io/v1alpha1\nkind: StudioCluster\nmetadata:\n  name: web\n  namespace: shop\n  uid: u-1\nspec:\n  nodes: 3\n  image: studio-node:1\n  tls:\n    enabled: {tls}\n"
        );
        serde_yaml::from_str(&yaml).expect("fixture")
    }

    fn operator() -> OperatorPeer {
        OperatorPeer::parse(
            "studio-system",
            "app.kubernetes.io/name=studio-operator, app.kubernetes.io/instance=studio",
        )
        .expect("labels")
    }

    #[test]
    fn only_members_and_the_operator_reach_the_internal_port() {
        let np = network_policy(&cluster(true), &operator())
            .expect("built")
            .expect("a policy with TLS");
        assert_eq!(np.metadata.name.as_deref(), Some("web-internal"));
        assert_eq!(np.metadata.namespace.as_deref(), Some("shop"));
        let spec = np.spec.expect("spec");
        let members = BTreeMap::from([(labels::CLUSTER.to_string(), "web".to_string())]);
        assert_eq!(
            spec.pod_selector.and_then(|s| s.match_labels),
            Some(members.clone())
        );
        let rules = spec.ingress.expect("ingress");
        assert_eq!(rules.len(), 2);
        let public = &rules[0];
        assert_eq!(public.ports.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            public.ports.as_ref().and_then(|p| p[0].port.clone()),
            Some(IntOrString::Int(HTTP_PORT))
        );
        assert!(public.from.is_none(), "the public port is open to all");
        let internal = &rules[1];
        assert_eq!(
            internal.ports.as_ref().and_then(|p| p[0].port.clone()),
            Some(IntOrString::Int(INTERNAL_PORT))
        );
        let from = internal.from.clone().expect("peers");
        assert_eq!(from.len(), 2);
        assert_eq!(
            from[0].pod_selector.clone().and_then(|s| s.match_labels),
            Some(members)
        );
        assert!(
            from[0].namespace_selector.is_none(),
            "members: own namespace only"
        );
        assert_eq!(
            from[1]
                .namespace_selector
                .clone()
                .and_then(|s| s.match_labels)
                .and_then(|l| l.get("kubernetes.io/metadata.name").cloned()),
            Some("studio-system".to_string())
        );
        assert_eq!(
            from[1]
                .pod_selector
                .clone()
                .and_then(|s| s.match_labels)
                .and_then(|l| l.get("app.kubernetes.io/instance").cloned()),
            Some("studio".to_string())
        );
    }

    #[test]
    fn no_policy_without_tls_and_bad_labels_are_refused() {
        assert!(
            network_policy(&cluster(false), &operator())
                .expect("built")
                .is_none()
        );
        assert!(OperatorPeer::parse("ns", "no-equals-sign").is_err());
        assert!(OperatorPeer::parse("", "a=b").is_err());
        assert!(OperatorPeer::parse("ns", "").is_err());
    }
}
