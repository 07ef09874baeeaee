//! [`UpstreamName`]: the name of a configured upstream, the `{upstream}` of `/v1/proxy/{upstream}/…`.

use std::fmt;
use std::sync::Arc;

/// Longest upstream name: one readable path segment.
pub const MAX_UPSTREAM_NAME_LEN: usize = 64;

/// The validated name of a configured upstream (`openai`, `anthropic`, `chatkit`).
///
/// 1–64 characters of `A-Z a-z 0-9 . _ -`, and neither `.` nor `..`: the name is one segment of the proxy
/// route, so it must not contain a separator nor be a segment that a client or an intermediary resolves.
/// Behind an `Arc` because every session scoped to an upstream carries its name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamName(Arc<str>);

/// Why an upstream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamNameError {
    /// The name is empty.
    #[error("upstream name must not be empty")]
    Empty,
    /// The name is longer than [`MAX_UPSTREAM_NAME_LEN`] characters.
    #[error("upstream name must be at most {MAX_UPSTREAM_NAME_LEN} characters")]
    TooLong,
    /// The name holds a character outside `A-Z a-z 0-9 . _ -`.
    #[error("upstream name may only contain A-Z a-z 0-9 . _ -")]
    InvalidCharacter,
    /// The name is `.` or `..`, which a URL resolver would read as a path step.
    #[error("upstream name must not be . or .. (it is one segment of the proxy path)")]
    DotSegment,
}

impl UpstreamName {
    /// Validates `text` as an upstream name.
    ///
    /// # Errors
    /// [`UpstreamNameError`] names the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, UpstreamNameError> {
        if text.is_empty() {
            return Err(UpstreamNameError::Empty);
        }
        // Every allowed character is one byte, so the byte length is the character count of a valid name,
        // and a huge input is refused before it is scanned.
        if text.len() > MAX_UPSTREAM_NAME_LEN {
            return Err(UpstreamNameError::TooLong);
        }
        if !text.bytes().all(is_allowed) {
            return Err(UpstreamNameError::InvalidCharacter);
        }
        if text == "." || text == ".." {
            return Err(UpstreamNameError::DotSegment);
        }
        Ok(Self(Arc::from(text)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamName({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_accepts_names_of_the_allowed_alphabet_up_to_the_limit() {
        for name in ["openai", "chatkit", "azure-openai.eu_west", "...", ".hidden", "a", &"x".repeat(64)] {
            assert_eq!(UpstreamName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn parse_refuses_each_broken_rule_with_its_own_error() {
        assert_eq!(UpstreamName::parse(""), Err(UpstreamNameError::Empty));
        assert_eq!(UpstreamName::parse(&"x".repeat(65)), Err(UpstreamNameError::TooLong));
        for bad in ["a/b", "a b", "a:b", "a%2fb", "ключ", "a\nb"] {
            assert_eq!(UpstreamName::parse(bad), Err(UpstreamNameError::InvalidCharacter), "{bad:?}");
        }
        assert_eq!(UpstreamName::parse("."), Err(UpstreamNameError::DotSegment));
        assert_eq!(UpstreamName::parse(".."), Err(UpstreamNameError::DotSegment));
    }

    #[test]
    fn display_and_debug_show_the_name() {
        let name = UpstreamName::parse("openai").unwrap();
        assert_eq!(name.to_string(), "openai");
        assert_eq!(format!("{name:?}"), "UpstreamName(\"openai\")");
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_allowed_names(text in "[A-Za-z0-9._ /-]{0,70}|\\PC{0,70}") {
            let valid = !text.is_empty()
                && text.len() <= MAX_UPSTREAM_NAME_LEN
                && text.bytes().all(is_allowed)
                && text != "."
                && text != "..";
            prop_assert_eq!(UpstreamName::parse(&text).is_ok(), valid);
        }
    }
}
