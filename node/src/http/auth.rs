//! Authentication: user JWTs for content (HS256 with the shared secret, or RS256/ES256
//! signed by an OpenID Connect provider whose keys come from its JWKS), a cluster
//! token for internal and admin routes. Secrets and tokens are never logged.

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::ApiState;
use super::error::ApiError;
use super::jwks::Jwks;
use super::listener::Peer;

/// A role level; each level includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Reader,
    Editor,
    Admin,
}

impl Level {
    fn name(&self) -> &'static str {
        match self {
            Level::Reader => "reader",
            Level::Editor => "editor",
            Level::Admin => "admin",
        }
    }
}

/// Verification material.
pub struct Auth {
    /// HS256 key for tokens signed with the shared secret.
    secret: Option<DecodingKey>,
    /// The identity provider's keys, for RS256/ES256/... tokens.
    jwks: Option<Jwks>,
    rules: TokenRules,
    cluster_token: Option<Vec<u8>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("secret", &self.secret.is_some())
            .field("jwks", &self.jwks)
            .field("cluster_token", &self.cluster_token.is_some())
            .finish()
    }
}

/// The role names a token's claims grant: the claim at the configured path (an array
/// of strings, or one string of space/comma separated names), plus a single `role`
/// claim.
fn role_names<'a>(claims: &'a Value, path: &[String]) -> Vec<&'a str> {
    let at = path.iter().try_fold(claims, |v, k| v.get(k));
    let mut out: Vec<&str> = match at {
        Some(Value::Array(l)) => l.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(t)) => t.split([' ', ',']).filter(|r| !r.is_empty()).collect(),
        _ => Vec::new(),
    };
    out.extend(claims.get("role").and_then(Value::as_str));
    out
}

/// Signature algorithms an identity provider's keys may use.
fn asymmetric(alg: Algorithm) -> bool {
    use Algorithm::*;
    matches!(
        alg,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA
    )
}

/// What a user JWT must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required member of `aud`, if any.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Where the role names are: a dotted claim path (`roles`, or
    /// `realm_access.roles` for Keycloak).
    pub roles_claim: Vec<String>,
}

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            issuer: None,
            audience: None,
            leeway_seconds: 30,
            roles_claim: vec!["roles".into()],
        }
    }
}

impl TokenRules {
    /// `exp` is required (a token that never expires is refused), `nbf` is checked when
    /// present, `iss` and `aud` when configured.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        let mut required = vec!["exp"];
        required.extend(self.issuer.as_ref().map(|_| "iss"));
        required.extend(self.audience.as_ref().map(|_| "aud"));
        v.set_required_spec_claims(&required);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.leeway = self.leeway_seconds;
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        v
    }
}

impl Auth {
    pub fn new(
        jwt_secret: Option<Vec<u8>>,
        jwks: Option<Jwks>,
        cluster_token: Option<Vec<u8>>,
        rules: TokenRules,
    ) -> Auth {
        Auth {
            secret: jwt_secret.map(|s| DecodingKey::from_secret(&s)),
            jwks,
            rules,
            cluster_token,
        }
    }

    pub fn jwt_enabled(&self) -> bool {
        self.secret.is_some() || self.jwks.is_some()
    }

