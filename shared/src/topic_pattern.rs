//! Topic patterns, as tokens grant topics: an exact topic name (`order:1`), or a prefix
//! followed by `*` (`order:*` — every topic starting with `order:`; `*` alone — every
//! topic).
//!
//! Only a final `*` is a wildcard; a `*` anywhere else is an ordinary character, as it is
//! in topic names. A pattern `a*` therefore also grants the topic literally named `a*`,
//! which it would match as a prefix anyway. Matching is byte-wise on the UTF-8 name: no
//! case folding, no normalisation — the same rule as topic names everywhere else.

/// The most bytes a pattern may have: generous for any topic name and its wildcard.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// Why a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The empty pattern matches nothing useful; it is most likely a mistake.
    #[error("a topic pattern must not be empty")]
    Empty,
    /// Longer than [`MAX_PATTERN_BYTES`].
    #[error("a topic pattern must be at most {MAX_PATTERN_BYTES} bytes long")]
    TooLong,
    /// Topic names never hold control characters, so such a pattern can match nothing.
    #[error("a topic pattern must not contain control characters")]
    ControlCharacter,
}

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    /// The exact name, or the prefix before the final `*`.
    text: String,
    /// Whether it ended in `*`.
    prefix: bool,
}

impl TopicPattern {
    /// Parses `pattern`: an exact topic name, or a prefix followed by `*`.
    pub fn parse(pattern: &str) -> Result<TopicPattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLong);
        }
        if pattern.chars().any(char::is_control) {
            return Err(PatternError::ControlCharacter);
        }
        Ok(match pattern.strip_suffix('*') {
            Some(prefix) => TopicPattern { text: prefix.to_owned(), prefix: true },
            None => TopicPattern { text: pattern.to_owned(), prefix: false },
        })
    }

    /// Whether `topic` is granted by this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        if self.prefix { topic.starts_with(&self.text) } else { topic == self.text }
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.text, if self.prefix { "*" } else { "" })
    }
}

/// The topics a token grants: any of several patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPatterns(Vec<TopicPattern>);

impl TopicPatterns {
    /// Parses every pattern; the first invalid one is the error.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<TopicPatterns, PatternError> {
        patterns.iter().map(|p| TopicPattern::parse(p.as_ref())).collect::<Result<_, _>>().map(TopicPatterns)
    }

    /// Whether any pattern grants `topic` (none when there are no patterns).
    pub fn matches(&self, topic: &str) -> bool {
        self.0.iter().any(|pattern| pattern.matches(topic))
    }

    /// Whether there are no patterns (nothing is granted).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn matches(pattern: &str, topic: &str) -> bool {
        TopicPattern::parse(pattern).unwrap().matches(topic)
    }

    #[test]
    fn exact_names_and_prefixes() {
        assert!(matches("order:1", "order:1"));
        assert!(!matches("order:1", "order:12"));
        assert!(!matches("order:1", "Order:1"));
        assert!(matches("order:*", "order:1"));
        assert!(matches("order:*", "order:"));
        assert!(!matches("order:*", "order"));
        assert!(!matches("order:*", "orders:1"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b", "a*b"), "a star inside is literal");
        assert!(!matches("a*b", "axb"));
        assert!(matches("a**", "a*x"), "only the last star is a wildcard");
        assert!(!matches("a**", "ax"));
        assert!(matches("{x}*", "{x}:1"));
    }

    #[test]
    fn invalid_patterns_say_why() {
        assert_eq!(TopicPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(TopicPattern::parse("a\nb"), Err(PatternError::ControlCharacter));
        assert_eq!(TopicPattern::parse(&"x".repeat(MAX_PATTERN_BYTES + 1)), Err(PatternError::TooLong));
        assert!(TopicPatterns::parse(&["a", ""]).is_err());
    }

    #[test]
    fn a_set_grants_what_any_member_grants_and_the_empty_set_nothing() {
        let set = TopicPatterns::parse(&["order:*", "news"]).unwrap();
        assert!(set.matches("order:7") && set.matches("news"));
        assert!(!set.matches("news:1"));
        assert!(!TopicPatterns::default().matches("news"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_display_round_trips(pattern in "\\PC{0,40}|.{0,10}") {
            if let Ok(parsed) = TopicPattern::parse(&pattern) {
                prop_assert_eq!(parsed.to_string(), pattern);
            }
        }

        #[test]
        fn a_pattern_without_final_star_matches_exactly_itself(pattern in "[a-z:{}*]{1,12}", topic in "[a-z:{}*]{0,12}") {
            prop_assume!(!pattern.ends_with('*'));
            prop_assert_eq!(matches(&pattern, &topic), topic == pattern);
        }

        #[test]
        fn a_final_star_matches_exactly_the_names_with_that_prefix(prefix in "\\PC{0,12}", topic in "\\PC{0,16}") {
            let pattern = format!("{prefix}*");
            prop_assert_eq!(matches(&pattern, &topic), topic.starts_with(&prefix));
            let extended = format!("{prefix}{topic}");
            prop_assert!(matches(&pattern, &extended));
        }
    }
}
