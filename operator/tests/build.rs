//! The pure builders, from the YAML fixtures a user would apply: every owned object the
//! operator creates, with the settings a user asked for.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, EnvVar, Service};
use studio_crds::{StudioCluster, labels, secret_keys};
use studio_operator::build::{self, Owned};

fn fixture(name: &str) -> StudioCluster {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn owned(name: &str) -> (StudioCluster, Owned) {
    let sc = fixture(name);
    let o = build::build_owned(&sc, sc.spec.nodes).unwrap_or_else(|e| panic!("build {name}: {e}"));
    (sc, o)
}

fn container(sts: &StatefulSet) -> &Container {
    sts.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| &p.containers[0])
        .expect("pod spec")
}

fn env_map(c: &Container) -> BTreeMap<String, EnvVar> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.clone()))
        .collect()
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    env_map(c).get(name).and_then(|e| e.value.clone())
}

fn service<'a>(o: &'a Owned, name: &str) -> &'a Service {
    o.services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no service {name}"))
}

#[test]
fn every_object_is_owned_by_the_cluster_and_labelled() {
    let (sc, o) = owned("three-nodes-arbiter-sync.yaml");
    let uid = sc.metadata.uid.clone();
    let metas = [
        &o.service_account.metadata,
        &o.role.metadata,
        &o.role_binding.metadata,
        &o.statefulset.metadata,
        &o.pdb.metadata,
        &o.arbiter.as_ref().expect("arbiter").metadata,
    ]
    .into_iter()
    .chain(o.services.iter().map(|s| &s.metadata));
    for m in metas {
        let refs = m.owner_references.as_ref().expect("owner references");
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "StudioCluster");
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(Some(refs[0].uid.clone()), uid);
        assert_eq!(m.namespace.as_deref(), Some("cms"));
        let l = m.labels.as_ref().expect("labels");
        assert_eq!(l.get(labels::CLUSTER).map(String::as_str), Some("acme"));
        assert_eq!(
            l.get(labels::APP_MANAGED_BY).map(String::as_str),
            Some("studio-operator")
        );
    }
}

#[test]
fn data_statefulset_is_ondelete_parallel_with_claims_and_probes() {
    let (_, o) = owned("three-nodes-arbiter-sync.yaml");
    let sts = &o.statefulset;
    assert_eq!(sts.metadata.name.as_deref(), Some("acme"));
    let spec = sts.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("acme-nodes"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref()),
        Some("OnDelete")
    );
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("retention");
    assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    let vct = &spec.volume_claim_templates.as_ref().expect("claims")[0];
    let vspec = vct.spec.as_ref().expect("claim spec");
    assert_eq!(vspec.storage_class_name.as_deref(), Some("fast-ssd"));
    let req = vspec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(req.get("storage").map(|q| q.0.as_str()), Some("20Gi"));
    // The selector is minimal and never includes the role (pods flip it).
    let sel = spec.selector.match_labels.as_ref().expect("selector");
    assert_eq!(sel.len(), 2);
    assert!(!sel.contains_key(labels::ROLE));

    let c = container(sts);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/studio-node:0.2.0")
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(
        c.args.as_deref(),
        Some(
            &[
                "--data-dir".to_string(),
                "/var/lib/studio".into(),
                "--listen".into(),
                "0.0.0.0:8080".into()
            ][..]
        )
    );
    let ready = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("readiness");
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    let live = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("liveness");
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    let mounts = c.volume_mounts.as_ref().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "data" && m.mount_path == "/var/lib/studio")
    );
    let res = c.resources.as_ref().expect("resources");
    assert_eq!(
        res.limits
            .as_ref()
            .and_then(|l| l.get("memory"))
            .map(|q| q.0.as_str()),
        Some("1Gi")
    );
    let pod = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    assert_eq!(pod.service_account_name.as_deref(), Some("acme-node"));
    // Default preferred anti-affinity across hosts.
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .expect("anti-affinity");
    let pref = anti
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .expect("preferred");
    assert_eq!(
        pref[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
}

#[test]
fn node_settings_come_from_the_spec_and_secrets_by_reference() {
    let (_, o) = owned("three-nodes-arbiter-sync.yaml");
    let c = container(&o.statefulset);
    let env = env_map(c);
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_IP", "status.podIP"),
    ] {
        let f = env[name]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .expect("fieldRef");
        assert_eq!(f.field_path, path);
    }
    assert_eq!(env_value(c, "STUDIO_CLUSTER").as_deref(), Some("acme"));
    assert_eq!(
        env_value(c, "STUDIO_REPLICATION_MODE").as_deref(),
        Some("sync")
    );
    assert_eq!(env_value(c, "STUDIO_SYNC_REPLICAS").as_deref(), Some("2"));
    assert_eq!(
        env_value(c, "STUDIO_COORDINATOR_MODE").as_deref(),
        Some("ALL")
    );
    assert_eq!(env_value(c, "STUDIO_LEASE_DURATION").as_deref(), Some("6s"));
    assert_eq!(env_value(c, "STUDIO_RENEW_DEADLINE").as_deref(), Some("4s"));
    assert_eq!(env_value(c, "STUDIO_RETRY_PERIOD").as_deref(), Some("1s"));
    assert_eq!(
        env_value(c, "STUDIO_QUORUM_LOSS_TIMEOUT").as_deref(),
        Some("8s")
    );
    assert_eq!(
        env_value(c, "STUDIO_ISOLATION_TIMEOUT"),
        None,
        "an isolated async primary keeps writing unless asked"
    );
    assert_eq!(
        env_value(c, "STUDIO_ELECTION_PRIORITIES").as_deref(),
        Some("acme-0=10,acme-1=5,acme-2=0")
    );
    assert_eq!(
        env_value(c, "STUDIO_ROLE"),
        None,
        "data nodes elect their role"
    );
    for (name, key) in [
        ("STUDIO_JWT_SECRET", secret_keys::JWT_KEY),
        ("STUDIO_CLUSTER_TOKEN", secret_keys::CLUSTER_TOKEN),
    ] {
        assert_eq!(env[name].value, None, "{name} must not be inlined");
        let r = env[name]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!(r.name, "acme-auth");
        assert_eq!(r.key, key);
    }
}

