//! Who may publish, and to which topics.
//!
//! A request to `POST /publish` carries `Authorization: Bearer <credential>` (the scheme
//! is matched case-insensitively, RFC 7235 §2.1). The credential is either
//!
//! - one of the static tokens of `PUBLISH_TOKEN` / `PUBLISH_TOKEN_FILE` (several, so a
//!   token can be rotated without downtime: add the new one, move publishers, drop the
//!   old one); such a publisher may publish to every topic; or
//! - a JWT signed with HS256 and `PUBLISH_JWT_SECRET` / `PUBLISH_JWT_SECRET_FILE`, with
//!   `exp`, `sub`, and `publish`: the topics it may publish to, as exact names or
//!   prefixes ending in `*` ([`streamgate::topic_pattern`]).
//!
//! Static tokens are compared by their SHA-1 digests in constant time, against every
//! configured token without an early exit: neither the time taken nor the length compared
//! tells anything about how close a guess was.
//!
//! The [`Principal`] found also scopes idempotency keys ([`Principal::idempotency_scope`]):
//! a publisher known by a token or a JWT subject has keys of its own, so one publisher
//! cannot pre-claim another's key (and learn the other's event ids through it).

use std::time::Duration;

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use streamgate::config::Secret;
use streamgate::topic_pattern::TopicPatterns;

/// The clock difference allowed between the token issuer and the producer when checking
/// `exp` and `nbf`: small, because it lengthens the life of every token.
pub const JWT_LEEWAY: Duration = Duration::from_secs(30);

/// The shortest HS256 secret accepted: 256 bits, the hash's size (RFC 7518 §3.2).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// How publishers authenticate, as configured.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Accepted static bearer tokens (any of them).
    pub tokens: Vec<Secret>,
    /// The HS256 secret of publish JWTs, if JWTs are accepted.
    pub jwt_secret: Option<Secret>,
    /// Whether serving without any authentication on a non-loopback address is intended.
    pub allow_anonymous: bool,
}

impl AuthConfig {
    /// Whether any credential is required.
    pub fn is_required(&self) -> bool {
        !self.tokens.is_empty() || self.jwt_secret.is_some()
    }
}

/// Who published: what scopes their idempotency keys and limits their topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No authentication is configured.
    Anonymous,
    /// A static token, known by its fingerprint (hex SHA-1): never the token itself.
    Token {
        /// Hex SHA-1 of the token.
        fingerprint: String,
    },
    /// A JWT's subject and the topics it grants.
    Jwt {
        /// The `sub` claim.
        subject: String,
        /// The `publish` claim.
        topics: TopicPatterns,
    },
}

impl Principal {
    /// The scope of this publisher's idempotency keys (`None`: the shared, topic-wide one
    /// of anonymous HTTP, the command line and the ingest stream).
    pub fn idempotency_scope(&self) -> Option<String> {
        match self {
            Principal::Anonymous => None,
            Principal::Token { fingerprint } => Some(format!("token:{fingerprint}")),
            Principal::Jwt { subject, .. } => Some(format!("jwt:{subject}")),
        }
    }

    /// Whether this publisher may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        match self {
            Principal::Anonymous | Principal::Token { .. } => true,
            Principal::Jwt { topics, .. } => topics.matches(topic),
        }
    }
}

/// Why a request was not authenticated. All are `401` for the client, which learns no
/// more than that; the reason is logged at debug level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header, or not the Bearer scheme.
    #[error("no bearer credential")]
    Missing,
    /// Neither a configured token nor a valid JWT.
    #[error("unknown token")]
    UnknownToken,
    /// A JWT that failed validation (signature, algorithm, expiry, claims).
    #[error("invalid JWT: {0}")]
    InvalidJwt(String),
}

/// The publish JWT's claims the producer reads (`exp` and `nbf` are checked by the
/// validation).
#[derive(Debug, serde::Deserialize)]
struct PublishClaims {
    sub: String,
    #[serde(default)]
    publish: Vec<String>,
}

/// Checks credentials against the configuration.
#[derive(Clone)]
pub struct Authenticator {
    /// Whether any credential is required (from the configuration, so that a JWT key
    /// that could not be built never turns authentication off).
    required: bool,
    /// SHA-1 digests of the accepted static tokens.
    token_digests: Vec<[u8; 20]>,
    jwt: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("required", &self.required)
            .field("n_tokens", &self.token_digests.len())
            .field("jwt", &self.jwt.is_some())
            .finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 20] {
    sha1_smol::Sha1::from(bytes).digest().bytes()
}

