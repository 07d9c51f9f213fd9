//! Where a subscriber's token comes from: `Authorization: Bearer <token>` (the scheme is
//! case-insensitive, RFC 7235), the cookie named by `AUTH_COOKIE`, or — only with
//! `ALLOW_QUERY_TOKEN` — the `token` query parameter. The header wins, then the cookie.

use axum::http::{HeaderMap, header};

/// Where the token was found (for logs; never the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Authorization: Bearer`.
    Header,
    /// The auth cookie.
    Cookie,
    /// `?token=`.
    Query,
}

/// The bearer token of a request, if any, and where it came from.
pub fn bearer_token(
    headers: &HeaderMap,
    query: Option<&str>,
    cookie_name: &str,
    allow_query: bool,
) -> Option<(String, Transport)> {
    if let Some(token) = authorization_bearer(headers) {
        return Some((token, Transport::Header));
    }
    if let Some(token) = cookie(headers, cookie_name) {
        return Some((token, Transport::Cookie));
    }
    if allow_query && let Some(token) = query_token(query) {
        return Some((token, Transport::Query));
    }
    None
}

/// The token of `Authorization: Bearer <token>`, the scheme matched without case.
pub fn authorization_bearer(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::AUTHORIZATION).iter().find_map(|value| {
        let text = value.to_str().ok()?.trim();
        let (scheme, token) = text.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
    })
}

/// The value of the cookie `name` (in any `Cookie` header).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            let value = value.trim().trim_matches('"');
            (key.trim() == name && !value.is_empty()).then(|| value.to_owned())
        })
}

/// The `token` query parameter.
pub fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(name, value)| name == "token" && !value.is_empty())
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(authorization_bearer(&headers(&[("authorization", value)])).as_deref(), Some("abc"));
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            assert_eq!(authorization_bearer(&headers(&[("authorization", value)])), None, "{value}");
        }
    }

    #[test]
    fn the_header_wins_then_the_cookie_then_the_query_when_allowed() {
        let both = headers(&[("authorization", "Bearer h"), ("cookie", "a=1; streamgate_token=c")]);
        assert_eq!(
            bearer_token(&both, Some("token=q"), "streamgate_token", true),
            Some(("h".into(), Transport::Header))
        );
        let cookie_only = headers(&[("cookie", "a=1; streamgate_token=c; b=2")]);
        assert_eq!(
            bearer_token(&cookie_only, None, "streamgate_token", true),
            Some(("c".into(), Transport::Cookie))
        );
        let none = HeaderMap::new();
        assert_eq!(
            bearer_token(&none, Some("topic=a&token=q"), "streamgate_token", true),
            Some(("q".into(), Transport::Query))
        );
        assert_eq!(bearer_token(&none, Some("topic=a&token=q"), "streamgate_token", false), None);
    }

    #[test]
    fn a_cookie_is_matched_by_its_whole_name() {
        let map = headers(&[("cookie", "xstreamgate_token=no; streamgate_token_old=no")]);
        assert_eq!(cookie(&map, "streamgate_token"), None);
        let map = headers(&[("cookie", "one=1"), ("cookie", "streamgate_token=\"yes\"")]);
        assert_eq!(cookie(&map, "streamgate_token").as_deref(), Some("yes"));
    }

    proptest! {
        #[test]
        fn any_query_or_cookie_text_is_read_without_panicking(query in "\\PC{0,200}", cookie_text in "[ -~]{0,200}") {
            let _ = query_token(Some(&query));
            let map = headers(&[("cookie", &cookie_text), ("authorization", &cookie_text)]);
            let _ = bearer_token(&map, Some(&query), "streamgate_token", true);
        }

        #[test]
        fn a_query_token_round_trips_through_url_encoding(token in "\\PC{1,60}") {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("topic", "a").append_pair("token", &token).finish();
            prop_assert_eq!(query_token(Some(&query)), Some(token));
        }
    }
}
