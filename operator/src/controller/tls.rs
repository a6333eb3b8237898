//! spec.tls: the members' certificate (Secret `<name>-tls`) and the operator's own
//! client certificate for its calls to the nodes, from one of three sources:
//!
//! * generated (default): the cluster CA (Secret `<name>-ca`, created once) issues the
//!   members' certificate, renewed `renewBeforeSeconds` before it expires (the nodes
//!   re-read the mounted files), and the operator's client certificate (in memory,
//!   reissued daily);
//! * `caSecret`: the same, from the user's CA (the operator never writes that Secret);
//! * `issuerRef`: cert-manager issues and renews both (Certificates `<name>-members` and
//!   `<name>-operator-client`); the operator reads the client certificate's Secret.

use std::collections::BTreeMap;
use std::str::FromStr;

use kube::api::{ApiResource, DynamicObject};
use studio_crds::tls_keys;
use time::OffsetDateTime;

use super::*;
use crate::build::certificates::{build_certificates, certificate_resource};
use crate::tls::pki::{self, Issued, Usage};

/// Validity of the operator's client certificate (kept in memory only).
const CLIENT_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Reissue the operator's client certificate when less than this is left.
const CLIENT_RENEW: Duration = Duration::from_secs(12 * 3600);
/// While cert-manager has not issued the certificates yet: look again this often.
const PENDING_POLL: Duration = Duration::from_secs(3);

/// The operator's mTLS client for one cluster.
pub struct ClusterClient {
    ca_pem: String,
    cert_pem: String,
    not_after: i64,
    pub client: NodeClient,
}

/// What the reconcile goes on with.
#[derive(Debug, Default)]
pub(super) struct TlsState {
    /// Look at the cluster again within this long (a renewal due, cert-manager pending).
    pub requeue: Option<Duration>,
    /// Why the certificates are not there yet (added to the status message; the pods
    /// cannot start without the members' Secret).
    pub pending: Option<String>,
}

fn rfc3339(unix: i64) -> String {
    Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn text(s: &Secret, k: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(k)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// The certificate and key stored under `cert_key`/`key_key` in `s`, with its expiry.
fn stored(s: &Secret, cert_key: &str, key_key: &str) -> Option<Issued> {
    let not_after = s
        .metadata
        .annotations
        .as_ref()?
        .get(annotations::NOT_AFTER)
        .and_then(|t| Timestamp::from_str(t).ok())?
        .as_second();
    Some(Issued {
        cert_pem: text(s, cert_key)?,
        key_pem: text(s, key_key)?,
        not_after,
    })
}

/// The CA the operator signs with, and what the members' Secret carries besides the
/// certificate: the chain served after it and the CA certificate they trust.
struct Signer {
    ca: Issued,
    chain: Vec<String>,
}

/// Ensures the members' certificate and the operator's client (see the module doc).
pub(super) async fn ensure_tls(ctx: &Context, sc: &StudioCluster) -> Result<TlsState> {
    let key = key(sc);
    let Some(spec) = sc.tls() else {
        if let Ok(mut m) = ctx.tls_clients.lock() {
            m.remove(&key);
        }
        return Ok(TlsState::default());
    };
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = sc.name_any();
    let now = OffsetDateTime::now_utc();

    let state = if spec.issuer_ref.is_some() {
        cert_manager(ctx, sc, &ns, &name).await?
    } else {
        let signer = match &spec.ca_secret {
            Some(secret) => match user_ca(ctx, &ns, secret, now).await? {
                Ok(s) => s,
                Err(why) => {
                    return Ok(TlsState {
                        requeue: Some(PENDING_POLL),
                        pending: Some(why),
                    });
                }
            },
            None => Signer {
                ca: generated_ca(ctx, sc, &ns, &name, now).await?,
                chain: Vec::new(),
            },
        };
        let due_in = member_certificate(ctx, sc, spec, &ns, &name, &signer, now).await?;
        client_for(ctx, &key, &name, &signer.ca, now)?;
        TlsState {
            requeue: Some(due_in),
            pending: None,
        }
    };
    announce(ctx, sc, &key, state.pending.as_deref()).await;
    Ok(state)
}

/// A Warning Event when the certificates become pending (once per distinct reason),
/// a Normal one when they are there again.
async fn announce(ctx: &Context, sc: &StudioCluster, key: &str, pending: Option<&str>) {
    let before = ctx.tls_pending.lock().ok().and_then(|mut m| match pending {
        Some(p) => m.insert(key.to_string(), p.to_string()),
        None => m.remove(key),
    });
    match (pending, before) {
        (Some(p), before) if before.as_deref() != Some(p) => {
            ctx.event(sc, EventType::Warning, "CertificatePending", p.to_string())
                .await;
        }
        (None, Some(_)) => {
            ctx.event(
                sc,
                EventType::Normal,
                "CertificateReady",
                format!(
                    "the members' certificate (Secret {}) and the operator's client certificate are available",
                    names::tls_secret(&sc.name_any())
                ),
            )
            .await;
        }
        _ => {}
    }
}

/// The cluster CA the operator generates once (Secret `<name>-ca`).
async fn generated_ca(
    ctx: &Context,
    sc: &StudioCluster,
    ns: &str,
    name: &str,
    now: OffsetDateTime,
) -> Result<Issued> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let ca_name = names::ca_secret(name);
    if let Some(s) = api.get_opt(&ca_name).await? {
        return stored(&s, tls_keys::CA, tls_keys::CA_KEY).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "Secret {ca_name} lacks {} / {} or its {} annotation",
                tls_keys::CA,
                tls_keys::CA_KEY,
                annotations::NOT_AFTER
            ))
        });
    }
    let ca = pki::new_ca(name, now).map_err(|e| Error::Tls(e.to_string()))?;
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
            Ok(ca)
        }
        // Another operator replica created it meanwhile: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let s = api.get(&ca_name).await?;
            stored(&s, tls_keys::CA, tls_keys::CA_KEY)
                .ok_or(Error::SecretKey(ca_name.clone(), tls_keys::CA_KEY))
        }
        Err(e) => Err(e.into()),
    }
}