#[test]
fn arbiter_statefulset_is_one_labelled_witness() {
    let (_, o) = owned("three-nodes-arbiter-sync.yaml");
    let a = o.arbiter.as_ref().expect("arbiter requested");
    assert_eq!(a.metadata.name.as_deref(), Some("acme-arbiter"));
    let spec = a.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref()),
        Some("OnDelete")
    );
    let tl = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("labels");
    assert_eq!(tl.get(labels::ROLE).map(String::as_str), Some("arbiter"));
    let c = container(a);
    assert_eq!(env_value(c, "STUDIO_ROLE").as_deref(), Some("arbiter"));
    let cpu = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"));
    assert_eq!(cpu.map(|q| q.0.as_str()), Some("50m"));
    // The data and arbiter selectors never overlap.
    let data_sel = o
        .statefulset
        .spec
        .as_ref()
        .map(|s| s.selector.match_labels.clone());
    assert_ne!(data_sel, Some(spec.selector.match_labels.clone()));

    let (_, single) = owned("single-node.yaml");
    assert!(single.arbiter.is_none());
}

#[test]
fn services_select_roles_and_nodes() {
    let (_, o) = owned("three-nodes-arbiter-sync.yaml");
    let nodes = service(&o, "acme-nodes").spec.as_ref().expect("spec");
    assert_eq!(nodes.cluster_ip.as_deref(), Some("None"));
    assert_eq!(nodes.publish_not_ready_addresses, Some(true));
    let sel = |n: &str| {
        service(&o, n)
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .expect("selector")
    };
    assert_eq!(
        sel("acme-primary").get(labels::ROLE).map(String::as_str),
        Some("primary")
    );
    assert_eq!(
        sel("acme-replicas").get(labels::ROLE).map(String::as_str),
        Some("replica")
    );
    for n in ["acme-nodes", "acme-primary", "acme-replicas"] {
        assert_eq!(
            sel(n).get(labels::CLUSTER).map(String::as_str),
            Some("acme")
        );
        let port = &service(&o, n)
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .expect("ports")[0];
        assert_eq!(port.port, 8080);
    }
}

