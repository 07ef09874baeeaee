//! Configuration primitives that the adapters' settings types share.
//!
//! Every setting lives in the settings type of the adapter that uses it (`Deserialize + Default`, with
//! a doc comment that becomes its description in `sidekey config --defaults`); `bin` composes them into
//! the configuration. What those types have in common lives here.
//!
//! # Layout
//! - [`Secret`]: a configured secret (a token, a shared secret, a URL that may hold a password):
//!   redacted in `Debug` and in `sidekey config`, zeroed on drop.
//! - [`SECRET_MARK`]: how a secret setting is marked in the configuration's JSON Schema.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// The JSON Schema keyword that marks a secret setting, so that whatever prints the configuration
/// redacts it without a list of its own.
pub const SECRET_MARK: &str = "x-sidekey-secret";

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A configured secret. Its text is reached only through [`Secret::expose`]; `Debug` and `Serialize`
/// print [`REDACTED`], so the configuration can be logged or printed whole.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// A secret holding `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(Zeroizing::new(text.into()))
    }

    /// The secret's text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// Serialized redacted: printing a configuration never shows a secret.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", SECRET_MARK: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_and_reads_from_a_string() {
        let secret: Secret = serde_json::from_str("\"hunter2-hunter2\"").unwrap();
        assert_eq!(secret.expose(), "hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&secret).unwrap(), format!("\"{REDACTED}\""));
        let schema = serde_json::to_value(schemars::schema_for!(Secret)).unwrap();
        assert_eq!(schema[SECRET_MARK], true);
    }
}
