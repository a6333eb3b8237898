//! spec.tls.issuerRef: the cert-manager Certificates the operator applies, built from the
//! YAML fixtures a user would apply.

use serde_json::{Value, json};
use studio_crds::StudioCluster;
use studio_operator::build::certificates::{build_certificates, certificate_resource};

fn fixture(name: &str) -> StudioCluster {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// The Certificates as the API server would receive them (apply patch bodies).
fn certificates(name: &str) -> Vec<Value> {
    let sc = fixture(name);
    build_certificates(&sc)
        .unwrap_or_else(|e| panic!("build {name}: {e}"))
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or_else(|e| panic!("serialize: {e}")))
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn with_an_issuer_ref_the_members_and_the_operator_get_a_certificate() {
    let certs = certificates("tls-cert-manager.yaml");
    assert_eq!(certs.len(), 2);
    let (members, client) = (&certs[0], &certs[1]);
    for c in &certs {
        assert_eq!(c["apiVersion"], "cert-manager.io/v1");
        assert_eq!(c["kind"], "Certificate");
        assert_eq!(c["metadata"]["namespace"], "cms");
        // Owned by the StudioCluster (deleted with it), labelled like every object.
        let owner = &c["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "StudioCluster");
        assert_eq!(owner["uid"], "0a1b2c3d-0000-4000-8000-000000000005");
        assert_eq!(owner["controller"], true);
        assert_eq!(
            c["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "studio-operator"
        );
        let spec = &c["spec"];
        assert_eq!(
            spec["issuerRef"],
            json!({"name": "studio-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        assert_eq!(spec["duration"], "86400s");
        assert_eq!(spec["renewBefore"], "3600s");
        assert_eq!(spec["privateKey"]["algorithm"], "ECDSA");
        assert_eq!(spec["privateKey"]["encoding"], "PKCS8");
        assert_eq!(
            spec["secretTemplate"]["labels"]["studio.cms.io/cluster"],
            "managed"
        );
        assert_eq!(
            spec["secretTemplate"]["labels"]["app.kubernetes.io/managed-by"],
            "studio-operator"
        );
    }

    // The members' certificate: Secret <name>-tls (what the pods mount), every name
    // the rcgen-issued certificate has, the loopback address as an IP SAN.
    assert_eq!(members["metadata"]["name"], "managed-members");
    let spec = &members["spec"];
    assert_eq!(spec["secretName"], "managed-tls");
    let dns = strings(&spec["dnsNames"]);
    for n in [
        "*.managed-nodes.cms.svc",
        "*.managed-nodes.cms.svc.cluster.local",
        "managed-primary",
        "managed-replicas.cms.svc",
        "localhost",
    ] {
        assert!(dns.contains(&n), "{n} not in {dns:?}");
    }
    assert!(
        !dns.contains(&"127.0.0.1"),
        "an IP among the DNS names: {dns:?}"
    );
    assert_eq!(strings(&spec["ipAddresses"]), ["127.0.0.1"]);
    let usages = strings(&spec["usages"]);
    assert!(usages.contains(&"server auth") && usages.contains(&"client auth"));

    // The operator's client identity.
    assert_eq!(client["metadata"]["name"], "managed-operator-client");
    let spec = &client["spec"];
    assert_eq!(spec["secretName"], "managed-operator-client-tls");
    assert_eq!(spec["commonName"], "studio-operator");
    let usages = strings(&spec["usages"]);
    assert!(usages.contains(&"client auth") && !usages.contains(&"server auth"));
    assert!(spec.get("dnsNames").is_none());
}

#[test]
fn an_issuer_kind_defaults_to_issuer_and_other_tls_sources_get_no_certificate() {
    let mut sc = fixture("tls-cert-manager.yaml");
    let tls = sc.spec.tls.as_mut().expect("tls");
    let issuer: studio_crds::IssuerRef =
        serde_json::from_value(json!({"name": "local-ca"})).expect("issuerRef");
    tls.issuer_ref = Some(issuer);
    let certs = build_certificates(&sc).expect("build");
    let c = serde_json::to_value(&certs[0]).expect("json");
    assert_eq!(
        c["spec"]["issuerRef"],
        json!({"name": "local-ca", "kind": "Issuer", "group": "cert-manager.io"})
    );
    // Generated CA, the user's CA, TLS off: the operator issues, no Certificate.
    for f in ["tls.yaml", "single-node.yaml"] {
        assert!(certificates(f).is_empty(), "{f}");
    }
    let mut byo = fixture("tls-cert-manager.yaml");
    let tls = byo.spec.tls.as_mut().expect("tls");
    tls.issuer_ref = None;
    tls.ca_secret = Some("my-ca".into());
    assert!(build_certificates(&byo).expect("build").is_empty());
    byo.spec.tls.as_mut().expect("tls").enabled = false;
    assert!(build_certificates(&byo).expect("build").is_empty());
    assert_eq!(certificate_resource().plural, "certificates");
}
