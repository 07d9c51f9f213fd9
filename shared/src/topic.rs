//! Validated names that cross the system's edges: topics, event names and instance ids.
//!
//! Each is parsed once where it enters (HTTP request, ingest entry, configuration) and
//! trusted everywhere after: nothing downstream re-validates.

use std::fmt;

/// The default maximum length of a topic name, in bytes (`MAX_TOPIC_BYTES`).
pub const DEFAULT_MAX_TOPIC_BYTES: usize = 256;

/// Event names starting with this prefix are reserved for Streamgate's own notices
/// (such as `streamgate.reset`), so a publisher cannot forge them.
pub const RESERVED_EVENT_PREFIX: &str = "streamgate.";

/// Why a name was rejected. The message is meant for the client that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which kind of name.
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{what} is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Which kind of name.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// The name contains a character that is not allowed.
    #[error("{what} contains a forbidden character ({found:?}): {allowed}")]
    Forbidden {
        /// Which kind of name.
        what: &'static str,
        /// The first offending character.
        found: char,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The name uses a reserved prefix.
    #[error("{what} must not start with the reserved prefix {prefix:?}")]
    Reserved {
        /// Which kind of name.
        what: &'static str,
        /// The reserved prefix.
        prefix: &'static str,
    },
}

/// A topic name: 1 to `max_bytes` bytes of UTF-8 without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Parses a topic name, allowing at most `max_bytes` bytes.
    pub fn parse(name: impl Into<String>, max_bytes: usize) -> Result<Topic, NameError> {
        let name = name.into();
        const WHAT: &str = "topic";
        if name.is_empty() {
            return Err(NameError::Empty { what: WHAT });
        }
        if name.len() > max_bytes {
            return Err(NameError::TooLong { what: WHAT, len: name.len(), max: max_bytes });
        }
        if let Some(found) = name.chars().find(|c| c.is_control()) {
            return Err(NameError::Forbidden {
                what: WHAT,
                found,
                allowed: "any UTF-8 text without control characters",
            });
        }
        Ok(Topic(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The maximum length of an event name, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 128;

/// An SSE event type chosen by the publisher (the `event:` field).
///
/// Without one, browsers dispatch the event to `onmessage`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventName(String);

impl EventName {
    /// Parses a publisher's event name: 1 to 128 bytes, no line break, no NUL, and not
    /// in the reserved `streamgate.` namespace.
    pub fn parse(name: impl Into<String>) -> Result<EventName, NameError> {
        let name = name.into();
        const WHAT: &str = "event name";
        if name.is_empty() {
            return Err(NameError::Empty { what: WHAT });
        }
        if name.len() > MAX_EVENT_NAME_BYTES {
            return Err(NameError::TooLong { what: WHAT, len: name.len(), max: MAX_EVENT_NAME_BYTES });
        }
        if let Some(found) = name.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
            return Err(NameError::Forbidden { what: WHAT, found, allowed: "no line breaks or NUL" });
        }
        if name.starts_with(RESERVED_EVENT_PREFIX) {
            return Err(NameError::Reserved { what: WHAT, prefix: RESERVED_EVENT_PREFIX });
        }
        Ok(EventName(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for EventName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The maximum length of an instance id, in bytes.
pub const MAX_INSTANCE_ID_BYTES: usize = 128;

/// A gateway instance id: 1 to 128 bytes of ASCII letters, digits, `.`, `_` and `-`.
///
/// Restricting the alphabet keeps instance ids safe inside Redis key names and hash tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// Parses an instance id.
    pub fn parse(id: impl Into<String>) -> Result<InstanceId, NameError> {
        let id = id.into();
        const WHAT: &str = "instance id";
        if id.is_empty() {
            return Err(NameError::Empty { what: WHAT });
        }
        if id.len() > MAX_INSTANCE_ID_BYTES {
            return Err(NameError::TooLong { what: WHAT, len: id.len(), max: MAX_INSTANCE_ID_BYTES });
        }
        if let Some(found) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NameError::Forbidden {
                what: WHAT,
                found,
                allowed: "ASCII letters, digits, '.', '_' and '-'",
            });
        }
        Ok(InstanceId(id))
    }

    /// A fresh id for this process: the host name (sanitized) plus a random suffix, so two
    /// processes on one host, or two starts of one process, never share an id.
    pub fn generate() -> InstanceId {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .unwrap_or_else(|| "gateway".to_owned());
        let mut host: String = host
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
            .take(MAX_INSTANCE_ID_BYTES - 9)
            .collect();
        if host.is_empty() {
            host.push_str("gateway");
        }
        let suffix: String = (0..8).map(|_| fastrand::alphanumeric().to_ascii_lowercase()).collect();
        InstanceId(format!("{host}-{suffix}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_accepts_unicode_and_punctuation() {
        for name in ["order:1", "a", "équipe/😀", "with space", "braces{}"] {
            assert_eq!(Topic::parse(name, 256).unwrap().as_str(), name);
        }
    }

    #[test]
    fn topic_rejects_empty_long_and_control_characters() {
        assert!(matches!(Topic::parse("", 256), Err(NameError::Empty { .. })));
        assert!(matches!(Topic::parse("x".repeat(257), 256), Err(NameError::TooLong { len: 257, .. })));
        assert!(Topic::parse("x".repeat(256), 256).is_ok());
        for bad in ["a\nb", "a\rb", "nul\0", "tab\t", "del\u{7f}", "c1\u{85}"] {
            assert!(matches!(Topic::parse(bad, 256), Err(NameError::Forbidden { .. })), "{bad:?}");
        }
    }

    #[test]
    fn event_name_rejects_line_breaks_nul_and_reserved_prefix() {
        assert!(EventName::parse("status").is_ok());
        for bad in ["a\nb", "a\rb", "a\0", ""] {
            assert!(EventName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(EventName::parse("streamgate.reset"), Err(NameError::Reserved { .. })));
    }

    #[test]
    fn instance_id_is_key_safe_and_generated_ids_are_unique() {
        assert!(InstanceId::parse("gw-0.pod_1").is_ok());
        for bad in ["", "a b", "a{b}", "a:b", "é"] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
        let a = InstanceId::generate();
        let b = InstanceId::generate();
        assert_ne!(a, b);
        assert!(InstanceId::parse(a.as_str()).is_ok());
    }
}
