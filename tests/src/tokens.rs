//! Subscriber tokens signed in the test: HS256 with a shared secret, RS256 and ES256 with
//! key pairs the `openssl` CLI generates for the test, published as a JWKS file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// A shared secret long enough for HS256 (32 bytes).
pub const SECRET: &str = "test-secret-0123456789-abcdefghij";

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Claims expiring `ttl_seconds` from now (negative: already expired) allowing `topics`.
pub fn claims(topics: &[&str], ttl_seconds: i64) -> Value {
    json!({ "sub": "user-1", "exp": now().saturating_add_signed(ttl_seconds), "topics": topics })
}

/// An HS256 token over `claims` with `secret`.
pub fn hs256(claims: &Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap())
        .unwrap()
}

/// A token with `alg: none` and no signature.
pub fn unsigned(claims: &Value) -> String {
    let part = |value: &Value| base64url(value.to_string().as_bytes());
    format!("{}.{}.", part(&json!({"alg": "none", "typ": "JWT"})), part(claims))
}

/// base64url without padding.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A private key made by `openssl` and the public JWK matching it.
pub struct KeyPair {
    /// The signing key.
    pub private: EncodingKey,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// The public key as a JWK with `kid` and `alg`.
    pub public: Jwk,
}

impl KeyPair {
    /// An RSA 2048 key for RS256.
    pub fn rsa(dir: &Path, kid: &str) -> KeyPair {
        let pem = openssl_key(dir, kid, &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        KeyPair::from_private(EncodingKey::from_rsa_pem(&pem).unwrap(), Algorithm::RS256, kid)
    }

    /// An EC P-256 key for ES256.
    pub fn ec(dir: &Path, kid: &str) -> KeyPair {
        let pem = openssl_key(dir, kid, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        KeyPair::from_private(EncodingKey::from_ec_pem(&pem).unwrap(), Algorithm::ES256, kid)
    }

    fn from_private(private: EncodingKey, algorithm: Algorithm, kid: &str) -> KeyPair {
        let mut public = Jwk::from_encoding_key(&private, algorithm).unwrap();
        public.common.key_id = Some(kid.to_owned());
        KeyPair { private, algorithm, public }
    }

    /// A token over `claims` with this key and its `kid` (or `kid` given here).
    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid =
            Some(kid.map(str::to_owned).unwrap_or_else(|| self.public.common.key_id.clone().unwrap()));
        encode(&header, claims, &self.private).unwrap()
    }
}

fn openssl_key(dir: &Path, name: &str, options: &[&str]) -> Vec<u8> {
    let path = dir.join(format!("{name}.pem"));
    let status = Command::new("openssl")
        .arg("genpkey")
        .args(options)
        .arg("-out")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl CLI runs");
    assert!(status.success(), "openssl genpkey {options:?} failed");
    std::fs::read(&path).unwrap()
}

/// Writes the public keys as a JWKS file in `dir`; returns its path.
pub fn write_jwks(dir: &Path, keys: &[&KeyPair]) -> PathBuf {
    let set = JwkSet { keys: keys.iter().map(|k| k.public.clone()).collect() };
    let path = dir.join("jwks.json");
    std::fs::write(&path, serde_json::to_string_pretty(&set).unwrap()).unwrap();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_rfc_examples() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
