//! JWT verification for `SUBSCRIBE_AUTH=jwt`.
//!
//! Every key has exactly one algorithm, fixed when the key is loaded: HS256 for
//! `JWT_SECRET`, and for a JWKS key its `alg` member or, without one, the algorithm its
//! type implies (RSA: RS256, EC P-256: ES256, P-384: ES384, Ed25519: EdDSA). A token is
//! only ever checked against keys whose algorithm is the one its header names, so an RSA
//! public key can never be used as an HMAC secret (the classic HS/RS confusion), and
//! `alg: none` matches no key at all. A header with a `kid` is checked only against the
//! key with that id; without one, against every key of its algorithm.
//!
//! No leeway on `exp`: a stream ends at `exp`, and a reconnect with the same token must
//! then be refused, not let in for another minute.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The shortest HS256 secret accepted: RFC 7518 §3.2 asks for at least the hash size.
pub const MIN_SECRET_BYTES: usize = 32;

/// One verification key and the only algorithm it verifies.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish()
    }
}

impl VerifyingKey {
    /// The HS256 key of a shared secret.
    pub fn from_secret(secret: &SecretString) -> Result<VerifyingKey, String> {
        let bytes = secret.expose_secret().as_bytes();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!("a secret of at least {MIN_SECRET_BYTES} bytes (it has {})", bytes.len()));
        }
        let key = DecodingKey::from_secret(bytes).map_err(|error| error.to_string())?;
        Ok(VerifyingKey { kid: None, algorithm: Algorithm::HS256, key })
    }

    /// The key of one JWKS entry, with its algorithm.
    pub fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, String> {
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (_, AlgorithmParameters::OctetKey(_)) => {
                return Err("a symmetric (oct) key; put a shared secret in JWT_SECRET".into());
            }
            (Some(named), _) => algorithm_of(*named)?,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(params)) => match params.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                ref other => return Err(format!("an EC key on an unsupported curve {other:?}")),
            },
            (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            (None, _) => return Err("a key of an unsupported type".into()),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|error| format!("an unusable key: {error}"))?;
        if !key_fits(&key, algorithm) {
            return Err(format!("a key whose type does not fit its alg {algorithm:?}"));
        }
        Ok(VerifyingKey { kid: jwk.common.key_id.clone(), algorithm, key })
    }
}

fn key_fits(key: &DecodingKey, algorithm: Algorithm) -> bool {
    key.family().algorithms().contains(&algorithm)
}

fn algorithm_of(named: KeyAlgorithm) -> Result<Algorithm, String> {
    Ok(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        other => {
            return Err(format!("a key for {other:?}, which is not a signature algorithm accepted here"));
        }
    })
}

/// Reads every key of a JWKS document. Any key that cannot be used is an error naming it:
/// a key silently skipped would turn into unexplained 401s.
pub fn keys_of_jwks(json: &str) -> Result<Vec<VerifyingKey>, String> {
    let set: JwkSet =
        serde_json::from_str(json).map_err(|error| format!("a JWKS JSON document ({error})"))?;
    if set.keys.is_empty() {
        return Err("a JWKS with at least one key".into());
    }
    set.keys
        .iter()
        .enumerate()
        .map(|(index, jwk)| {
            let name = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{index}"));
            VerifyingKey::from_jwk(jwk).map_err(|problem| format!("usable keys, but key {name} is {problem}"))
        })
        .collect()
}

/// The claims a subscriber's token carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch (required: optional here only so that a token
    /// without it is refused as "missing claim exp" by the validation).
    #[serde(default)]
    pub exp: Option<u64>,
    /// The subject (for logs).
    #[serde(default)]
    pub sub: Option<String>,
    /// Topic patterns this token allows (absent: none beyond the public ones).
    #[serde(default)]
    pub topics: Vec<String>,
}

impl Claims {
    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp.unwrap_or(0))
    }
}

/// Why a token was refused (every one is a 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a readable header (also `alg: none`).
    #[error("malformed token or unsupported algorithm")]
    Malformed,
    /// No configured key verifies this algorithm.
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    /// The header names a key id no configured key has.
    #[error("token key id {0:?} is unknown")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("token signature does not verify")]
    Signature,
    /// `exp` is past.
    #[error("token expired")]
    Expired,
    /// Anything else: a missing `exp`, a wrong audience or issuer, malformed claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies tokens against the configured keys.
#[derive(Debug)]
pub struct Verifier {
    keys: RwLock<Arc<Vec<VerifyingKey>>>,
    /// Told when a token names a key id no key has (the JWKS may have rotated).
    pub unknown_kid: Arc<tokio::sync::Notify>,
    audience: Vec<String>,
    issuer: Vec<String>,
}

impl Verifier {
    /// A verifier with these keys, audiences and issuers (empty: not checked).
    pub fn new(keys: Vec<VerifyingKey>, audience: Vec<String>, issuer: Vec<String>) -> Verifier {
        Verifier { keys: RwLock::new(Arc::new(keys)), unknown_kid: Arc::default(), audience, issuer }
    }