#[test]
fn rbac_grants_exactly_what_a_node_needs() {
    let (_, o) = owned("single-node.yaml");
    let rules = o.role.rules.as_ref().expect("rules");
    let find = |res: &str| {
        rules
            .iter()
            .find(|r| {
                r.resources
                    .as_ref()
                    .map(|x| x.contains(&res.to_string()))
                    .unwrap_or(false)
            })
            .expect(res)
    };
    assert_eq!(find("pods").verbs, vec!["get", "list", "watch", "patch"]);
    assert_eq!(
        find("leases").api_groups.as_deref(),
        Some(&["coordination.k8s.io".to_string()][..])
    );
    assert_eq!(
        find("leases").verbs,
        vec!["get", "list", "watch", "create", "update"]
    );
    assert_eq!(find("configmaps").verbs, vec!["get", "create"]);
    assert_eq!(
        find("statefulsets").verbs,
        vec!["get"],
        "M, the failover quorum's member count"
    );
    assert!(
        !rules
            .iter()
            .any(|r| r.resources.iter().flatten().any(|x| x == "secrets")),
        "nodes get secrets via env only"
    );
    let rb = &o.role_binding;
    assert_eq!(rb.role_ref.name, "solo-node");
    let s = &rb.subjects.as_ref().expect("subjects")[0];
    assert_eq!(
        (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
        ("ServiceAccount", "solo-node", Some("cms"))
    );
}

#[test]
fn pdb_allows_one_disruption() {
    let (_, o) = owned("three-nodes-arbiter-sync.yaml");
    let spec = o.pdb.spec.as_ref().expect("spec");
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(
        spec.selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get(labels::CLUSTER))
            .map(String::as_str),
        Some("acme")
    );
}

#[test]
fn single_node_defaults() {
    let (sc, o) = owned("single-node.yaml");
    assert_eq!(sc.spec.nodes, 1);
    let c = container(&o.statefulset);
    assert_eq!(
        env_value(c, "STUDIO_REPLICATION_MODE").as_deref(),
        Some("async")
    );
    assert_eq!(
        env_value(c, "STUDIO_COORDINATOR_MODE").as_deref(),
        Some("CUD")
    );
    assert_eq!(env_value(c, "STUDIO_LEASE_DURATION").as_deref(), Some("4s"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let spec = o.statefulset.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(1));
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("retention");
    assert_eq!(
        retention.when_deleted.as_deref(),
        Some("Retain"),
        "data is kept by default"
    );
    let vct = &spec.volume_claim_templates.as_ref().expect("claims")[0];
    assert_eq!(
        vct.spec.as_ref().and_then(|s| s.storage_class_name.clone()),
        None
    );
}

#[test]
fn pod_overrides_apply_but_never_break_selectors() {
    let (_, o) = owned("overrides.yaml");
    let t = &o.statefulset.spec.as_ref().expect("spec").template;
    let l = t
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("labels");
    assert_eq!(l.get("team").map(String::as_str), Some("web"));
    assert_eq!(
        l.get(labels::CLUSTER).map(String::as_str),
        Some("tuned"),
        "operator labels win"
    );
    assert!(
        !l.contains_key(labels::ROLE),
        "a user label must not pre-set the role"
    );
    let a = t
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .expect("annotations");
    assert_eq!(
        a.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    let pod = t.spec.as_ref().expect("pod");
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|n| n.get("disktype"))
            .map(String::as_str),
        Some("ssd")
    );
    assert_eq!(
        pod.tolerations.as_ref().map(|t| t[0].key.clone()),
        Some(Some("dedicated".into()))
    );
    let aff = pod.affinity.as_ref().expect("affinity");
    assert!(aff.node_affinity.is_some());
    assert!(
        aff.pod_anti_affinity.is_none(),
        "a user affinity replaces the default"
    );
    let c = container(&o.statefulset);
    assert_eq!(
        env_value(c, "STUDIO_ELIGIBLE_PATTERN").as_deref(),
        Some("tuned-[01]")
    );
    let r = env_map(c)["STUDIO_CLUSTER_TOKEN"]
        .value_from
        .clone()
        .and_then(|v| v.secret_key_ref)
        .expect("ref");
    assert_eq!(r.name, "tuned-credentials", "existingSecret is used");
}