    /// The key and algorithm a token must be verified with.
    async fn key_for(&self, token: &str) -> Result<(DecodingKey, Algorithm), ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {}", describe(&e))))?;
        let alg = header.alg;
        if alg == Algorithm::HS256 {
            return match &self.secret {
                Some(k) => Ok((k.clone(), alg)),
                None => Err(ApiError::unauthorized(
                    "invalid token: HS256 is not accepted (tokens come from the identity provider)",
                )),
            };
        }
        let Some(jwks) = self.jwks.as_ref().filter(|_| asymmetric(alg)) else {
            return Err(ApiError::unauthorized(format!(
                "invalid token: algorithm {alg:?} not allowed"
            )));
        };
        let Some(kid) = header.kid else {
            return Err(ApiError::unauthorized(
                "invalid token: it names no signing key (kid)",
            ));
        };
        let key = jwks
            .key(&kid)
            .await
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
        if key.algorithm != alg {
            return Err(ApiError::unauthorized(format!(
                "invalid token: signed with {alg:?}, its key is for {:?}",
                key.algorithm
            )));
        }
        Ok((key.key, alg))
    }

    pub fn cluster_token_enabled(&self) -> bool {
        self.cluster_token.is_some()
    }

    /// Checks a user bearer token; returns the caller.
    pub async fn verify_user(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        if !self.jwt_enabled() {
            return Ok(Caller {
                sub: "anonymous".into(),
                level: Some(Level::Admin),
            });
        }
        let token = bearer(header)?;
        let (key, alg) = self.key_for(token).await?;
        let data = jsonwebtoken::decode::<Value>(token, &key, &self.rules.validation(alg))
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {}", describe(&e))))?;
        let sub = data
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let level = role_names(&data.claims, &self.rules.roles_claim)
            .into_iter()
            .filter_map(|r| match r {
                "reader" => Some(Level::Reader),
                "editor" => Some(Level::Editor),
                "admin" => Some(Level::Admin),
                _ => None,
            })
            .max();
        if sub.is_empty() {
            return Err(ApiError::unauthorized("invalid token: no subject (sub)"));
        }
        Ok(Caller { sub, level })
    }

    /// Checks the cluster token (constant-time comparison).
    pub fn verify_cluster(&self, header: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.cluster_token else {
            return Ok(());
        };
        let token = bearer(header)?.as_bytes();
        let mut diff =
            (token.len() ^ expected.len()) as u8 | u8::from(token.len() != expected.len());
        for (i, b) in expected.iter().enumerate() {
            diff |= b ^ token.get(i).copied().unwrap_or(0);
        }
        if diff == 0 {
            Ok(())
        } else {
            Err(ApiError::unauthorized("invalid cluster token"))
        }
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        MissingRequiredClaim(c) if c == "exp" => "no expiry (exp is required)".into(),
        MissingRequiredClaim(c) => format!("the {c} claim is required"),
        InvalidIssuer => "wrong issuer".into(),
        InvalidAudience => "wrong audience".into(),
        ExpiredSignature => "expired".into(),
        InvalidSignature => "bad signature".into(),
        InvalidAlgorithm | InvalidAlgorithmName => "algorithm not allowed".into(),
        ImmatureSignature => "not yet valid".into(),
        InvalidToken | Base64(_) | Json(_) | Utf8(_) => "malformed".into(),
        _ => "rejected".into(),
    }
}

fn bearer(header: Option<&str>) -> Result<&str, ApiError> {
    let Some(h) = header else {
        return Err(ApiError::unauthorized("missing bearer token"));
    };
    match h.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthorized(
            "authorization must be 'Bearer <token>'",
        )),
    }
}

/// The authenticated user of a content request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub sub: String,
    /// Highest role held, if any.
    pub level: Option<Level>,
}

impl Caller {
    /// 403 unless the caller holds `needed` (or a higher role).
    pub fn require(&self, needed: Level) -> Result<(), ApiError> {
        match self.level {
            Some(l) if l >= needed => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "this request needs the {} role",
                needed.name()
            ))),
        }
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if parts.headers.get(AUTHORIZATION).is_some() && header.is_none() {
            return Err(ApiError::unauthorized(
                "authorization header is not valid text",
            ));
        }
        state.auth.verify_user(header).await
    }
}

/// Middleware guarding internal/admin routes: a client certificate from the cluster
/// CA (verified at the TLS handshake: members and the operator), or the cluster token.
pub async fn require_cluster_token(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let member = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .is_some_and(|c| c.0.client_cert);
    if member {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth.verify_cluster(header) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
