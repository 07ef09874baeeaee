//! The real credential that a session stands in for.

use std::fmt;
use zeroize::Zeroize;

/// A real credential (an LLM API key).
///
/// It never implements `Display`, `Clone` or `Serialize`: the only way to its text is [`SecretValue::expose`],
/// so every place that reads it is explicit and searchable. `Debug` prints `SecretValue(<redacted>)`, and the
/// memory is overwritten with zeros when the value is dropped.
pub struct SecretValue(String);

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretValueError {
    /// The credential is empty (an unset variable or an empty file, most often).
    #[error("the secret is empty")]
    Empty,
    /// The credential holds a control character, so it could not travel in an HTTP header.
    #[error("the secret contains a control character")]
    ControlCharacter,
}

impl SecretValue {
    /// Wraps a credential. Surrounding whitespace (a trailing newline in a file) is not part of it.
    ///
    /// # Errors
    /// [`SecretValueError`] when the credential is empty or holds a control character.
    pub fn new(mut text: String) -> Result<Self, SecretValueError> {
        let trimmed = text.trim();
        let result = if trimmed.is_empty() {
            Err(SecretValueError::Empty)
        } else if trimmed.chars().any(char::is_control) {
            Err(SecretValueError::ControlCharacter)
        } else {
            Ok(Self(trimmed.to_owned()))
        };
        // The untrimmed copy held the secret too.
        text.zeroize();
        result
    }

    /// The credential's text, for the one place that must send it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = SecretValue::new("sk-live-abcdef".into()).unwrap();
        let printed = format!("{secret:?} {secret:#?}");
        assert!(!printed.contains("sk-live"), "{printed}");
        assert!(printed.contains("redacted"));
    }

    #[test]
    fn new_trims_whitespace_and_refuses_empty_or_control_characters() {
        assert_eq!(SecretValue::new(" sk-1\n".into()).unwrap().expose(), "sk-1");
        assert_eq!(SecretValue::new(" \n".into()).unwrap_err(), SecretValueError::Empty);
        assert_eq!(
            SecretValue::new("sk\r\nX-Evil: 1".into()).unwrap_err(),
            SecretValueError::ControlCharacter
        );
    }
}
