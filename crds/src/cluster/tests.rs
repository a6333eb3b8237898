//! Schema tests: the generated CRD carries the defaults and rules that make `kubectl
//! apply` refuse bad specs, and the CEL rules (evaluated client-side with kube's CEL
//! validator, defaults applied as the apiserver does) accept good specs and refuse bad
//! ones with a message naming the field.

use super::*;
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = StudioCluster::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(serde_json::to_value)
        .and_then(Result::ok);
    match schema {
        Some(s) => s,
        None => panic!("CRD has no openAPIV3Schema"),
    }
}

fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "studio.cms.io/v1alpha1",
        "kind": "StudioCluster",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": spec,
    })
}

/// CEL errors for `spec` (created), or for `old` → `spec` (updated).
fn cel_errors(spec: Value, old: Option<Value>) -> Vec<String> {
    let old = old.map(cluster);
    match Validator::new().validate(&schema(), &cluster(spec), old.as_ref()) {
        Ok(()) => vec![],
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_refused(spec: Value, old: Option<Value>, field: &str) {
    let errs = cel_errors(spec.clone(), old);
    assert!(
        errs.iter().any(|e| e.contains(field)),
        "spec {spec} should be refused naming {field}, got {errs:?}"
    );
}

fn schema_at<'a>(s: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = s;
    for p in path {
        cur = &cur["properties"][*p];
    }
    cur
}

#[test]
fn crd_identity_and_printer_columns() {
    let crd = StudioCluster::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("studioclusters.studio.cms.io")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    let names = &crd.spec.names;
    assert_eq!(
        names.short_names.as_deref(),
        Some(&["stc".to_string(), "studio".to_string()][..])
    );
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let cols: Vec<_> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("Nodes", ".spec.nodes"),
            ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
            ("Members", ".status.membersReady"),
            ("Primary", ".status.currentPrimary"),
            ("Writable", ".status.writable"),
            ("Max-Lag", ".status.maxLag"),
            ("Phase", ".status.phase"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn schema_has_openapi_bounds_enums_and_defaults() {
    let s = schema();
    let spec = schema_at(&s, &["spec"]);
    assert_eq!(spec["required"], json!(["image"]));
    assert_eq!(schema_at(spec, &["nodes"])["minimum"], json!(1.0));
    assert_eq!(schema_at(spec, &["nodes"])["default"], json!(1));
    assert_eq!(schema_at(spec, &["image"])["minLength"], json!(1));
    assert_eq!(schema_at(spec, &["image"])["pattern"], json!(r"^\S+$"));
    assert_eq!(
        schema_at(spec, &["coordinatorMode"])["enum"],
        json!(["CUD", "ALL", "DISABLED"])
    );
    assert_eq!(
        schema_at(spec, &["coordinatorMode"])["default"],
        json!("CUD")
    );
    assert_eq!(
        schema_at(spec, &["replication", "mode"])["enum"],
        json!(["async", "sync"])
    );
    assert_eq!(
        schema_at(spec, &["replication", "syncReplicas"])["minimum"],
        json!(1.0)
    );
    assert_eq!(
        schema_at(spec, &["upgrades", "primaryUpdateStrategy"])["enum"],
        json!(["unsupervised", "supervised"])
    );
    assert_eq!(
        schema_at(spec, &["storage", "pvcRetention"])["enum"],
        json!(["Retain", "Delete"])
    );
    assert_eq!(
        schema_at(spec, &["storage", "size"])["default"],
        json!("1Gi")
    );
    assert_eq!(
        schema_at(spec, &["imagePullPolicy"])["enum"],
        json!(["Always", "IfNotPresent", "Never"])
    );
    assert_eq!(
        schema_at(spec, &["election", "leaseDurationSeconds"])["default"],
        json!(4)
    );
    assert!(schema_at(spec, &["pod", "affinity"]).is_object());
    assert!(schema_at(spec, &["pod", "tolerations"]).is_object());
    assert!(schema_at(spec, &["auth", "existingSecret"])["pattern"].is_string());
}

#[test]
fn schema_contains_every_cel_rule() {
    let text = serde_json::to_string(&schema()).unwrap_or_default();
    for needle in [
        "self.replication.syncReplicas <= self.nodes - 1",
        "self.renewDeadlineSeconds < self.leaseDurationSeconds",
        "double(self.retryPeriodSeconds) * 1.2 < double(self.renewDeadlineSeconds)",
        "!has(self.priorities) || !has(self.eligiblePattern)",
        "quantity(self).compareTo(quantity(oldSelf)) >= 0",
        "isQuantity(self)",
        "self.storageClassName == oldSelf.storageClassName",
        "self.election.priorities.exists",
    ] {
        assert!(text.contains(needle), "schema lacks rule {needle}");
    }
}

#[test]
fn status_conditions_are_a_map_list_keyed_by_type() {
    let s = schema();
    let conds = schema_at(&s, &["status", "conditions"]);
    assert_eq!(conds["x-kubernetes-list-type"], json!("map"));
    assert_eq!(conds["x-kubernetes-list-map-keys"], json!(["type"]));
    for f in [
        "observedGeneration",
        "phase",
        "currentPrimary",
        "members",
        "lastFailover",
        "clusterId",
        "readyNodes",
    ] {
        assert!(
            schema_at(&s, &["status", f]).is_object(),
            "status lacks {f}"
        );
    }
}

#[test]
fn minimal_and_full_specs_are_accepted() {
    assert_eq!(
        cel_errors(json!({"image": "studio:1"}), None),
        Vec::<String>::new()
    );
    let full = json!({
        "nodes": 3,
        "image": "studio:1",
        "arbiter": {"enabled": true},
        "storage": {"size": "10Gi", "storageClassName": "fast", "pvcRetention": "Delete"},
        "replication": {"mode": "sync", "syncReplicas": 3},
        "coordinatorMode": "ALL",
        "election": {"leaseDurationSeconds": 6, "renewDeadlineSeconds": 4, "retryPeriodSeconds": 1,
                     "priorities": {"demo-0": 0, "demo-1": 10, "demo-2": 5}},
        "upgrades": {"primaryUpdateStrategy": "supervised"},
    });
    assert_eq!(cel_errors(full, None), Vec::<String>::new());
}

#[test]
fn sync_replicas_must_be_achievable() {
    // 1 node, no arbiter: nobody can acknowledge.
    assert_refused(
        json!({"image": "s", "nodes": 1, "replication": {"mode": "sync"}}),
        None,
        "syncReplicas",
    );
    // 3 nodes: at most 2; with the arbiter 3.
    assert_refused(
        json!({"image": "s", "nodes": 3, "replication": {"mode": "sync", "syncReplicas": 3}}),
        None,
        "syncReplicas",
    );
    assert!(
        cel_errors(
            json!({"image": "s", "nodes": 3, "arbiter": {"enabled": true}, "replication": {"mode": "sync", "syncReplicas": 3}}),
            None
        )
        .is_empty()
    );
    // async mode ignores syncReplicas.
    assert!(
        cel_errors(
            json!({"image": "s", "nodes": 1, "replication": {"syncReplicas": 5}}),
            None
        )
        .is_empty()
    );
}

#[test]
fn election_timings_must_be_consistent() {
    assert_refused(
        json!({"image": "s", "election": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 10}}),
        None,
        "renewDeadlineSeconds",
    );
    assert_refused(
        json!({"image": "s", "election": {"leaseDurationSeconds": 15, "renewDeadlineSeconds": 5, "retryPeriodSeconds": 5}}),
        None,
        "retryPeriodSeconds",
    );
    assert_refused(
        json!({"image": "s", "election": {"priorities": {"demo-0": 1}, "eligiblePattern": "demo-[01]"}}),
        None,
        "eligiblePattern",
    );
    assert_refused(
        json!({"image": "s", "election": {"priorities": {"demo-0": 0, "demo-1": 0}}}),
        None,
        "priorities",
    );
    assert_refused(
        json!({"image": "s", "election": {"priorities": {"demo-0": -1, "demo-1": 3}}}),
        None,
        "priorities",
    );
}

#[test]
fn storage_size_is_a_quantity_that_only_grows() {
    assert_refused(
        json!({"image": "s", "storage": {"size": "lots"}}),
        None,
        "spec.storage.size",
    );
    assert_refused(
        json!({"image": "s", "storage": {"size": "0"}}),
        None,
        "spec.storage.size",
    );
    let old = json!({"image": "s", "storage": {"size": "10Gi"}});
    assert_refused(
        json!({"image": "s", "storage": {"size": "5Gi"}}),
        Some(old.clone()),
        "can only grow",
    );
    assert!(
        cel_errors(
            json!({"image": "s", "storage": {"size": "20Gi"}}),
            Some(old.clone())
        )
        .is_empty()
    );
    // 10240Mi == 10Gi: not a shrink.
    assert!(
        cel_errors(
            json!({"image": "s", "storage": {"size": "10240Mi"}}),
            Some(old)
        )
        .is_empty()
    );
}

#[test]
fn storage_class_is_immutable() {
    let old = json!({"image": "s", "storage": {"storageClassName": "fast"}});
    assert_refused(
        json!({"image": "s", "storage": {"storageClassName": "slow"}}),
        Some(old.clone()),
        "storageClassName",
    );
    assert_refused(json!({"image": "s"}), Some(old.clone()), "storageClassName");
    assert!(
        cel_errors(
            json!({"image": "s", "storage": {"storageClassName": "fast"}}),
            Some(old)
        )
        .is_empty()
    );
}

#[test]
fn spec_round_trips_with_defaults() {
    let sc: StudioClusterSpec = match serde_json::from_value(json!({"image": "studio:1"})) {
        Ok(s) => s,
        Err(e) => panic!("minimal spec does not parse: {e}"),
    };
    assert_eq!(sc.nodes, 1);
    assert_eq!(sc.coordinator_mode, CoordinatorMode::Cud);
    assert_eq!(sc.replication.mode, ReplicationMode::Async);
    assert_eq!(sc.storage.size, "1Gi");
    assert_eq!(sc.election.renew_deadline_seconds, 3);
    let back = serde_json::to_value(&sc).unwrap_or_default();
    assert_eq!(back["coordinatorMode"], json!("CUD"));
    assert_eq!(back["replication"]["mode"], json!("async"));
}

#[test]
fn tls_ca_secret_and_issuer_ref_are_exclusive_and_immutable() {
    let issuer = json!({"name": "studio-ca"});
    let with = |tls: Value| json!({"image": "s", "tls": tls});
    // One or the other, not both.
    assert_refused(
        with(json!({"enabled": true, "caSecret": "my-ca", "issuerRef": issuer})),
        None,
        "issuerRef",
    );
    for tls in [
        json!({"enabled": true, "caSecret": "my-ca"}),
        json!({"enabled": true, "issuerRef": issuer}),
        json!({"enabled": true, "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}),
    ] {
        let errs = cel_errors(with(tls.clone()), None);
        assert!(errs.is_empty(), "{tls}: {errs:?}");
    }
    // Chosen at creation: neither added, removed nor changed later.
    let old = with(json!({"enabled": true, "caSecret": "my-ca"}));
    assert_refused(
        with(json!({"enabled": true, "caSecret": "other-ca"})),
        Some(old.clone()),
        "caSecret",
    );
    assert_refused(
        with(json!({"enabled": true})),
        Some(old.clone()),
        "caSecret",
    );
    assert!(cel_errors(old.clone(), Some(old)).is_empty());
    let old = with(json!({"enabled": true, "issuerRef": issuer}));
    assert_refused(
        with(json!({"enabled": true, "issuerRef": {"name": "other"}})),
        Some(old.clone()),
        "issuerRef",
    );
    assert_refused(
        with(json!({"enabled": true, "issuerRef": {"name": "studio-ca", "kind": "ClusterIssuer"}})),
        Some(old.clone()),
        "issuerRef",
    );
    assert_refused(
        with(json!({"enabled": true})),
        Some(old.clone()),
        "issuerRef",
    );
    // Added later.
    assert_refused(
        with(json!({"enabled": true, "issuerRef": issuer})),
        Some(with(json!({"enabled": true}))),
        "issuerRef",
    );
    assert!(cel_errors(old.clone(), Some(old)).is_empty());
    // cert-manager's minimum duration and renewBefore.
    assert_refused(
        with(
            json!({"enabled": true, "issuerRef": issuer, "certificateDurationSeconds": 600, "renewBeforeSeconds": 300}),
        ),
        None,
        "certificateDurationSeconds",
    );
    // The issuer's kind is Issuer or ClusterIssuer, group cert-manager.io by default.
    let spec: TlsSpec =
        match serde_json::from_value(json!({"enabled": true, "issuerRef": {"name": "x"}})) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
    let r = spec.issuer_ref.unwrap_or_else(|| panic!("no issuerRef"));
    assert_eq!(
        (r.kind, r.group.as_str()),
        (IssuerKind::Issuer, "cert-manager.io")
    );
    let kind = schema_at(&schema(), &["spec", "tls", "issuerRef", "kind"]).clone();
    assert_eq!(kind["enum"], json!(["Issuer", "ClusterIssuer"]), "{kind}");
}

fn backup() -> Value {
    json!({"objectStore": {"bucket": "studio-backups", "credentials": {"secretName": "s3"}}})
}

#[test]
fn backup_and_recovery_schema_has_its_rules_and_defaults() {
    let s = schema();
    let text = serde_json::to_string(&s).unwrap_or_default();
    for needle in [
        "[has(self.backup), has(self.clusterId), has(self.cluster)].filter(x, x).size() == 1",
        "has(self.targetImmediate) && self.targetImmediate",
        "!has(self.bootstrap) || !has(self.bootstrap.recovery) || has(self.backup)",
        "self.bootstrap == oldSelf.bootstrap",
    ] {
        assert!(text.contains(needle), "schema lacks rule {needle}");
    }
    let b = schema_at(&s, &["spec", "backup"]);
    assert_eq!(
        schema_at(b, &["archiveTimeoutSeconds"])["default"],
        json!(5)
    );
    assert_eq!(
        schema_at(b, &["objectStore", "region"])["default"],
        json!("us-east-1")
    );
    assert_eq!(
        schema_at(b, &["objectStore", "credentials", "accessKeyIdKey"])["default"],
        json!("ACCESS_KEY_ID")
    );
    let mut targets: Vec<String> =
        serde_json::from_value(schema_at(b, &["target"])["enum"].clone()).unwrap_or_default();
    targets.sort();
    assert_eq!(targets, ["prefer-standby", "primary"]);
    for f in ["lastArchivedSeq", "archiveLagSeconds", "destination"] {
        assert!(
            schema_at(&s, &["status", "backup", f]).is_object(),
            "status.backup lacks {f}"
        );
    }
}

#[test]
fn recovery_needs_one_source_one_target_and_spec_backup() {
    let with = |recovery: Value| json!({"image": "s", "backup": backup(), "bootstrap": {"recovery": recovery}});
    for ok in [
        json!({"backup": "nightly"}),
        json!({"cluster": "old"}),
        json!({"clusterId": "0f3c-11aa", "targetSeq": 1200}),
        json!({"cluster": "old", "targetTime": "2026-11-30T12:00:00Z"}),
        json!({"backup": "nightly", "targetImmediate": true}),
        json!({"backup": "nightly", "targetImmediate": false, "targetSeq": 5}),
    ] {
        let errs = cel_errors(with(ok.clone()), None);
        assert!(errs.is_empty(), "{ok}: {errs:?}");
    }
    assert_refused(
        with(json!({})),
        None,
        "exactly one of backup, cluster or clusterId",
    );
    assert_refused(
        with(json!({"backup": "nightly", "cluster": "old"})),
        None,
        "exactly one of backup, cluster or clusterId",
    );
    assert_refused(
        with(json!({"cluster": "old", "targetSeq": 5, "targetTime": "2026-11-30T12:00:00Z"})),
        None,
        "at most one of targetSeq, targetTime, targetImmediate",
    );
    assert_refused(
        with(json!({"cluster": "old", "targetSeq": 5, "targetImmediate": true})),
        None,
        "targetImmediate",
    );
    // Recovery reads the object store of spec.backup.
    assert_refused(
        json!({"image": "s", "bootstrap": {"recovery": {"cluster": "old"}}}),
        None,
        "spec.bootstrap.recovery",
    );
    // Fixed at creation.
    let old = with(json!({"cluster": "old"}));
    assert_refused(
        with(json!({"cluster": "other"})),
        Some(old.clone()),
        "spec.bootstrap",
    );
    assert_refused(
        json!({"image": "s", "backup": backup()}),
        Some(old.clone()),
        "spec.bootstrap",
    );
    assert_refused(
        old.clone(),
        Some(json!({"image": "s", "backup": backup()})),
        "spec.bootstrap",
    );
    assert!(cel_errors(old.clone(), Some(old)).is_empty());
    // spec.backup alone may come and go.
    assert!(
        cel_errors(
            json!({"image": "s", "backup": backup()}),
            Some(json!({"image": "s"}))
        )
        .is_empty()
    );
}
