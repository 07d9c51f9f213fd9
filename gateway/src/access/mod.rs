//! Who may subscribe to what: `SUBSCRIBE_AUTH=none|jwt|hook`, checked on every `/events`
//! request before the connection is admitted — so a reconnect with a cursor is
//! re-authorized before anything is replayed.
//!
//! - [`config`] — the typed settings.
//! - [`credentials`] — where a token comes from (header, cookie, query when allowed).
//! - [`jwt`] — keys with one algorithm each, and verification.
//! - [`jwks`] — keys fetched from `JWKS_URL`, refreshed in the background.
//! - [`hook`] — the subscribe hook and its cache.
//! - [`http_client`] — outgoing HTTP(S) for the hook and `JWKS_URL`.
//!
//! The `topics` grammar (`order:*`, `user:42:*`, `*`) is `streamgate::topic_pattern`, the
//! one the producer's publish claims use.
//!
//! Topics starting with a `PUBLIC_TOPIC_PREFIXES` prefix need no credentials; a request
//! naming only such topics is never refused for lack of a token.

pub mod config;
pub mod credentials;
pub mod hook;
pub mod http_client;
pub mod jwks;
pub mod jwt;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue, header};
use streamgate::topic::Topic;

use crate::access::config::{AccessConfig, AuthMode};
use crate::access::hook::{Hook, HookCredentials, HookVerdict};
use crate::access::jwt::{TokenError, Verifier};
use streamgate::topic_pattern::TopicPatterns;

/// What an authorized request may do.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// When the credential stops being valid: the stream ends then.
    pub expires_at: Option<SystemTime>,
    /// The token's subject, for logs.
    pub subject: Option<String>,
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No credentials, or credentials that are not valid (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not allow `topic` (403).
    #[error("not allowed to subscribe to {}", topic.as_deref().map(|t| format!("{t:?}")).unwrap_or_else(|| "these topics".into()))]
    Forbidden {
        /// The first topic not allowed, when known.
        topic: Option<String>,
    },
    /// The hook could not decide (transient).
    #[error("{0}")]
    Unavailable(String),
}

/// The configured authorizer.
pub struct Access {
    config: AccessConfig,
    method: Method,
}

enum Method {
    Open,
    Jwt(Arc<Verifier>),
    Hook(Box<Hook>),
}

impl Access {
    /// The authorizer for `config`; for `jwt`, `verifier` holds its keys.
    pub fn new(config: AccessConfig, verifier: Option<Arc<Verifier>>) -> Access {
        let method = match (&config.mode, verifier) {
            (AuthMode::None, _) => Method::Open,
            (AuthMode::Jwt(_), Some(verifier)) => Method::Jwt(verifier),
            (AuthMode::Jwt(jwt), None) => Method::Jwt(Arc::new(Verifier::new(
                jwt.keys.clone(),
                jwt.audience.clone(),
                jwt.issuer.clone(),
            ))),
            (AuthMode::Hook(hook), _) => Method::Hook(Box::new(Hook::new(hook.clone()))),
        };
        Access { config, method }
    }

    /// Hook calls made so far (cache misses); zero in other modes.
    pub fn hook_calls(&self) -> u64 {
        match &self.method {
            Method::Hook(hook) => hook.calls.load(std::sync::atomic::Ordering::Relaxed),
            _ => 0,
        }
    }

    fn is_public(&self, topic: &Topic) -> bool {
        self.config.public_prefixes.iter().any(|prefix| topic.as_str().starts_with(prefix.as_str()))
    }