    /// Replaces the keys (a refreshed JWKS).
    pub fn replace_keys(&self, keys: Vec<VerifyingKey>) {
        *self.keys.write().expect("keys lock") = Arc::new(keys);
    }

    /// Verifies `token` now.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        let keys = Arc::clone(&self.keys.read().expect("keys lock"));
        let same_algorithm = keys.iter().filter(|key| key.algorithm == header.alg);
        let candidates: Vec<&VerifyingKey> = match &header.kid {
            Some(kid) => {
                same_algorithm.filter(|key| key.kid.is_none() || key.kid.as_ref() == Some(kid)).collect()
            }
            None => same_algorithm.collect(),
        };
        if candidates.is_empty() {
            let algorithm_known = keys.iter().any(|key| key.algorithm == header.alg);
            return Err(match header.kid {
                Some(kid) if algorithm_known => {
                    self.unknown_kid.notify_one();
                    TokenError::UnknownKey(kid)
                }
                _ => TokenError::Algorithm(format!("{:?}", header.alg)),
            });
        }
        let mut last_error = TokenError::Signature;
        for key in candidates {
            match decode::<Claims>(token, &key.key, &self.validation(key.algorithm)) {
                Ok(data) => return check_expiry(data.claims),
                Err(error) => last_error = token_error(error),
            }
        }
        Err(last_error)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if !self.audience.is_empty() {
            validation.set_audience(&self.audience);
            validation.required_spec_claims.insert("aud".into());
        }
        if !self.issuer.is_empty() {
            validation.set_issuer(&self.issuer);
            validation.required_spec_claims.insert("iss".into());
        }
        validation
    }
}

/// `exp` must be strictly in the future (the library accepts `exp == now`).
fn check_expiry(claims: Claims) -> Result<Claims, TokenError> {
    if claims.expires_at() <= SystemTime::now() {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

fn token_error(error: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidAlgorithm => TokenError::Algorithm("of a different key type".into()),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => TokenError::Malformed,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::Invalid(format!("missing claim {claim}")),
        ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience".into()),
        ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer".into()),
        ErrorKind::ImmatureSignature => TokenError::Invalid("not valid yet (nbf)".into()),
        ErrorKind::InvalidClaimFormat(claim) => TokenError::Invalid(format!("malformed claim {claim}")),
        ErrorKind::Json(_) => {
            TokenError::Invalid("malformed claims (topics must be an array of strings)".into())
        }
        _ => TokenError::Invalid("unreadable".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn hs256(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap())
            .unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(vec![VerifyingKey::from_secret(&SecretString::from(SECRET)).unwrap()], vec![], vec![])
    }

    #[test]
    fn a_valid_token_yields_its_claims() {
        let claims =
            verifier().verify(&hs256(json!({"exp": now() + 60, "sub": "u1", "topics": ["a:*"]}))).unwrap();
        assert_eq!(claims.sub.as_deref(), Some("u1"));
        assert_eq!(claims.topics, ["a:*"]);
    }

    #[test]
    fn each_rejection_has_its_reason() {
        let v = verifier();
        assert_eq!(v.verify(&hs256(json!({"exp": now() - 1}))), Err(TokenError::Expired));
        assert_eq!(v.verify(&hs256(json!({"exp": now()}))), Err(TokenError::Expired));
        assert!(matches!(v.verify(&hs256(json!({"sub": "u"}))), Err(TokenError::Invalid(_))));
        assert!(matches!(
            v.verify(&hs256(json!({"exp": now() + 60, "topics": "a"}))),
            Err(TokenError::Invalid(_))
        ));
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": now() + 60}),
            &EncodingKey::from_secret(b"another secret, also 32 bytes long").unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&forged), Err(TokenError::Signature));
        assert_eq!(v.verify("not a token"), Err(TokenError::Malformed));
        // alg none: an unsigned token, header {"alg":"none"}.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjQxMDI0NDQ4MDB9.";
        assert_eq!(v.verify(none), Err(TokenError::Malformed));
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"exp": now() + 60}),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(matches!(v.verify(&hs512), Err(TokenError::Algorithm(_))));
    }

    #[test]
    fn a_short_secret_and_a_symmetric_jwk_are_refused() {
        assert!(VerifyingKey::from_secret(&SecretString::from("short")).is_err());
        let jwks = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string();
        assert!(keys_of_jwks(&jwks).unwrap_err().contains("JWT_SECRET"));
        assert!(keys_of_jwks("{\"keys\": []}").is_err());
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let keys = vec![VerifyingKey::from_secret(&SecretString::from(SECRET)).unwrap()];
        let v = Verifier::new(keys, vec!["streamgate".into()], vec!["https://idp".into()]);
        let good = hs256(json!({"exp": now() + 60, "aud": "streamgate", "iss": "https://idp"}));
        assert!(v.verify(&good).is_ok());
        let other = hs256(json!({"exp": now() + 60, "aud": "billing", "iss": "https://idp"}));
        assert!(matches!(v.verify(&other), Err(TokenError::Invalid(_))));
        let missing = hs256(json!({"exp": now() + 60}));
        assert!(matches!(v.verify(&missing), Err(TokenError::Invalid(_))));
    }
}
