//! The cluster's certificates (pure: no Kubernetes calls): a CA per StudioCluster, the
//! members' certificate it signs, and the operator's client certificate.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

/// How long a cluster CA is valid. CA rotation is not automated: ten years.
pub const CA_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start being valid this long in the past (clock skew between hosts).
const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct PkiError {
    what: &'static str,
    source: rcgen::Error,
}

fn err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError { what, source }
}

/// A certificate and its key, PEM, and when it expires (Unix seconds).
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: i64,
}

fn validity(p: &mut CertificateParams, now: OffsetDateTime, duration: Duration) -> i64 {
    p.not_before = now - BACKDATE;
    p.not_after = now + duration;
    p.not_after.unix_timestamp()
}

/// A new self-signed CA for `cluster`.
pub fn new_ca(cluster: &str, now: OffsetDateTime) -> Result<Issued, PkiError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err("CA parameters"))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name
        .push(DnType::CommonName, format!("studio {cluster} CA"));
    p.distinguished_name
        .push(DnType::OrganizationName, "Studio");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let not_after = validity(&mut p, now, CA_DURATION);
    let key = KeyPair::generate().map_err(err("CA key"))?;
    let cert = p.self_signed(&key).map_err(err("CA certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Usage {
    /// A member: serves TLS and calls other members.
    Member,
    /// The operator: a client of the members only.
    Client,
}

/// A certificate for `cn` with `sans`, signed by the CA, valid for `duration`.
pub fn issue(
    ca: &Issued,
    cn: &str,
    sans: &[String],
    usage: Usage,
    now: OffsetDateTime,
    duration: Duration,
) -> Result<Issued, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(err("the CA key"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(err("the CA certificate"))?;
    let mut p = CertificateParams::new(sans.to_vec()).map_err(err("certificate names"))?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "Studio");
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = match usage {
        Usage::Member => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let not_after = validity(&mut p, now, duration);
    let key = KeyPair::generate().map_err(err("certificate key"))?;
    let cert = p.signed_by(&key, &issuer).map_err(err("signing"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// The names the members' certificate covers: every pod through the headless Service
/// (a wildcard: one Secret serves the whole StatefulSet), the cluster's Services, in
/// short and fully qualified forms. Pod IPs are not known when the certificate must
/// exist (the pod mounts it before it gets an address), so members check each other
/// by CA, not by name.
pub fn member_sans(cluster: &str, ns: &str) -> Vec<String> {
    use studio_crds::names;
    let mut v = Vec::new();
    for host in [
        format!("*.{}", names::nodes_service(cluster)),
        names::nodes_service(cluster),
        names::primary_service(cluster),
        names::replicas_service(cluster),
    ] {
        v.push(host.clone());
        v.push(format!("{host}.{ns}"));
        v.push(format!("{host}.{ns}.svc"));
        v.push(format!("{host}.{ns}.svc.cluster.local"));
    }
    v.push("localhost".into());
    v.push("127.0.0.1".into());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_certificate_chains_to_its_cluster_ca_and_names_the_services() {
        let now = OffsetDateTime::now_utc();
        let ca = new_ca("acme", now).expect("CA");
        let sans = member_sans("acme", "cms");
        assert!(
            sans.contains(&"*.acme-nodes.cms.svc".to_string()),
            "{sans:?}"
        );
        assert!(sans.contains(&"acme-primary.cms.svc.cluster.local".to_string()));
        let m = issue(
            &ca,
            "acme",
            &sans,
            Usage::Member,
            now,
            Duration::from_secs(3600),
        )
        .expect("member certificate");
        assert_eq!(
            m.not_after,
            (now + Duration::from_secs(3600)).unix_timestamp()
        );
        assert!(m.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.key_pem.contains("PRIVATE KEY"));
        // A garbled CA is an error, not a panic.
        let broken = Issued {
            key_pem: "not a key".into(),
            ..ca
        };
        assert!(
            issue(
                &broken,
                "x",
                &[],
                Usage::Client,
                now,
                Duration::from_secs(60)
            )
            .is_err()
        );
    }
}
