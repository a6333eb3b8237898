//! Authentication: user JWTs for content (HS256 with the shared secret, or RS256/ES256
//! signed by an OpenID Connect provider whose keys come from its JWKS); members and the
//! operator by a client certificate from the cluster CA (with TLS) or, without TLS, by
//! the cluster token. Secrets and tokens are never logged.

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use studio_crds::node_api;

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
    members: MemberAuth,
}

/// How members and the operator prove who they are on internal routes.
#[derive(Clone)]
pub enum MemberAuth {
    /// A client certificate chained to the cluster CA (checked at the TLS handshake).
    Certificate,
    /// Without TLS: the shared cluster token (`None`: internal routes are open, which
    /// only `--insecure-no-auth` allows).
    Token(Option<Vec<u8>>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("secret", &self.secret.is_some())
            .field("jwks", &self.jwks)
            .field(
                "members",
                &match &self.members {
                    MemberAuth::Certificate => "certificate",
                    MemberAuth::Token(Some(_)) => "token",
                    MemberAuth::Token(None) => "open",
                },
            )
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
        members: MemberAuth,
        rules: TokenRules,
    ) -> Auth {
        Auth {
            secret: jwt_secret.map(|s| DecodingKey::from_secret(&s)),
            jwks,
            rules,
            members,
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
        matches!(self.members, MemberAuth::Token(Some(_)))
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

    /// Checks a caller of internal routes: a member certificate (`client_cert`, verified
    /// at the handshake) with TLS, else the cluster token (constant-time comparison).
    pub fn verify_member(&self, client_cert: bool, header: Option<&str>) -> Result<(), ApiError> {
        let expected = match &self.members {
            MemberAuth::Certificate if client_cert => return Ok(()),
            MemberAuth::Certificate => {
                return Err(ApiError::unauthorized(
                    "internal routes need a client certificate from the cluster CA",
                ));
            }
            MemberAuth::Token(None) => return Ok(()),
            MemberAuth::Token(Some(t)) => t,
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

    /// Checks a reader of the cluster's state: a member or the operator (as for internal
    /// routes), or a user holding at least the reader role.
    pub async fn verify_reader(
        &self,
        client_cert: bool,
        header: Option<&str>,
    ) -> Result<(), ApiError> {
        if self.verify_member(client_cert, header).is_ok() {
            return Ok(());
        }
        self.verify_user(header).await?.require(Level::Reader)
    }
}

/// The bearer credentials of a request: `Authorization`, or `X-Studio-Authorization`
/// for clients behind a proxy that uses `Authorization` itself (the Kubernetes API
/// server's pod proxy, as `kubectl studio report` goes). `Err` if it is not text.
pub fn credentials(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers
        .get(AUTHORIZATION)
        .or_else(|| headers.get(node_api::ALT_AUTHORIZATION))
    else {
        return Ok(None);
    };
    v.to_str()
        .map(Some)
        .map_err(|_| ApiError::unauthorized("authorization header is not valid text"))
}

fn has_client_cert(ext: &axum::http::Extensions) -> bool {
    ext.get::<ConnectInfo<Peer>>()
        .is_some_and(|c| c.0.client_cert)
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
        let header = credentials(&parts.headers)?;
        state.auth.verify_user(header).await
    }
}

/// Middleware guarding internal/admin routes: members and the operator only (see
/// [`Auth::verify_member`]).
pub async fn require_member(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let checked = credentials(req.headers()).and_then(|h| {
        state
            .auth
            .verify_member(has_client_cert(req.extensions()), h)
    });
    match checked {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware guarding the cluster's state: see [`Auth::verify_reader`].
pub async fn require_reader(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let header = match credentials(req.headers()) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let cert = has_client_cert(req.extensions());
    match state.auth.verify_reader(cert, header).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
