//! `spec.backup` and `spec.bootstrap.recovery` in the pods, from YAML fixtures: every
//! studio-node container gets the object store settings (credentials by Secret
//! reference, the CA as a mounted key); the data nodes get the restore settings once
//! the recovery source is resolved, and keep them as their template carries them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use studio_crds::node_api::backup_env as names;
use studio_crds::{RecoverySpec, StudioBackup, StudioCluster};
use studio_operator::build::{self, backup};

fn fixture(name: &str) -> StudioCluster {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn pod(sts: &StatefulSet) -> &PodSpec {
    sts.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn container(sts: &StatefulSet) -> &Container {
    &pod(sts).containers[0]
}

fn env_map(c: &Container) -> BTreeMap<String, EnvVar> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.clone()))
        .collect()
}

fn value(c: &Container, name: &str) -> Option<String> {
    env_map(c).get(name).and_then(|e| e.value.clone())
}

fn secret_ref(c: &Container, name: &str) -> (String, String) {
    let e = env_map(c)
        .remove(name)
        .unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(e.value, None, "{name} must not carry the secret's value");
    let r = e
        .value_from
        .and_then(|v| v.secret_key_ref)
        .unwrap_or_else(|| panic!("{name} is not a secretKeyRef"));
    (r.name, r.key)
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("yaml: {e}"))
}

#[test]
fn every_node_container_gets_the_object_store_settings() {
    let sc = fixture("backup.yaml");
    let o = build::build_owned(&sc, 3).expect("build");
    let arbiter = o.arbiter.as_ref().expect("arbiter");
    for sts in [&o.statefulset, arbiter] {
        let c = container(sts);
        assert_eq!(
            value(c, names::ENDPOINT).as_deref(),
            Some("https://minio.storage.svc:9000")
        );
        assert_eq!(value(c, names::BUCKET).as_deref(), Some("studio-backups"));
        assert_eq!(value(c, names::PATH).as_deref(), Some("prod/eu"));
        assert_eq!(value(c, names::REGION).as_deref(), Some("eu-west-1"));
        assert_eq!(value(c, names::ARCHIVE_TIMEOUT).as_deref(), Some("10"));
        assert_eq!(
            secret_ref(c, names::ACCESS_KEY_ID),
            ("s3-credentials".into(), "access-key".into())
        );
        assert_eq!(
            secret_ref(c, names::SECRET_ACCESS_KEY),
            ("s3-credentials".into(), "secret-key".into())
        );
        // The CA: the one key of the user's Secret, mounted read-only.
        let ca_file = value(c, names::CA_FILE).expect("CA file");
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| ca_file.starts_with(&format!("{}/", m.mount_path)))
            .expect("a mount holding the CA file");
        assert_eq!(mount.read_only, Some(true));
        let vol = pod(sts)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .expect("CA volume");
        let secret = vol.secret.as_ref().expect("secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("minio-ca"));
        let items = secret.items.as_ref().expect("items");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, "ca.pem");
        assert_eq!(ca_file, format!("{}/{}", mount.mount_path, items[0].path));
        // No restore without spec.bootstrap.recovery.
        assert_eq!(value(c, names::RESTORE_CLUSTER_ID), None);
    }
}

