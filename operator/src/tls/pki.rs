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

/// The certificates (PEM blocks, in order) in `pem`; anything else is skipped.
pub fn pem_certificates(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(b) = rest.find(BEGIN) {
        let Some(e) = rest[b..].find(END) else { break };
        out.push(format!("{}\n", &rest[b..b + e + END.len()]));
        rest = &rest[b + e + END.len()..];
    }
    out
}

/// A CA the user brings (spec.tls.caSecret).
#[derive(Clone, Debug)]
pub struct UserCa {
    /// The CA certificate (the first of the Secret's `tls.crt`) and its key.
    pub ca: Issued,
    /// Certificates served after the CA's in the members' `tls.crt`: the rest of the
    /// Secret's `tls.crt` and its `ca.crt`, so that a client trusting the root can build
    /// the path.
    pub chain: Vec<String>,
}

/// Checks and reads a user's CA: `cert_pem` starts with a CA certificate that is valid
/// now, `key_pem` is its key in a form the operator signs with. The error says what to
/// fix.
pub fn user_ca(
    cert_pem: &str,
    key_pem: &str,
    chain_pem: Option<&str>,
    now: OffsetDateTime,
) -> Result<UserCa, String> {
    use rcgen::PublicKeyData;
    let certs = pem_certificates(cert_pem);
    let first = certs
        .first()
        .ok_or("tls.crt holds no PEM certificate")?
        .clone();
    let (_, pem) = x509_parser::pem::parse_x509_pem(first.as_bytes())
        .map_err(|e| format!("tls.crt: not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("tls.crt: unreadable certificate: {e}"))?;
    if !cert.is_ca() {
        return Err("tls.crt is not a CA certificate (basicConstraints CA:TRUE)".into());
    }
    let not_after = cert.validity().not_after.timestamp();
    if not_after <= now.unix_timestamp() {
        return Err(format!(
            "the CA certificate expired ({})",
            cert.validity().not_after
        ));
    }
    let key = KeyPair::from_pem(key_pem).map_err(|e| {
        format!(
            "tls.key is not an unencrypted PKCS#8 key the operator can sign with (ECDSA P-256/P-384, Ed25519 or RSA; convert with 'openssl pkcs8 -topk8 -nocrypt'): {e}"
        )
    })?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err("tls.key is not the key of the certificate in tls.crt".into());
    }
    let mut chain: Vec<String> = certs[1..].to_vec();
    for c in chain_pem.map(pem_certificates).unwrap_or_default() {
        if c != first && !chain.contains(&c) {
            chain.push(c);
        }
    }
    Ok(UserCa {
        ca: Issued {
            cert_pem: first,
            key_pem: key_pem.to_string(),
            not_after,
        },
        chain,
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
    fn a_user_ca_is_checked_and_issues_member_certificates() {
        let now = OffsetDateTime::now_utc();
        let ca = new_ca("byo", now).expect("CA");
        let other = new_ca("other", now).expect("other CA");
        let root = new_ca("root", now).expect("root");
        let u = user_ca(&ca.cert_pem, &ca.key_pem, Some(&root.cert_pem), now).expect("user CA");
        assert_eq!(u.ca.cert_pem, pem_certificates(&ca.cert_pem)[0]);
        assert_eq!(u.chain, pem_certificates(&root.cert_pem));
        assert_eq!(u.ca.not_after, ca.not_after);
        let m = issue(
            &u.ca,
            "byo",
            &member_sans("byo", "cms"),
            Usage::Member,
            now,
            Duration::from_secs(600),
        )
        .expect("member certificate");
        assert!(m.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // A bundle: the first certificate is the CA, the rest its chain.
        let bundle = format!("{}{}", ca.cert_pem, root.cert_pem);
        let u = user_ca(&bundle, &ca.key_pem, None, now).expect("bundle");
        assert_eq!(u.chain.len(), 1);
        // The key of another CA, a leaf instead of a CA, garbage, an expired CA.
        let e = user_ca(&ca.cert_pem, &other.key_pem, None, now).expect_err("wrong key");
        assert!(e.contains("not the key"), "{e}");
        let e = user_ca(&m.cert_pem, &m.key_pem, None, now).expect_err("leaf");
        assert!(e.contains("not a CA"), "{e}");
        let e = user_ca("junk", &ca.key_pem, None, now).expect_err("junk");
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = user_ca(
            &ca.cert_pem,
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
            None,
            now,
        )
        .expect_err("not PKCS#8");
        assert!(e.contains("PKCS#8"), "{e}");
        let later = now + CA_DURATION + Duration::from_secs(3600);
        let e = user_ca(&ca.cert_pem, &ca.key_pem, None, later).expect_err("expired");
        assert!(e.contains("expired"), "{e}");
    }

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
