//! The credentials Secret: generated once with fresh random keys, never regenerated.

use super::*;

/// Ensures the credentials Secret exists; returns the cluster token (for admin calls).
pub(super) async fn ensure_secret(ctx: &Context, sc: &StudioCluster) -> Result<Option<String>> {
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = build::secret_name(sc);
    let existing = api.get_opt(&name).await?;
    let secret = match existing {
        Some(s) => s,
        None if sc
            .spec
            .auth
            .as_ref()
            .and_then(|a| a.existing_secret.as_ref())
            .is_some() =>
        {
            let why = format!("spec.auth.existingSecret: Secret {name} does not exist");
            ctx.event(sc, EventType::Warning, "InvalidSpec", why.clone())
                .await;
            return Err(Error::InvalidSpec(why));
        }
        None => {
            let mut random = [0u8; 64];
            getrandom::fill(&mut random).map_err(|e| Error::Random(e.to_string()))?;
            let s = build::build_secret(sc, &random)?;
            match api.create(&PostParams::default(), &s).await {
                Ok(s) => {
                    ctx.event(
                        sc,
                        EventType::Normal,
                        "SecretCreated",
                        format!("generated credentials in Secret {name}"),
                    )
                    .await;
                    s
                }
                // Someone (another operator replica) created it meanwhile: use theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let data = secret.data.unwrap_or_default();
    // The cluster token is only used without TLS.
    let needed: &[&str] = if sc.tls().is_some() {
        &[secret_keys::JWT_KEY]
    } else {
        &[secret_keys::JWT_KEY, secret_keys::CLUSTER_TOKEN]
    };
    for &k in needed {
        if !data.contains_key(k) {
            let why = format!("Secret {name} lacks key {k}");
            ctx.event(sc, EventType::Warning, "InvalidSpec", why).await;
            return Err(Error::SecretKey(name, k));
        }
    }
    if sc.tls().is_some() {
        return Ok(None);
    }
    Ok(data
        .get(secret_keys::CLUSTER_TOKEN)
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string()))
}
