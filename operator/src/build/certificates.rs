//! spec.tls.issuerRef: the cert-manager `Certificate` objects (cert-manager.io/v1, built
//! as dynamic objects: the operator does not depend on cert-manager's types) for the
//! members (Secret `<name>-tls`, mounted by every pod) and for the operator's own client
//! identity (Secret `<name>-operator-client-tls`). cert-manager issues and renews them.

use std::net::IpAddr;

use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use studio_crds::{IssuerRef, StudioCluster, TlsSpec, names};

use super::{Meta, common_labels, meta_of, object_meta};
use crate::error::Error;
use crate::tls::pki;

/// The Common Name of the operator's client certificate.
pub const OPERATOR_CLIENT_CN: &str = "studio-operator";

/// cert-manager's Certificate resource.
pub fn certificate_resource() -> ApiResource {
    ApiResource {
        group: "cert-manager.io".into(),
        version: "v1".into(),
        api_version: "cert-manager.io/v1".into(),
        kind: "Certificate".into(),
        plural: "certificates".into(),
    }
}

/// The Certificates cert-manager must keep for `sc`: the members' and the operator's
/// client certificate. Empty unless TLS is on with `issuerRef`.
pub fn build_certificates(sc: &StudioCluster) -> Result<Vec<DynamicObject>, Error> {
    let Some((tls, issuer)) = sc.tls().and_then(|t| t.issuer_ref.as_ref().map(|i| (t, i))) else {
        return Ok(Vec::new());
    };
    let m = meta_of(sc)?;
    let (dns, ips): (Vec<String>, Vec<String>) = pki::member_sans(m.name, m.namespace)
        .into_iter()
        .partition(|n| n.parse::<IpAddr>().is_err());
    let members = json!({
        "secretName": names::tls_secret(m.name),
        "dnsNames": dns,
        "ipAddresses": ips,
        "usages": ["digital signature", "server auth", "client auth"],
    });
    let client = json!({
        "secretName": names::operator_client_secret(m.name),
        "commonName": OPERATOR_CLIENT_CN,
        "usages": ["digital signature", "client auth"],
    });
    Ok(vec![
        certificate(&m, names::members_certificate(m.name), tls, issuer, members),
        certificate(
            &m,
            names::operator_client_certificate(m.name),
            tls,
            issuer,
            client,
        ),
    ])
}

fn certificate(
    m: &Meta<'_>,
    name: String,
    tls: &TlsSpec,
    issuer: &IssuerRef,
    mut spec: Value,
) -> DynamicObject {
    let common = json!({
        "duration": format!("{}s", tls.certificate_duration_seconds),
        "renewBefore": format!("{}s", tls.renew_before_seconds),
        "subject": {"organizations": ["Studio"]},
        // A new key with every certificate; PKCS#8 is what every reader of the Secret
        // (the nodes, the operator) parses.
        "privateKey": {
            "algorithm": "ECDSA",
            "size": 256,
            "encoding": "PKCS8",
            "rotationPolicy": "Always",
        },
        "issuerRef": {
            "name": issuer.name,
            "kind": issuer.kind.as_str(),
            "group": issuer.group,
        },
        // The Secret carries the cluster's labels like the operator's own objects (the
        // operator's Secret watch selects on them).
        "secretTemplate": {"labels": common_labels(m.name)},
    });
    if let (Some(s), Some(c)) = (spec.as_object_mut(), common.as_object()) {
        for (k, v) in c {
            s.insert(k.clone(), v.clone());
        }
    }
    let meta = object_meta(m, name.clone(), Default::default());
    let mut obj = DynamicObject::new(&name, &certificate_resource())
        .within(m.namespace)
        .data(json!({ "spec": spec }));
    obj.metadata = meta;
    obj
}