    /// Decides whether the request with `headers` and `query` may subscribe to `topics`.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        topics: &[Topic],
        client_ip: IpAddr,
    ) -> Result<Grant, Denied> {
        let guarded: Vec<&Topic> = topics.iter().filter(|topic| !self.is_public(topic)).collect();
        if guarded.is_empty() {
            return Ok(Grant::default());
        }
        match &self.method {
            Method::Open => Ok(Grant::default()),
            Method::Jwt(verifier) => self.authorize_jwt(verifier, headers, query, &guarded),
            Method::Hook(hook) => self.authorize_hook(hook, headers, query, &guarded, client_ip).await,
        }
    }

    fn authorize_jwt(
        &self,
        verifier: &Verifier,
        headers: &HeaderMap,
        query: Option<&str>,
        guarded: &[&Topic],
    ) -> Result<Grant, Denied> {
        let Some((token, _transport)) =
            credentials::bearer_token(headers, query, &self.config.cookie, self.config.allow_query_token)
        else {
            return Err(Denied::Unauthenticated("missing token".into()));
        };
        let claims = verifier
            .verify(&token)
            .map_err(|error: TokenError| Denied::Unauthenticated(error.to_string()))?;
        let allowed = TopicPatterns::parse(&claims.topics)
            .map_err(|error| Denied::Unauthenticated(format!("invalid token: topics claim: {error}")))?;
        check_topics(&allowed, guarded)?;
        Ok(Grant { expires_at: Some(claims.expires_at()), subject: claims.sub })
    }

    async fn authorize_hook(
        &self,
        hook: &Hook,
        headers: &HeaderMap,
        query: Option<&str>,
        guarded: &[&Topic],
        client_ip: IpAddr,
    ) -> Result<Grant, Denied> {
        let mut credentials = HookCredentials {
            cookie: headers.get(header::COOKIE).cloned(),
            authorization: headers.get(header::AUTHORIZATION).cloned(),
        };
        if credentials.authorization.is_none()
            && self.config.allow_query_token
            && let Some(token) = credentials::query_token(query)
        {
            credentials.authorization = HeaderValue::from_str(&format!("Bearer {token}")).ok();
        }
        if credentials.is_empty() {
            return Err(Denied::Unauthenticated("missing credentials".into()));
        }
        match hook.check(&credentials, guarded, client_ip).await {
            Err(unavailable) => Err(Denied::Unavailable(unavailable.to_string())),
            Ok(HookVerdict::Unauthenticated) => Err(Denied::Unauthenticated("credentials refused".into())),
            Ok(HookVerdict::Forbidden) => {
                let topic = (guarded.len() == 1).then(|| guarded[0].as_str().to_owned());
                Err(Denied::Forbidden { topic })
            }
            Ok(HookVerdict::Allow(None)) => Ok(Grant::default()),
            Ok(HookVerdict::Allow(Some(patterns))) => {
                check_topics(&patterns, guarded)?;
                Ok(Grant::default())
            }
        }
    }
}

fn check_topics(allowed: &TopicPatterns, guarded: &[&Topic]) -> Result<(), Denied> {
    match guarded.iter().find(|topic| !allowed.matches(topic.as_str())) {
        Some(topic) => Err(Denied::Forbidden { topic: Some(topic.as_str().to_owned()) }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decide(patterns: &[&str], topics: &[&str]) -> Result<(), Option<String>> {
        let allowed = TopicPatterns::parse(patterns).unwrap();
        let topics: Vec<Topic> = topics.iter().map(|t| Topic::parse(*t, 64).unwrap()).collect();
        let guarded: Vec<&Topic> = topics.iter().collect();
        check_topics(&allowed, &guarded).map_err(|denied| match denied {
            Denied::Forbidden { topic } => topic,
            other => panic!("{other}"),
        })
    }

    #[test]
    fn the_first_topic_no_pattern_opens_is_named() {
        assert_eq!(decide(&["order:*"], &["order:1", "order:1:x"]), Ok(()));
        assert_eq!(decide(&["order:*"], &["order:1", "order", "x"]), Err(Some("order".into())));
        assert_eq!(decide(&["*"], &["anything", "at:all"]), Ok(()));
        assert_eq!(decide(&[], &["a"]), Err(Some("a".into())));
    }

    proptest! {
        /// A request is allowed exactly when every topic matches some pattern of the
        /// token, and a refusal names the first topic (in request order) that none does.
        #[test]
        fn a_request_is_allowed_iff_each_topic_matches_a_pattern(
            patterns in proptest::collection::vec("[a-c:]{1,4}\\*?", 0..4),
            topics in proptest::collection::vec("[a-c:]{1,5}", 1..5),
        ) {
            let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            let allowed = TopicPatterns::parse(&patterns).unwrap();
            let first_refused = topics.iter().find(|t| !allowed.matches(t)).map(|t| (*t).to_owned());
            let expected = match first_refused {
                None => Ok(()),
                Some(topic) => Err(Some(topic)),
            };
            prop_assert_eq!(decide(&patterns, &topics), expected);
        }
    }
}
