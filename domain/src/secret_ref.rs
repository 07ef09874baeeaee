//! The name of a real credential, as clients and configuration spell it.

use std::fmt;
use std::sync::Arc;

/// Longest `secret_key_id` the contract allows.
pub const MAX_SECRET_REF_LEN: usize = 128;

/// The validated name of a real credential (`secret_key_id`), never the credential itself.
///
/// 1–128 characters of `A-Z a-z 0-9 . _ : -` (the contract's vocabulary). The text is behind an `Arc`
/// because many sessions usually name the same few secrets and clone it on every verification.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef(Arc<str>);

/// Why a `secret_key_id` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefError {
    /// The name is empty.
    #[error("secret_key_id must not be empty")]
    Empty,
    /// The name is longer than [`MAX_SECRET_REF_LEN`] characters.
    #[error("secret_key_id must be at most {MAX_SECRET_REF_LEN} characters")]
    TooLong,
    /// The name holds a character outside `A-Z a-z 0-9 . _ : -`.
    #[error("secret_key_id may only contain A-Z a-z 0-9 . _ : -")]
    InvalidCharacter,
}

impl SecretRef {
    /// Validates `text` as a `secret_key_id`.
    ///
    /// # Errors
    /// [`SecretRefError`] names the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, SecretRefError> {
        if text.is_empty() {
            return Err(SecretRefError::Empty);
        }
        // Length is checked on bytes before the alphabet so a huge input is refused without scanning it;
        // every allowed character is one byte, so bytes and characters agree for valid names.
        if text.len() > MAX_SECRET_REF_LEN {
            return Err(SecretRefError::TooLong);
        }
        if !text.bytes().all(is_allowed) {
            return Err(SecretRefError::InvalidCharacter);
        }
        Ok(Self(Arc::from(text)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-')
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A name is not a secret, so Debug shows it: it is what an operator needs to read in a log.
        write!(f, "SecretRef({:?})", &*self.0)
    }
}

/// One entry of an allowlist of `secret_key_id`s (an upstream's `allowed_secret_key_ids`): an exact
/// name, or a prefix followed by one `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretPattern {
    /// Exactly this `secret_key_id`.
    Exact(String),
    /// Every `secret_key_id` starting with this prefix (the entry was `prefix*`; a lone `*` allows all).
    Prefix(String),
}

impl SecretPattern {
    /// Parses an allowlist entry: a `secret_key_id`, or one (possibly empty) followed by a single `*`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.strip_suffix('*') {
            Some("") => Some(Self::Prefix(String::new())),
            Some(prefix) => {
                // The prefix itself must be spelled like a secret_key_id, so a typo such as `openai*-`
                // or `open ai*` is caught at start-up instead of never matching.
                (prefix.len() < MAX_SECRET_REF_LEN && SecretRef::parse(prefix).is_ok())
                    .then(|| Self::Prefix(prefix.to_owned()))
            }
            None => SecretRef::parse(text).is_ok().then(|| Self::Exact(text.to_owned())),
        }
    }

    /// Whether this entry allows `secret`.
    pub fn matches(&self, secret: &SecretRef) -> bool {
        match self {
            Self::Exact(name) => secret.as_str() == name,
            Self::Prefix(prefix) => secret.as_str().starts_with(prefix.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_accepts_the_contract_alphabet() {
        let name = "openai-prod.v2:eu_west";
        assert_eq!(SecretRef::parse(name).unwrap().as_str(), name);
    }

    #[test]
    fn parse_refuses_empty_long_and_foreign_names() {
        assert_eq!(SecretRef::parse(""), Err(SecretRefError::Empty));
        assert_eq!(SecretRef::parse(&"a".repeat(129)), Err(SecretRefError::TooLong));
        assert!(SecretRef::parse(&"a".repeat(128)).is_ok());
        for bad in ["open ai", "clé", "a/b", "a\nb", "ключ", "a\"b"] {
            assert_eq!(SecretRef::parse(bad), Err(SecretRefError::InvalidCharacter), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_allowed_names(text in "\\PC{0,140}") {
            let valid = !text.is_empty()
                && text.len() <= MAX_SECRET_REF_LEN
                && text.bytes().all(is_allowed);
            prop_assert_eq!(SecretRef::parse(&text).is_ok(), valid);
        }

        #[test]
        fn parse_round_trips_valid_names(text in "[A-Za-z0-9._:-]{1,128}") {
            let parsed = SecretRef::parse(&text).unwrap();
            prop_assert_eq!(parsed.as_str(), text.as_str());
        }
    }
}
