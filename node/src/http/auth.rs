//! Authentication: user JWTs (HS256) for content, a cluster token for internal and
//! admin routes. Secrets and tokens are never logged.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::ApiState;
use super::error::ApiError;

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
    jwt: Option<(DecodingKey, Validation)>,
    cluster_token: Option<Vec<u8>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt", &self.jwt.is_some())
            .field("cluster_token", &self.cluster_token.is_some())
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// `["reader", "editor"]`, or one string of space/comma separated roles.
    #[serde(default)]
    roles: Roles,
    /// A single role (accepted as well).
    #[serde(default)]
    role: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Roles {
    #[default]
    None,
    List(Vec<String>),
    Text(String),
}

impl Claims {
    fn role_names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = match &self.roles {
            Roles::None => Vec::new(),
            Roles::List(l) => l.iter().map(String::as_str).collect(),
            Roles::Text(t) => t.split([' ', ',']).filter(|r| !r.is_empty()).collect(),
        };
        out.extend(self.role.as_deref());
        out
    }
}

/// What a user JWT must satisfy besides its signature.
#[derive(Debug, Clone, Default)]
pub struct TokenRules {
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required member of `aud`, if any.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl TokenRules {
    /// `exp` is required (a token that never expires is refused), `nbf` is checked when
    /// present, `iss` and `aud` when configured.
    fn validation(&self) -> Validation {
        let mut v = Validation::new(Algorithm::HS256);
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
        cluster_token: Option<Vec<u8>>,
        rules: &TokenRules,
    ) -> Auth {
        let jwt = jwt_secret.map(|s| (DecodingKey::from_secret(&s), rules.validation()));
        Auth { jwt, cluster_token }
    }

    pub fn jwt_enabled(&self) -> bool {
        self.jwt.is_some()
    }

    pub fn cluster_token_enabled(&self) -> bool {
        self.cluster_token.is_some()
    }

    /// Checks a user bearer token; returns the caller.
    pub fn verify_user(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let Some((key, validation)) = &self.jwt else {
            return Ok(Caller {
                sub: "anonymous".into(),
                level: Some(Level::Admin),
            });
        };
        let token = bearer(header)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {}", describe(&e))))?;
        let level = data
            .claims
            .role_names()
            .into_iter()
            .filter_map(|r| match r {
                "reader" => Some(Level::Reader),
                "editor" => Some(Level::Editor),
                "admin" => Some(Level::Admin),
                _ => None,
            })
            .max();
        if data.claims.sub.is_empty() {
            return Err(ApiError::unauthorized("invalid token: empty subject"));
        }
        Ok(Caller {
            sub: data.claims.sub,
            level,
        })
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
        InvalidAlgorithm | InvalidAlgorithmName => "algorithm not allowed (HS256 only)".into(),
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
        state.auth.verify_user(header)
    }
}

/// Middleware guarding internal/admin routes with the cluster token.
pub async fn require_cluster_token(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth.verify_cluster(header) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