#[test]
fn defaults_and_no_backup() {
    let mut sc = fixture("backup.yaml");
    sc.spec.backup = Some(yaml(
        "objectStore: {bucket: b-1, credentials: {secretName: creds}}",
    ));
    let o = build::build_owned(&sc, 3).expect("build");
    let c = container(&o.statefulset);
    assert_eq!(value(c, names::ENDPOINT), None, "unset: AWS S3");
    assert_eq!(value(c, names::PATH), None);
    assert_eq!(value(c, names::REGION).as_deref(), Some("us-east-1"));
    assert_eq!(value(c, names::ARCHIVE_TIMEOUT).as_deref(), Some("5"));
    assert_eq!(
        secret_ref(c, names::ACCESS_KEY_ID),
        ("creds".into(), "ACCESS_KEY_ID".into())
    );
    assert_eq!(
        secret_ref(c, names::SECRET_ACCESS_KEY),
        ("creds".into(), "SECRET_ACCESS_KEY".into())
    );
    assert_eq!(value(c, names::CA_FILE), None);
    assert!(
        pod(&o.statefulset)
            .volumes
            .iter()
            .flatten()
            .all(|v| v.secret.is_none())
    );

    // Without spec.backup nothing of it.
    sc.spec.backup = None;
    let o = build::build_owned(&sc, 3).expect("build");
    for sts in [&o.statefulset, o.arbiter.as_ref().expect("arbiter")] {
        assert!(
            env_map(container(sts))
                .keys()
                .all(|k| !k.starts_with("STUDIO_BACKUP_")
                    && !k.starts_with("STUDIO_RESTORE_")
                    && k != names::ARCHIVE_TIMEOUT),
            "{:?}",
            env_map(container(sts)).keys()
        );
    }
}

fn recovery(text: &str) -> RecoverySpec {
    yaml(text)
}

fn cluster_with_id(name: &str, id: Option<&str>) -> StudioCluster {
    let mut sc: StudioCluster = yaml(&format!(
        "apiVersion: studio.cms.io/v1alpha1\nkind: StudioCluster\nmetadata: {{name: {name}, namespace: cms}}\nspec: {{image: s}}\n"
    ));
    if let Some(id) = id {
        sc.status = Some(studio_crds::StudioClusterStatus {
            cluster_id: Some(id.into()),
            ..Default::default()
        });
    }
    sc
}

fn studio_backup(status: &str) -> StudioBackup {
    yaml(&format!(
        "apiVersion: studio.cms.io/v1alpha1\nkind: StudioBackup\nmetadata: {{name: nightly, namespace: cms}}\nspec: {{cluster: old}}\nstatus: {status}\n"
    ))
}

#[test]
fn the_recovery_source_resolves_to_a_cluster_id_and_backup_id() {
    use backup::{ResolvedRecovery, resolve_recovery};
    let by_id = recovery("{clusterId: 7f1e-22}");
    assert_eq!(
        resolve_recovery("new", &by_id, None, None),
        Ok(ResolvedRecovery {
            cluster_id: "7f1e-22".into(),
            backup_id: None
        })
    );

    // A source StudioCluster: its status.clusterId.
    let by_cluster = recovery("{cluster: old}");
    let old = cluster_with_id("old", Some("c-old"));
    assert_eq!(
        resolve_recovery("new", &by_cluster, Some(&old), None).map(|r| r.cluster_id),
        Ok("c-old".into())
    );
    let not_yet = cluster_with_id("old", None);
    let e = resolve_recovery("new", &by_cluster, Some(&not_yet), None).expect_err("no id");
    assert!(!e.permanent);
    assert!(
        e.message.contains("spec.bootstrap.recovery.cluster")
            && e.message.contains("status.clusterId"),
        "{e:?}"
    );
    let e = resolve_recovery("new", &by_cluster, None, None).expect_err("missing");
    assert!(!e.permanent && e.message.contains("not found"), "{e:?}");
    let e = resolve_recovery("old", &by_cluster, Some(&old), None).expect_err("itself");
    assert!(e.permanent, "{e:?}");

    // A StudioBackup: Completed with both ids.
    let by_backup = recovery("{backup: nightly}");
    let done = studio_backup("{phase: Completed, backupId: b-20261129, clusterId: c-old}");
    assert_eq!(
        resolve_recovery("new", &by_backup, None, Some(&done)),
        Ok(ResolvedRecovery {
            cluster_id: "c-old".into(),
            backup_id: Some("b-20261129".into())
        })
    );
    let e = resolve_recovery("new", &by_backup, None, None).expect_err("missing");
    assert!(
        !e.permanent && e.message.contains("StudioBackup nightly not found"),
        "{e:?}"
    );
    for (status, permanent) in [
        ("{phase: Running}", false),
        ("{}", false),
        ("{phase: Failed, message: bucket unreachable}", true),
        ("{phase: Completed, backupId: b-1}", true),
    ] {
        let e = resolve_recovery("new", &by_backup, None, Some(&studio_backup(status)))
            .expect_err(status);
        assert_eq!(e.permanent, permanent, "{status}: {e:?}");
        assert!(
            e.message
                .starts_with("spec.bootstrap.recovery.backup: StudioBackup nightly"),
            "{e:?}"
        );
    }
}

