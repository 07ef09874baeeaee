//! [`ModelPattern`]: which model names a scope or an upstream admits.

use std::fmt;

/// Longest model name or pattern, in bytes: real names are far shorter (the longest are fine-tuned
/// names such as `ft:gpt-4o-mini-2024-07-18:org-name::abc123`), and patterns travel with every session.
pub const MAX_MODEL_LEN: usize = 256;

/// A model name (`gpt-4o-mini`), or a prefix ending in one `*` (`gpt-4.1-*`; `*` alone admits any model).
///
/// Names are 1–256 bytes of visible ASCII other than `*` (the wildcard) and `,` (it separates patterns
/// in the `X-Sidekey-Scope-Models` header); `/ : @ . _ - +` and the like are allowed because real names
/// use them (`ft:gpt-4o-mini:org::abc`, `models/gemini-2.0-flash`, `claude-3@20240229`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelPattern {
    /// A valid model name, or for a prefix pattern its text without the `*` (possibly empty).
    text: Box<str>,
    prefix: bool,
}

/// Why a model pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelPatternError {
    /// The pattern is empty.
    #[error("a model must not be empty")]
    Empty,
    /// Longer than [`MAX_MODEL_LEN`] bytes.
    #[error("a model must be at most {MAX_MODEL_LEN} characters")]
    TooLong,
    /// A `*` anywhere but at the end, or more than one.
    #[error("a model pattern may only hold one *, at its end (gpt-4.1-*)")]
    MisplacedWildcard,
    /// A space, a control character, a non-ASCII character or a comma.
    #[error("a model may only contain visible ASCII characters other than , and *")]
    InvalidCharacter,
}

impl ModelPattern {
    /// Parses an exact model name or a trailing-`*` pattern.
    ///
    /// # Errors
    /// [`ModelPatternError`] names the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, ModelPatternError> {
        if text.is_empty() {
            return Err(ModelPatternError::Empty);
        }
        if text.len() > MAX_MODEL_LEN {
            return Err(ModelPatternError::TooLong);
        }
        let (name, prefix) = match text.strip_suffix('*') {
            Some(name) => (name, true),
            None => (text, false),
        };
        if name.contains('*') {
            return Err(ModelPatternError::MisplacedWildcard);
        }
        if !name.bytes().all(is_name_byte) {
            return Err(ModelPatternError::InvalidCharacter);
        }
        Ok(Self { text: Box::from(name), prefix })
    }

    /// Whether `model`, as the client sent it, is admitted: equal to the name (case-sensitive, as
    /// upstreams compare them), or starting with the prefix. A text that is not a valid model name never
    /// matches, so `*` does not admit an empty, huge or comma-separated "model".
    pub fn matches(&self, model: &str) -> bool {
        if !is_model_name(model) {
            return false;
        }
        if self.prefix { model.starts_with(&*self.text) } else { *model == *self.text }
    }

    /// Whether every model `other` admits, this pattern admits too.
    pub fn covers(&self, other: &ModelPattern) -> bool {
        match (self.prefix, other.prefix) {
            (true, _) => other.text.starts_with(&*self.text),
            (false, true) => false,
            (false, false) => self.text == other.text,
        }
    }
}

/// Whether `text` is a model name a client may send: 1–256 bytes of the allowed characters.
fn is_model_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_MODEL_LEN && text.bytes().all(is_name_byte)
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_graphic() && byte != b'*' && byte != b','
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if self.prefix {
            f.write_str("*")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelPattern({:?})", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model(text: &str) -> ModelPattern {
        ModelPattern::parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
    }

    #[test]
    fn parse_accepts_real_names_and_trailing_star_patterns() {
        for text in [
            "gpt-4o-mini",
            "ft:gpt-4o-mini:org::abc",
            "models/gemini-2.0-flash",
            "claude-3@20240229",
            "meta-llama/Llama-3.1-8B+x",
            "gpt-4.1-*",
            "*",
            &"m".repeat(256),
        ] {
            assert_eq!(model(text).to_string(), text);
        }
        assert_eq!(format!("{:?}", model("gpt-*")), "ModelPattern(\"gpt-*\")");
    }

    #[test]
    fn parse_refuses_each_broken_rule_with_its_own_error() {
        assert_eq!(ModelPattern::parse(""), Err(ModelPatternError::Empty));
        assert_eq!(ModelPattern::parse(&"m".repeat(257)), Err(ModelPatternError::TooLong));
        for text in ["**", "gpt-*-mini", "*gpt", "a**"] {
            assert_eq!(ModelPattern::parse(text), Err(ModelPatternError::MisplacedWildcard), "{text:?}");
        }
        for text in ["gpt 4", "gpt,4", "gpt-4,*", "gpt\n", "modèle", "\u{7f}"] {
            assert_eq!(ModelPattern::parse(text), Err(ModelPatternError::InvalidCharacter), "{text:?}");
        }
    }

    #[test]
    fn matches_compares_exactly_and_case_sensitively() {
        let mini = model("gpt-4o-mini");
        assert!(mini.matches("gpt-4o-mini"));
        for other in ["GPT-4o-mini", "gpt-4o-mini ", "gpt-4o-mini-2024", "gpt-4o", ""] {
            assert!(!mini.matches(other), "{other:?}");
        }
        let family = model("gpt-4.1-*");
        assert!(family.matches("gpt-4.1-mini"));
        assert!(family.matches("gpt-4.1-"));
        assert!(!family.matches("gpt-4.1"));
        assert!(!family.matches("gpt-4.10"));
    }

    #[test]
    fn no_pattern_admits_a_text_that_is_not_a_model_name() {
        let any = model("*");
        assert!(any.matches("anything-at-all"));
        for bad in ["", "a,b", "a b", "a*", "é", &"m".repeat(257)] {
            assert!(!any.matches(bad), "{bad:?}");
        }
    }

    #[test]
    fn covers_compares_names_and_prefixes() {
        let cases = [
            ("*", "gpt-4o", true),
            ("*", "*", true),
            ("gpt-*", "gpt-4.1-*", true),
            ("gpt-*", "gpt-4o", true),
            ("gpt-4.1-*", "gpt-*", false),
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o*", false),
            ("gpt-4o", "gpt-4o-mini", false),
            ("gpt-4o-*", "claude-3", false),
        ];
        for (wide, narrow, expected) in cases {
            assert_eq!(model(wide).covers(&model(narrow)), expected, "{wide} covers {narrow}");
        }
    }

    proptest! {
        #[test]
        fn a_covering_pattern_admits_every_model_the_covered_one_admits(
            wide in "[ab]{0,3}\\*?", narrow in "[ab]{0,3}\\*?", name in "[ab]{1,4}",
        ) {
            prop_assume!(!wide.is_empty() && !narrow.is_empty());
            let (wide, narrow) = (model(&wide), model(&narrow));
            if wide.covers(&narrow) && narrow.matches(&name) {
                prop_assert!(wide.matches(&name), "{} covers {} but not {}", wide, narrow, name);
            }
        }

        #[test]
        fn parse_accepts_exactly_the_valid_patterns_and_round_trips_them(text in "[ -~]{0,8}|\\PC{0,8}") {
            let name = text.strip_suffix('*').unwrap_or(&text);
            let valid = !text.is_empty() && text.len() <= MAX_MODEL_LEN && name.bytes().all(is_name_byte);
            let parsed = ModelPattern::parse(&text);
            prop_assert_eq!(parsed.is_ok(), valid, "{:?}", text);
            if let Ok(parsed) = parsed {
                prop_assert_eq!(parsed.to_string(), text);
            }
        }
    }
}