/// spec.tls.caSecret: the user's CA, read (never written). `Ok(Err(why))` while the
/// Secret does not exist (the user may create it after the StudioCluster); a Secret
/// the operator cannot sign with is an invalid spec.
async fn user_ca(
    ctx: &Context,
    ns: &str,
    secret: &str,
    now: OffsetDateTime,
) -> Result<std::result::Result<Signer, String>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(s) = api.get_opt(secret).await? else {
        return Ok(Err(format!(
            "waiting for Secret {secret} (spec.tls.caSecret) with the CA's tls.crt and tls.key"
        )));
    };
    let invalid =
        |why: String| Error::InvalidSpec(format!("Secret {secret} (spec.tls.caSecret): {why}"));
    let cert = text(&s, tls_keys::CERT).ok_or_else(|| invalid("no tls.crt".into()))?;
    let key = text(&s, tls_keys::KEY).ok_or_else(|| invalid("no tls.key".into()))?;
    let chain = text(&s, tls_keys::CA);
    let u = pki::user_ca(&cert, &key, chain.as_deref(), now).map_err(invalid)?;
    Ok(Ok(Signer {
        ca: u.ca,
        chain: u.chain,
    }))
}

/// Issues the members' certificate when it is missing, from another CA, or due for
/// renewal; returns how long until it is due.
async fn member_certificate(
    ctx: &Context,
    sc: &StudioCluster,
    spec: &studio_crds::TlsSpec,
    ns: &str,
    name: &str,
    signer: &Signer,
    now: OffsetDateTime,
) -> Result<Duration> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let tls_name = names::tls_secret(name);
    let renew_before = spec.renew_before_seconds;
    let current = api.get_opt(&tls_name).await?;
    let ca = &signer.ca;
    let valid = current.as_ref().and_then(|s| {
        let issued = stored(s, tls_keys::CERT, tls_keys::KEY)?;
        let same_ca = text(s, tls_keys::CA).is_some_and(|c| c == ca.cert_pem);
        (same_ca && now.unix_timestamp() < issued.not_after - renew_before).then_some(issued)
    });
    let member = match valid {
        Some(m) => m,
        None => {
            let duration = Duration::from_secs(spec.certificate_duration_seconds.max(60) as u64);
            let m = pki::issue(
                ca,
                name,
                &pki::member_sans(name, ns),
                Usage::Member,
                now,
                duration,
            )
            .map_err(|e| Error::Tls(e.to_string()))?;
            // The leaf, then (a user's CA) the CA and its chain.
            let mut served = m.cert_pem.clone();
            if spec.ca_secret.is_some() {
                served.push_str(&ca.cert_pem);
                for c in &signer.chain {
                    served.push_str(c);
                }
            }
            let s = build::build_tls_secret(
                sc,
                tls_name.clone(),
                "kubernetes.io/tls",
                BTreeMap::from([
                    (tls_keys::CERT.to_string(), served),
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
    let due_in = member.not_after - renew_before - now.unix_timestamp();
    Ok(Duration::from_secs(due_in.max(1) as u64))
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
                cert_pem: cert.cert_pem,
                not_after: cert.not_after,
                client,
            },
        );
    }
    Ok(())
}

/// `Ready` of a cert-manager Certificate as "status (reason: message)", if it has one.
fn ready_of(c: &DynamicObject) -> Option<(bool, String)> {
    let conds = c.data.get("status")?.get("conditions")?.as_array()?;
    let ready = conds.iter().find(|x| x["type"] == "Ready")?;
    let s = |k: &str| ready[k].as_str().unwrap_or_default().to_string();
    Some((
        s("status") == "True",
        format!("{}: {}", s("reason"), s("message")),
    ))
}

/// spec.tls.issuerRef: applies the Certificates, then uses what cert-manager issued.
async fn cert_manager(ctx: &Context, sc: &StudioCluster, ns: &str, name: &str) -> Result<TlsState> {
    let ar: ApiResource = certificate_resource();
    let certs: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let mut not_ready = Vec::new();
    for c in build_certificates(sc)? {
        let cname = c.metadata.name.clone().unwrap_or_default();
        match ssa(&certs, &c).await {
            Ok(applied) => match ready_of(&applied) {
                Some((true, _)) => {}
                Some((false, why)) => {
                    not_ready.push(format!("Certificate {cname} not Ready ({why})"))
                }
                None => not_ready.push(format!("Certificate {cname} not issued yet")),
            },
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => {
                return Ok(TlsState {
                    requeue: Some(PENDING_POLL),
                    pending: Some(format!(
                        "spec.tls.issuerRef: cert-manager is not installed (the API server has no {}/{} {}: {})",
                        ar.api_version, ar.kind, ar.plural, e.message
                    )),
                });
            }
            Err(e) => return Err(e),
        }
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let members_name = names::tls_secret(name);
    let client_name = names::operator_client_secret(name);
    let members = secrets.get_opt(&members_name).await?;
    let client = secrets.get_opt(&client_name).await?;
    let trust = members.as_ref().and_then(|s| {
        text(s, tls_keys::CERT)?;
        text(s, tls_keys::KEY)?;
        text(s, tls_keys::CA)
    });
    let identity = client
        .as_ref()
        .and_then(|s| Some((text(s, tls_keys::CERT)?, text(s, tls_keys::KEY)?)));
    let (Some(ca_pem), Some((cert_pem, key_pem))) = (trust, identity) else {
        let mut why = format!(
            "waiting for cert-manager to issue Secrets {members_name} and {client_name} (spec.tls.issuerRef {})",
            sc.tls()
                .and_then(|t| t.issuer_ref.as_ref())
                .map(|i| format!("{} {}", i.kind.as_str(), i.name))
                .unwrap_or_default()
        );
        if !not_ready.is_empty() {
            why = format!("{why}: {}", not_ready.join("; "));
        }
        return Ok(TlsState {
            requeue: Some(PENDING_POLL),
            pending: Some(why),
        });
    };
    let key = key(sc);
    let fresh = ctx.tls_clients.lock().ok().is_some_and(|m| {
        m.get(&key)
            .is_some_and(|c| c.ca_pem == ca_pem && c.cert_pem == cert_pem)
    });
    if !fresh {
        let client = NodeClient::tls(&ca_pem, &cert_pem, &key_pem)?;
        if let Ok(mut m) = ctx.tls_clients.lock() {
            m.insert(
                key,
                ClusterClient {
                    ca_pem,
                    cert_pem,
                    not_after: i64::MAX,
                    client,
                },
            );
        }
    }
    // cert-manager renews; the Secrets it writes are not owned by the StudioCluster, so
    // the next look (at most HEALTHY_POLL away) picks a renewed client certificate up.
    Ok(TlsState::default())
}
