//! Every example under examples/ is a StudioCluster the operator accepts and builds.

use studio_crds::StudioCluster;
use studio_operator::{build, plan};

#[test]
fn examples_parse_validate_and_build() {
    let dir = format!("{}/../examples", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{dir}: {e}")).path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        // Other manifests live here too (e.g. node-rbac.yaml).
        if !text.lines().any(|l| l.trim() == "kind: StudioCluster") {
            continue;
        }
        let mut sc: StudioCluster = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{path:?} is not a StudioCluster: {e}"));
        sc.metadata.namespace = Some("default".into());
        sc.metadata.uid = Some("example-uid".into());
        plan::validate(&sc).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let o = build::build_owned(&sc, sc.spec.nodes).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(o.arbiter.is_some(), sc.spec.arbiter.enabled, "{path:?}");
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the three documented examples, found {seen}"
    );
}