#[test]
fn the_data_nodes_get_the_restore_settings_the_arbiter_does_not() {
    let sc = fixture("recovery-backup.yaml");
    // The StudioBackup must be looked up first: the pure builder refuses rather than
    // build nodes that would bootstrap an empty cluster.
    assert!(build::build_owned(&sc, 2).is_err());
    let r = sc
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.recovery.clone())
        .expect("recovery");
    let done = studio_backup("{phase: Completed, backupId: b-20261129, clusterId: c-old}");
    let resolved = backup::resolve_recovery("restored", &r, None, Some(&done)).expect("resolved");
    let env = backup::restore_env(&r, &resolved);
    let o = build::build_owned_with(&sc, 2, &env).expect("build");
    let c = container(&o.statefulset);
    assert_eq!(
        value(c, names::RESTORE_CLUSTER_ID).as_deref(),
        Some("c-old")
    );
    assert_eq!(
        value(c, names::RESTORE_BACKUP_ID).as_deref(),
        Some("b-20261129")
    );
    // Passed through as written: the node parses it.
    assert_eq!(
        value(c, names::RESTORE_TARGET_TIME).as_deref(),
        Some("2026-11-29T23:30:00+01:00")
    );
    assert_eq!(value(c, names::RESTORE_TARGET_SEQ), None);
    assert_eq!(value(c, names::RESTORE_TARGET_IMMEDIATE), None);
    assert_eq!(value(c, names::BUCKET).as_deref(), Some("studio-backups"));
    let a = container(o.arbiter.as_ref().expect("arbiter"));
    assert!(env_map(a).keys().all(|k| !k.starts_with("STUDIO_RESTORE_")));
    assert_eq!(value(a, names::BUCKET).as_deref(), Some("studio-backups"));

    // Once the StatefulSet exists its settings are kept as they are: the same template,
    // whatever happened to the source since.
    let pinned = backup::pinned_restore_env(c);
    assert_eq!(pinned, env);
    let again = build::build_owned_with(&sc, 2, &pinned).expect("build");
    assert_eq!(again.statefulset, o.statefulset);
}

#[test]
fn targets_and_a_cluster_id_source() {
    let mut sc = fixture("recovery-backup.yaml");
    for (text, name, want) in [
        (
            "{clusterId: c-9, targetSeq: 4200}",
            names::RESTORE_TARGET_SEQ,
            "4200",
        ),
        (
            "{clusterId: c-9, targetImmediate: true}",
            names::RESTORE_TARGET_IMMEDIATE,
            "true",
        ),
    ] {
        sc.spec.bootstrap = Some(yaml(&format!("recovery: {text}")));
        // A clusterId needs no lookup: the pure builder builds it.
        let o = build::build_owned(&sc, 2).expect("build");
        let c = container(&o.statefulset);
        assert_eq!(value(c, names::RESTORE_CLUSTER_ID).as_deref(), Some("c-9"));
        assert_eq!(value(c, names::RESTORE_BACKUP_ID), None);
        assert_eq!(value(c, name).as_deref(), Some(want), "{text}");
    }
    // targetImmediate: false is no target.
    sc.spec.bootstrap = Some(yaml("recovery: {clusterId: c-9, targetImmediate: false}"));
    let o = build::build_owned(&sc, 2).expect("build");
    assert_eq!(
        value(container(&o.statefulset), names::RESTORE_TARGET_IMMEDIATE),
        None
    );
}
