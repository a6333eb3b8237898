//! Signing keys of an OpenID Connect identity provider (its JWKS document), fetched,
//! cached, and fetched again when a token names a key the cache does not hold (the
//! provider rotated its keys) — at most every [`MIN_REFETCH`] (a lookup that comes
//! sooner waits for it), so that tokens with made-up key ids cannot make the node
//! hammer the provider (one small GET a second at worst), while the first token signed
//! after a rotation is not refused.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Keys older than this are fetched again before use.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Never fetch more often than this.
pub const MIN_REFETCH: Duration = Duration::from_secs(1);
/// One fetch gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A usable verification key.
#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Key>,
    fetched: Option<Instant>,
}

/// The JWKS of one provider.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    cache: RwLock<Cache>,
    /// One fetch at a time (others wait for its result).
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("url", &self.url).finish()
    }
}

/// The signing keys of a JWKS document; keys for encryption, of unknown types or
/// without a key id are skipped.
pub fn parse_keys(doc: &serde_json::Value) -> Result<HashMap<String, Key>, String> {
    let list = doc
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("the JWKS document has no \"keys\" list")?;
    let mut out = HashMap::new();
    for k in list {
        let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), jwk.common.key_algorithm) else {
            continue;
        };
        let Ok(algorithm) = alg.to_string().parse::<Algorithm>() else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            out.insert(kid, Key { key, algorithm });
        }
    }
    Ok(out)
}

impl Jwks {
    pub fn new(url: String) -> anyhow::Result<Jwks> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(FETCH_TIMEOUT)
            .build()?;
        Ok(Jwks {
            url,
            http,
            cache: RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self, kid: &str) -> (Option<Key>, Option<Instant>) {
        match self.cache.read() {
            Ok(c) => (c.keys.get(kid).cloned(), c.fetched),
            Err(_) => (None, None),
        }
    }

    /// The key `kid`, fetching the document when the cache is stale or lacks it.
    pub async fn key(&self, kid: &str) -> Result<Key, String> {
        let (hit, fetched) = self.cached(kid);
        let fresh = fetched.is_some_and(|t| t.elapsed() < MAX_AGE);
        if let Some(k) = hit.filter(|_| fresh) {
            return Ok(k);
        }
        let _one = self.fetching.lock().await;
        // Another request may have fetched meanwhile.
        let (hit, fetched) = self.cached(kid);
        let recent = fetched.is_some_and(|t| t.elapsed() < MIN_REFETCH);
        if let Some(k) = hit
            .as_ref()
            .filter(|_| fetched.is_some_and(|t| t.elapsed() < MAX_AGE))
        {
            return Ok(k.clone());
        }
        if recent {
            // Fetched moments ago: a key this new was (probably) published after that
            // fetch. Wait out the minimum interval (this request alone holds the
            // fetch) rather than refuse the first tokens after a rotation.
            if let Some(t) = fetched {
                tokio::time::sleep(MIN_REFETCH.saturating_sub(t.elapsed())).await;
            }
        }
        match self.fetch().await {
            Ok(keys) => {
                let found = keys.get(kid).cloned();
                if let Ok(mut c) = self.cache.write() {
                    c.keys = keys;
                    c.fetched = Some(Instant::now());
                }
                found.ok_or_else(|| format!("unknown signing key {kid:?}"))
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "could not fetch the identity provider's keys");
                // A stale key still verifies until the provider answers again.
                hit.ok_or_else(|| "the identity provider's keys are unavailable".to_string())
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, String> {
        let doc: serde_json::Value = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        parse_keys(&doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_keys_and_keys_without_id_are_skipped() {
        let doc = serde_json::json!({"keys": [
            {"kid": "sig", "kty": "RSA", "alg": "RS256", "use": "sig",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"},
            {"kid": "enc", "kty": "RSA", "alg": "RSA-OAEP", "use": "enc",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"},
            {"kty": "RSA", "alg": "RS256", "n": "AQAB", "e": "AQAB"},
            {"kid": "odd", "kty": "weird"}
        ]});
        let keys = parse_keys(&doc).unwrap_or_default();
        assert_eq!(keys.keys().collect::<Vec<_>>(), [&"sig".to_string()]);
        assert_eq!(keys["sig"].algorithm, Algorithm::RS256);
        assert!(parse_keys(&serde_json::json!({"nope": 1})).is_err());
    }
}
