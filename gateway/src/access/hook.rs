//! `SUBSCRIBE_AUTH=hook`: asks an HTTP endpoint whether a request may subscribe.
//!
//! The gateway POSTs `{"topics": [...], "clientIp": "..."}` (the topics that are not
//! public) to `SUBSCRIBE_AUTH_URL` with the request's `Cookie` and `Authorization`
//! headers (a `?token=`, when allowed, is sent as `Authorization: Bearer`). A 2xx answer
//! allows; a JSON body `{"topics": [patterns]}` narrows what it allows. 401 means "not
//! signed in", any other 4xx "not allowed". No answer within `SUBSCRIBE_AUTH_TIMEOUT`, a
//! 5xx or a connection error means "unavailable": a transient refusal the client retries.
//!
//! Answers (allow, 401, 403; never "unavailable") are cached for `SUBSCRIBE_AUTH_CACHE`,
//! keyed by a SHA-256 of the credentials and the topics, so a reconnect storm costs the
//! hook one call per user; at most [`CACHE_ENTRIES`] are kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use streamgate::topic::Topic;
use tokio::time::Instant;
use url::Url;

use crate::access::config::HookConfig;
use crate::access::http_client::HttpClient;
use streamgate::topic_pattern::TopicPatterns;

/// Most cached answers; beyond it expired ones are dropped, and if none are, nothing new
/// is cached (the hook is asked instead). 10 000 entries are about 1 MiB.
pub const CACHE_ENTRIES: usize = 10_000;
/// Largest hook answer read; a larger one counts as unavailable.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// What a subscriber presents to the hook.
#[derive(Debug, Default, Clone)]
pub struct HookCredentials {
    /// The `Cookie` header, as received.
    pub cookie: Option<HeaderValue>,
    /// The `Authorization` header, or `Bearer <query token>`.
    pub authorization: Option<HeaderValue>,
}

impl HookCredentials {
    /// Whether there is anything to ask about.
    pub fn is_empty(&self) -> bool {
        self.cookie.is_none() && self.authorization.is_none()
    }
}

/// The hook's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookVerdict {
    /// 2xx, possibly narrowed to these patterns.
    Allow(Option<TopicPatterns>),
    /// 401.
    Unauthenticated,
    /// Any other 4xx.
    Forbidden,
}

/// The hook did not decide.
#[derive(Debug, thiserror::Error)]
#[error("the subscribe hook is unavailable: {0}")]
pub struct HookUnavailable(pub String);

#[derive(Deserialize)]
struct Answer {
    topics: Option<Vec<String>>,
}

/// The hook client and its cache.
#[derive(Debug)]
pub struct Hook {
    client: HttpClient,
    config: HookConfig,
    cache: Mutex<HashMap<[u8; 32], (Instant, HookVerdict)>>,
    /// Calls made to the hook (cache misses).
    pub calls: AtomicU64,
}

impl Hook {
    /// A client for `config`.
    pub fn new(config: HookConfig) -> Hook {
        let client = HttpClient::new();
        Hook { client, config, cache: Mutex::new(HashMap::new()), calls: AtomicU64::new(0) }
    }

    /// Asks (or recalls) whether `credentials` may subscribe to `topics`.
    pub async fn check(
        &self,
        credentials: &HookCredentials,
        topics: &[&Topic],
        client_ip: IpAddr,
    ) -> Result<HookVerdict, HookUnavailable> {
        let key = cache_key(credentials, topics);
        if let Some(verdict) = self.cached(&key) {
            return Ok(verdict);
        }
        let verdict = self.ask(credentials, topics, client_ip).await?;
        self.remember(key, verdict.clone());
        Ok(verdict)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<HookVerdict> {
        let cache = self.cache.lock().expect("hook cache lock");
        let (expires, verdict) = cache.get(key)?;
        (*expires > Instant::now()).then(|| verdict.clone())
    }

    fn remember(&self, key: [u8; 32], verdict: HookVerdict) {
        if self.config.cache.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().expect("hook cache lock");
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= CACHE_ENTRIES {
                return;
            }
        }
        cache.insert(key, (now + self.config.cache, verdict));
    }