#[test]
fn scale_down_holds_replicas_when_told() {
    let sc = fixture("three-nodes-arbiter-sync.yaml");
    let o = build::build_owned(&sc, 5).expect("build");
    assert_eq!(
        o.statefulset.spec.as_ref().and_then(|s| s.replicas),
        Some(5)
    );
}

#[test]
fn secret_holds_generated_credentials() {
    let sc = fixture("single-node.yaml");
    let mut random = [0u8; 64];
    for (i, b) in random.iter_mut().enumerate() {
        *b = i as u8;
    }
    let s = build::build_secret(&sc, &random).expect("secret");
    assert_eq!(s.metadata.name.as_deref(), Some("solo-auth"));
    let data = s.data.as_ref().expect("data");
    let jwt = String::from_utf8(data[secret_keys::JWT_KEY].0.clone()).expect("utf8");
    let token = String::from_utf8(data[secret_keys::CLUSTER_TOKEN].0.clone()).expect("utf8");
    assert_eq!(jwt.len(), 64);
    assert_eq!(token.len(), 64);
    assert_ne!(jwt, token);
    assert!(s.metadata.owner_references.is_some());
}

#[test]
fn an_object_without_uid_cannot_be_owned() {
    let mut sc = fixture("single-node.yaml");
    sc.metadata.uid = None;
    assert!(build::build_owned(&sc, 1).is_err());
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    for (file, crd) in studio_operator::crds() {
        let generated = studio_operator::crd_file_yaml(&crd).expect("crd yaml");
        for dir in ["deploy/crds", "charts/studio-operator/crds"] {
            let path = format!("{dir}/{file}");
            let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
            let committed =
                std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {full}: {e}"));
            assert!(
                committed == generated,
                "{path} drifted from the API types: run `cargo run -q -p studio-operator --bin crdgen -- --dir deploy/crds && cp deploy/crds/*.yaml charts/studio-operator/crds/`"
            );
        }
    }
    // The multi-document form is the files joined.
    let all = studio_operator::crd_yaml().expect("crd yaml");
    assert_eq!(all.matches("kind: CustomResourceDefinition").count(), 3);
    for kind in ["StudioCluster", "StudioBackup", "StudioScheduledBackup"] {
        assert!(all.contains(&format!("  kind: {kind}\n")), "{kind} missing");
    }
}

#[test]
fn with_tls_every_member_mounts_the_certificate_and_is_probed_over_https() {
    let (_, o) = owned("tls.yaml");
    let arbiter = o.arbiter.as_ref().expect("arbiter");
    for sts in [&o.statefulset, arbiter] {
        let pod_labels = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .expect("pod labels");
        // The chart's PodMonitor scrapes these pods with https because of it.
        assert_eq!(
            pod_labels.get(labels::TLS).map(String::as_str),
            Some("true")
        );
        let c = container(sts);
        assert_eq!(
            env_value(c, "STUDIO_TLS_DIR").as_deref(),
            Some(build::TLS_DIR)
        );
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == build::TLS_DIR)
            .expect("the TLS mount");
        assert_eq!(mount.read_only, Some(true));
        let volume = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.volumes.as_ref())
            .and_then(|v| v.iter().find(|v| v.name == mount.name))
            .expect("the TLS volume");
        assert_eq!(
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("secure-tls")
        );
        for probe in [&c.readiness_probe, &c.liveness_probe] {
            let scheme = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.scheme.as_deref());
            assert_eq!(scheme, Some("HTTPS"));
        }
    }
    // spec.auth.oidc reaches every member.
    for sts in [&o.statefulset, arbiter] {
        let c = container(sts);
        for (k, v) in [
            (
                "STUDIO_JWKS_URL",
                "https://idp.example/realms/cms/protocol/openid-connect/certs",
            ),
            ("STUDIO_JWT_ISSUER", "https://idp.example/realms/cms"),
            ("STUDIO_JWT_AUDIENCE", "studio"),
            ("STUDIO_JWT_ROLES_CLAIM", "realm_access.roles"),
        ] {
            assert_eq!(env_value(c, k).as_deref(), Some(v), "{k}");
        }
    }
    // Without spec.tls nothing of it.
    let (_, plain) = owned("single-node.yaml");
    let c = container(&plain.statefulset);
    assert_eq!(env_value(c, "STUDIO_TLS_DIR"), None);
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .all(|m| m.mount_path != build::TLS_DIR)
    );
}
