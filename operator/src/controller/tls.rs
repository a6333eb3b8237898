//! spec.tls: the cluster CA (Secret `<name>-ca`, created once), the members'
//! certificate (Secret `<name>-tls`, issued by it and renewed `renewBeforeSeconds`
//! before it expires; the nodes re-read the mounted files), and the operator's own
//! client certificate for its calls to the nodes (in memory, reissued daily).

use std::collections::BTreeMap;
use std::str::FromStr;

use studio_crds::tls_keys;
use time::OffsetDateTime;

use super::*;
use crate::tls::pki::{self, Issued, Usage};

/// Validity of the operator's client certificate (kept in memory only).
const CLIENT_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Reissue the operator's client certificate when less than this is left.
const CLIENT_RENEW: Duration = Duration::from_secs(12 * 3600);

/// The operator's mTLS client for one cluster.
pub struct ClusterClient {
    ca_pem: String,
    not_after: i64,
    pub client: NodeClient,
}

fn rfc3339(unix: i64) -> String {
    Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The certificate and key stored under `cert_key`/`key_key` in `s`, with its expiry.
fn stored(s: &Secret, cert_key: &str, key_key: &str) -> Option<Issued> {
    let data = s.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let not_after = s
        .metadata
        .annotations
        .as_ref()?
        .get(annotations::NOT_AFTER)
        .and_then(|t| Timestamp::from_str(t).ok())?
        .as_second();
    Some(Issued {
        cert_pem: text(cert_key)?,
        key_pem: text(key_key)?,
        not_after,
    })
}

/// Ensures the CA and the members' certificate; returns how long until the member
/// certificate is due for renewal (None without TLS).
pub(super) async fn ensure_tls(ctx: &Context, sc: &StudioCluster) -> Result<Option<Duration>> {
    let key = key(sc);
    let Some(spec) = sc.tls() else {
        if let Ok(mut m) = ctx.tls_clients.lock() {
            m.remove(&key);
        }
        return Ok(None);
    };
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = sc.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let now = OffsetDateTime::now_utc();

    let ca_name = names::ca_secret(&name);
    let existing = api.get_opt(&ca_name).await?;
    let ca = match existing {
        Some(s) => stored(&s, tls_keys::CA, tls_keys::CA_KEY).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "Secret {ca_name} lacks {} / {} or its {} annotation",
                tls_keys::CA,
                tls_keys::CA_KEY,
                annotations::NOT_AFTER
            ))
        })?,
        None => {
            let ca = pki::new_ca(&name, now).map_err(|e| Error::Tls(e.to_string()))?;
            let s = build::build_tls_secret(
                sc,
                ca_name.clone(),
                "Opaque",
                BTreeMap::from([
                    (tls_keys::CA.to_string(), ca.cert_pem.clone()),
                    (tls_keys::CA_KEY.to_string(), ca.key_pem.clone()),
                ]),
                &rfc3339(ca.not_after),
            )?;
            match api.create(&PostParams::default(), &s).await {
                Ok(_) => {
                    ctx.event(
                        sc,
                        EventType::Normal,
                        "CertificateAuthorityCreated",
                        format!("created the cluster CA in Secret {ca_name}"),
                    )
                    .await;
                    ca
                }
                // Another operator replica created it meanwhile: use theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let s = api.get(&ca_name).await?;
                    stored(&s, tls_keys::CA, tls_keys::CA_KEY)
                        .ok_or(Error::SecretKey(ca_name.clone(), tls_keys::CA_KEY))?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };

    let tls_name = names::tls_secret(&name);
    let renew_before = spec.renew_before_seconds;
    let current = api.get_opt(&tls_name).await?;
    let valid = current.as_ref().and_then(|s| {
        let issued = stored(s, tls_keys::CERT, tls_keys::KEY)?;
        let same_ca = s
            .data
            .as_ref()
            .and_then(|d| d.get(tls_keys::CA))
            .is_some_and(|b| b.0 == ca.cert_pem.as_bytes());
        (same_ca && now.unix_timestamp() < issued.not_after - renew_before).then_some(issued)
    });
    let member = match valid {
        Some(m) => m,
        None => {
            let duration = Duration::from_secs(spec.certificate_duration_seconds.max(60) as u64);
            let m = pki::issue(
                &ca,
                &name,
                &pki::member_sans(&name, &ns),
                Usage::Member,
                now,
                duration,
            )
            .map_err(|e| Error::Tls(e.to_string()))?;
            let s = build::build_tls_secret(
                sc,
                tls_name.clone(),
                "kubernetes.io/tls",
                BTreeMap::from([
                    (tls_keys::CERT.to_string(), m.cert_pem.clone()),
                    (tls_keys::KEY.to_string(), m.key_pem.clone()),
                    (tls_keys::CA.to_string(), ca.cert_pem.clone()),
                ]),
                &rfc3339(m.not_after),
            )?;
            ssa(&api, &s).await?;
            let (reason, verb) = if current.is_some() {
                ("CertificateRenewed", "renewed")
            } else {
                ("CertificateIssued", "issued")
            };
            ctx.event(
                sc,
                EventType::Normal,
                reason,
                format!(
                    "{verb} the members' certificate in Secret {tls_name}, valid until {}",
                    rfc3339(m.not_after)
                ),
            )
            .await;
            m
        }
    };
    client_for(ctx, &key, &name, &ca, now)?;
    let due_in = member.not_after - renew_before - now.unix_timestamp();
    Ok(Some(Duration::from_secs(due_in.max(1) as u64)))
}

/// Keeps the operator's client for the cluster: a new one when the CA changed or the
/// client certificate is half-way through its life.
fn client_for(
    ctx: &Context,
    key: &str,
    cluster: &str,
    ca: &Issued,
    now: OffsetDateTime,
) -> Result<()> {
    let fresh = ctx.tls_clients.lock().ok().is_some_and(|m| {
        m.get(key).is_some_and(|c| {
            c.ca_pem == ca.cert_pem
                && c.not_after - now.unix_timestamp() > CLIENT_RENEW.as_secs() as i64
        })
    });
    if fresh {
        return Ok(());
    }
    let cert = pki::issue(
        ca,
        &format!("studio-operator.{cluster}"),
        &[],
        Usage::Client,
        now,
        CLIENT_DURATION,
    )
    .map_err(|e| Error::Tls(e.to_string()))?;
    let client = NodeClient::tls(&ca.cert_pem, &cert.cert_pem, &cert.key_pem)?;
    if let Ok(mut m) = ctx.tls_clients.lock() {
        m.insert(
            key.to_string(),
            ClusterClient {
                ca_pem: ca.cert_pem.clone(),
                not_after: cert.not_after,
                client,
            },
        );
    }
    Ok(())
}
