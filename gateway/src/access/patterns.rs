//! Topic patterns, the grammar of a token's `topics` claim and of a hook's answer: an exact
//! topic name, or a prefix followed by a final `*` (`order:*`, `user:42:*`, `*`).
//!
//! A `*` means "anything, including nothing" only in the last place: `order:*` allows
//! `order:1` and `order:1:x` but not `order`; a `*` elsewhere is an ordinary character, as
//! topic names may contain it.

/// One allowed topic or family of topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    /// Exactly this topic.
    Exact(String),
    /// Every topic starting with this prefix (the pattern without its final `*`).
    Prefix(String),
}

impl TopicPattern {
    /// Reads one pattern. Every string is a pattern; a final `*` makes it a prefix.
    pub fn parse(text: &str) -> TopicPattern {
        match text.strip_suffix('*') {
            Some(prefix) => TopicPattern::Prefix(prefix.to_owned()),
            None => TopicPattern::Exact(text.to_owned()),
        }
    }

    /// Whether `topic` is allowed by this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Prefix(prefix) => topic.starts_with(prefix.as_str()),
        }
    }
}

/// What a credential allows: a list of patterns (empty: nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPatterns(Vec<TopicPattern>);

impl TopicPatterns {
    /// Reads every pattern of a list.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> TopicPatterns {
        TopicPatterns(patterns.iter().map(|p| TopicPattern::parse(p.as_ref())).collect())
    }

    /// Whether any pattern allows `topic`.
    pub fn allows(&self, topic: &str) -> bool {
        self.0.iter().any(|pattern| pattern.matches(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allows(patterns: &[&str], topic: &str) -> bool {
        TopicPatterns::parse(patterns).allows(topic)
    }

    #[test]
    fn each_pattern_form_allows_what_it_says() {
        let table = [
            (&["order:*"][..], "order:1", true),
            (&["order:*"], "order:1:x", true),
            (&["order:*"], "order:", true),
            (&["order:*"], "order", false),
            (&["order:*"], "orders:1", false),
            (&["order"], "order", true),
            (&["order"], "order:1", false),
            (&["user:42:*"], "user:42:inbox", true),
            (&["user:42:*"], "user:421:inbox", false),
            (&["*"], "anything at all", true),
            (&["a*b"], "a*b", true),
            (&["a*b"], "axb", false),
            (&["a*b*"], "a*bc", true),
            (&[], "order", false),
            (&["x", "order:*"], "order:7", true),
        ];
        for (patterns, topic, expected) in table {
            assert_eq!(allows(patterns, topic), expected, "{patterns:?} vs {topic:?}");
        }
    }

    proptest! {
        #[test]
        fn an_exact_pattern_allows_only_its_own_name(name in "\\PC{1,20}", other in "\\PC{1,20}") {
            prop_assume!(!name.ends_with('*'));
            prop_assert!(allows(&[&name], &name));
            prop_assert_eq!(allows(&[&name], &other), name == other);
        }

        #[test]
        fn a_prefix_pattern_allows_exactly_the_names_it_starts(prefix in "\\PC{0,10}", rest in "\\PC{0,10}", other in "\\PC{1,20}") {
            let pattern = format!("{prefix}*");
            let topic = format!("{prefix}{rest}");
            prop_assert!(allows(&[&pattern], &topic));
            prop_assert_eq!(allows(&[&pattern], &other), other.starts_with(&prefix));
        }

        #[test]
        fn the_star_allows_every_topic(topic in "\\PC{1,40}") {
            prop_assert!(allows(&["*"], &topic));
        }

        #[test]
        fn a_list_allows_what_any_of_its_patterns_allows(patterns in proptest::collection::vec("\\PC{0,6}\\*?", 0..5), topic in "\\PC{1,8}") {
            let expected = patterns.iter().any(|p| TopicPattern::parse(p).matches(&topic));
            prop_assert_eq!(TopicPatterns::parse(&patterns).allows(&topic), expected);
        }
    }
}