impl Authenticator {
    /// An authenticator for `config`.
    pub fn new(config: &AuthConfig) -> Authenticator {
        let token_digests = config.tokens.iter().map(|token| digest(token.expose().as_bytes())).collect();
        let jwt = config.jwt_secret.as_ref().and_then(|secret| {
            // Fails only for an empty secret, which the configuration refuses.
            let key = DecodingKey::from_secret(secret.expose().as_bytes()).ok()?;
            let mut validation = Validation::new(Algorithm::HS256);
            validation.leeway = JWT_LEEWAY.as_secs();
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "sub"]);
            Some((key, validation))
        });
        Authenticator { required: config.is_required(), token_digests, jwt }
    }

    /// Whether requests must authenticate.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// Who sent a request with these headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        if !self.is_required() {
            return Ok(Principal::Anonymous);
        }
        let credential = bearer_credential(headers).ok_or(AuthError::Missing)?;
        let presented = digest(credential.as_bytes());
        // Every token is compared, whichever matches: no early exit.
        let matched = self
            .token_digests
            .iter()
            .fold(None, |found, token| if constant_time_eq(&presented, token) { Some(token) } else { found });
        if let Some(token) = matched {
            let fingerprint = token.iter().map(|byte| format!("{byte:02x}")).collect();
            return Ok(Principal::Token { fingerprint });
        }
        let Some((key, validation)) = &self.jwt else {
            return Err(AuthError::UnknownToken);
        };
        let data = jsonwebtoken::decode::<PublishClaims>(credential, key, validation)
            .map_err(|error| AuthError::InvalidJwt(error.to_string()))?;
        let topics = TopicPatterns::parse(&data.claims.publish)
            .map_err(|error| AuthError::InvalidJwt(format!("publish claim: {error}")))?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::InvalidJwt("empty sub claim".to_owned()));
        }
        Ok(Principal::Jwt { subject: data.claims.sub, topics })
    }
}

/// The credential of an `Authorization: Bearer <credential>` header. The scheme is
/// case-insensitive and separated by one or more spaces (RFC 7235 §2.1); the credential
/// is a token68, so it has no spaces of its own.
fn bearer_credential(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty() && !credential.contains(' '))
        .then_some(credential)
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess
/// was right.
fn constant_time_eq(a: &[u8; 20], b: &[u8; 20]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    fn tokens(list: &[&str]) -> Authenticator {
        Authenticator::new(&AuthConfig {
            tokens: list.iter().map(|t| Secret::new(*t)).collect(),
            ..AuthConfig::default()
        })
    }

    #[test]
    fn without_configuration_everyone_is_anonymous() {
        assert_eq!(tokens(&[]).authenticate(&HeaderMap::new()), Ok(Principal::Anonymous));
    }

    #[test]
    fn any_configured_token_is_accepted_with_a_case_insensitive_scheme() {
        let auth = tokens(&["old-token", "new-token"]);
        for header in ["Bearer old-token", "bearer new-token", "BEARER   old-token", "Bearer new-token "] {
            assert!(matches!(auth.authenticate(&headers(header)), Ok(Principal::Token { .. })), "{header}");
        }
        for header in
            ["Bearer other", "Bearer old-toke", "Basic old-token", "Bearerold-token", "Bearer ", "old-token"]
        {
            assert!(auth.authenticate(&headers(header)).is_err(), "{header}");
        }
        assert_eq!(auth.authenticate(&HeaderMap::new()), Err(AuthError::Missing));
    }

    #[test]
    fn each_token_has_its_own_idempotency_scope_and_every_topic() {
        let auth = tokens(&["token-a", "token-b"]);
        let a = auth.authenticate(&headers("Bearer token-a")).unwrap();
        let b = auth.authenticate(&headers("Bearer token-b")).unwrap();
        assert_ne!(a.idempotency_scope(), b.idempotency_scope());
        assert!(!a.idempotency_scope().unwrap().contains("token-a"), "the token itself is no scope");
        assert!(a.may_publish("anything"));
        assert_eq!(Principal::Anonymous.idempotency_scope(), None);
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn jwt(claims: serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn jwt_auth() -> Authenticator {
        Authenticator::new(&AuthConfig { jwt_secret: Some(Secret::new(SECRET)), ..AuthConfig::default() })
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn a_jwt_grants_its_publish_topics_to_its_subject() {
        let token =
            jwt(serde_json::json!({"sub": "billing", "exp": now() + 60, "publish": ["order:*", "news"]}));
        let principal = jwt_auth().authenticate(&headers(&format!("Bearer {token}"))).unwrap();
        assert_eq!(principal.idempotency_scope().as_deref(), Some("jwt:billing"));
        assert!(principal.may_publish("order:1") && principal.may_publish("news"));
        assert!(!principal.may_publish("news:1") && !principal.may_publish("orders"));
    }

    #[test]
    fn expired_unsigned_foreign_or_subjectless_jwts_are_refused() {
        let auth = jwt_auth();
        let refused = |token: String| auth.authenticate(&headers(&format!("Bearer {token}"))).is_err();
        let expired_long_ago = now() - JWT_LEEWAY.as_secs() - 60;
        assert!(refused(jwt(serde_json::json!({"sub": "a", "exp": expired_long_ago, "publish": ["*"]}))));
        assert!(refused(jwt(serde_json::json!({"sub": "a", "publish": ["*"]}))), "no exp");
        assert!(refused(jwt(serde_json::json!({"exp": now() + 60, "publish": ["*"]}))), "no sub");
        assert!(refused(jwt(serde_json::json!({"sub": "a", "exp": now() + 60, "publish": [""]}))));
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = base64_url(format!(r#"{{"sub":"a","exp":{},"publish":["*"]}}"#, now() + 60).as_bytes());
        assert!(refused(format!("{header}.{claims}.")), "alg none");
        let other = jsonwebtoken::EncodingKey::from_secret(b"another secret of thirty-two bytes!").unwrap();
        let claims = serde_json::json!({"sub": "a", "exp": now() + 60, "publish": ["*"]});
        let foreign =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &other).unwrap();
        assert!(refused(foreign), "signed with another secret");
    }

    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}