    async fn ask(
        &self,
        credentials: &HookCredentials,
        topics: &[&Topic],
        client_ip: IpAddr,
    ) -> Result<HookVerdict, HookUnavailable> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "topics": topics.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "clientIp": client_ip.to_string(),
        });
        let mut request = Request::post(self.config.url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(cookie) = &credentials.cookie {
            request = request.header(header::COOKIE, cookie.clone());
        }
        if let Some(authorization) = &credentials.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|error| HookUnavailable(format!("cannot build the request: {error}")))?;
        let (status, answer) = self
            .client
            .send(request, self.config.timeout, MAX_ANSWER_BYTES)
            .await
            .map_err(|problem| HookUnavailable(format!("POST {} {problem}", shown(&self.config.url))))?;
        if status == StatusCode::UNAUTHORIZED {
            return Ok(HookVerdict::Unauthenticated);
        }
        if status.is_client_error() {
            return Ok(HookVerdict::Forbidden);
        }
        if !status.is_success() {
            return Err(HookUnavailable(format!("POST {} answered {status}", shown(&self.config.url))));
        }
        narrowing(&answer).map(HookVerdict::Allow)
    }
}

/// The patterns a 2xx body narrows the grant to: none for an empty or non-JSON body or
/// one without `topics`; an error for a `topics` that is not a list of strings.
fn narrowing(body: &[u8]) -> Result<Option<TopicPatterns>, HookUnavailable> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(None);
    };
    if value.get("topics").is_none() {
        return Ok(None);
    }
    let answer: Answer = serde_json::from_value(value)
        .map_err(|_| HookUnavailable("its answer's topics is not a list of strings".into()))?;
    match answer.topics {
        None => Ok(None),
        Some(topics) => TopicPatterns::parse(&topics)
            .map(Some)
            .map_err(|error| HookUnavailable(format!("its answer's topics: {error}"))),
    }
}

/// The URL without credentials or query, for messages.
fn shown(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

fn cache_key(credentials: &HookCredentials, topics: &[&Topic]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [&credentials.cookie, &credentials.authorization] {
        match part {
            // Lengths first, so that no two different inputs hash the same bytes.
            Some(value) => {
                hasher.update((value.len() as u64).to_be_bytes());
                hasher.update(value.as_bytes());
            }
            None => hasher.update(u64::MAX.to_be_bytes()),
        }
    }
    let mut names: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
    names.sort_unstable();
    for name in names {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_narrows_only_with_a_topics_list() {
        assert_eq!(narrowing(b"").unwrap(), None);
        assert_eq!(narrowing(b"OK").unwrap(), None);
        assert_eq!(narrowing(br#"{"user": 1}"#).unwrap(), None);
        assert_eq!(
            narrowing(br#"{"topics": ["a:*"]}"#).unwrap(),
            Some(TopicPatterns::parse(&["a:*"]).unwrap())
        );
        assert!(narrowing(br#"{"topics": "a"}"#).is_err());
        assert!(narrowing(br#"{"topics": [""]}"#).is_err());
    }

    #[test]
    fn the_cache_key_depends_on_credentials_and_the_set_of_topics() {
        let a = Topic::parse("a", 16).unwrap();
        let b = Topic::parse("b", 16).unwrap();
        let alice =
            HookCredentials { cookie: Some(HeaderValue::from_static("s=alice")), authorization: None };
        let bob = HookCredentials { cookie: Some(HeaderValue::from_static("s=bob")), authorization: None };
        assert_eq!(cache_key(&alice, &[&a, &b]), cache_key(&alice, &[&b, &a]));
        assert_ne!(cache_key(&alice, &[&a]), cache_key(&bob, &[&a]));
        assert_ne!(cache_key(&alice, &[&a]), cache_key(&alice, &[&b]));
        let moved =
            HookCredentials { cookie: None, authorization: Some(HeaderValue::from_static("s=alice")) };
        assert_ne!(cache_key(&alice, &[&a]), cache_key(&moved, &[&a]));
    }
}
