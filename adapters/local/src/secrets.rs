//! Secret sources that read real keys from this machine: the environment, a directory of files, or a
//! TOML file.
//!
//! Both read just in time, at each issuance, never at start-up, so a key changed in the environment of a
//! restarted bridge or rewritten in its file is picked up by the next session without restarting sidekey.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sidekey_application::{SecretSource, SecretSourceError};
use sidekey_domain::{SecretRef, SecretValue};

/// Where real keys are read on this machine, as configuration spells it: `env`, `file:DIR` or
/// `toml:PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub enum LocalSource {
    /// `env`: `SIDEKEY_SECRET_<ID>` environment variables ([`EnvSecretSource`]).
    #[default]
    Env,
    /// `file:DIR`: one file per key in `DIR` ([`FileSecretSource`]).
    File(PathBuf),
    /// `toml:PATH`: one TOML file of `name = "key"` ([`TomlFileSecretSource`]).
    Toml(PathBuf),
}

/// A text that names no local secret source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a local secret source: use \"env\", \"file:DIR\" or \"toml:PATH\"")]
pub struct LocalSourceError(String);

impl FromStr for LocalSource {
    type Err = LocalSourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || LocalSourceError(text.to_owned());
        if text == "env" {
            Ok(Self::Env)
        } else if let Some(directory) = text.strip_prefix("file:") {
            (!directory.is_empty()).then(|| Self::File(directory.into())).ok_or_else(refuse)
        } else if let Some(path) = text.strip_prefix("toml:") {
            (!path.is_empty()).then(|| Self::Toml(path.into())).ok_or_else(refuse)
        } else {
            Err(refuse())
        }
    }
}

impl TryFrom<String> for LocalSource {
    type Error = LocalSourceError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for LocalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env => f.write_str("env"),
            Self::File(directory) => write!(f, "file:{}", directory.display()),
            Self::Toml(path) => write!(f, "toml:{}", path.display()),
        }
    }
}

impl From<LocalSource> for String {
    fn from(source: LocalSource) -> Self {
        source.to_string()
    }
}

impl LocalSource {
    /// The secret source this names.
    pub fn open(&self) -> Arc<dyn SecretSource> {
        match self {
            Self::Env => Arc::new(EnvSecretSource),
            Self::File(directory) => Arc::new(FileSecretSource::new(directory)),
            Self::Toml(path) => Arc::new(TomlFileSecretSource::new(path)),
        }
    }
}

/// Prefix of the environment variables that hold real keys: `openai-prod` is `SIDEKEY_SECRET_OPENAI_PROD`.
pub const SECRET_ENV_PREFIX: &str = "SIDEKEY_SECRET_";

/// The environment variable that holds the key named `secret_ref`: upper-cased, with `-` (which
/// environment variable names cannot hold) turned into `_`; `None` for a name with `_`, `.` or `:`.
///
/// The mapping is one-to-one, so that two names never reach the same variable: `openai-prod`,
/// `openai_prod` and `openai.prod` would all be `SIDEKEY_SECRET_OPENAI_PROD` if `_`, `.` and `:` were
/// mapped too, and a revocation of one name would not reach the others. Names with those characters are
/// for the `file:` and `toml:` sources.
pub fn secret_env_var(secret_ref: &SecretRef) -> Option<String> {
    if secret_ref.as_str().contains(['_', '.', ':']) {
        return None;
    }
    let mut name = String::with_capacity(SECRET_ENV_PREFIX.len() + secret_ref.as_str().len());
    name.push_str(SECRET_ENV_PREFIX);
    name.extend(secret_ref.as_str().chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }));
    Some(name)
}

/// Real keys from `SIDEKEY_SECRET_<ID>` environment variables (the embedded default).
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecretSource;

#[async_trait]
impl SecretSource for EnvSecretSource {
    async fn fetch(&self, secret_ref: &SecretRef) -> Result<SecretValue, SecretSourceError> {
        let Some(variable) = secret_env_var(secret_ref) else { return Err(SecretSourceError::NotFound) };
        match std::env::var(&variable) {
            Ok(text) => SecretValue::new(text)
                .map_err(|error| SecretSourceError::Failed(format!("{variable} is unusable: {error}"))),
            Err(std::env::VarError::NotPresent) => Err(SecretSourceError::NotFound),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(SecretSourceError::Failed(format!("{variable} is not valid UTF-8")))
            }
        }
    }

    async fn ping(&self) -> Result<(), SecretSourceError> {
        Ok(())
    }

    fn location(&self, secret_ref: &SecretRef) -> Option<String> {
        Some(secret_env_var(secret_ref).map_or_else(
            || {
                "no environment variable: the env source reads SIDEKEY_SECRET_<ID> with - as _, so it only \
                 takes names of letters, digits and - (use file: or toml: for others)"
                    .to_owned()
            },
            |variable| format!("the environment variable {variable}"),
        ))
    }
}

/// How long a file read may take before the source reports a timeout (a hung network filesystem).
const FILE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Real keys from files: the key named `openai-prod` is the content of `DIR/openai-prod` (the layout of
/// Kubernetes and Docker secret mounts). Names cannot escape the directory: `SecretRef` allows no `/`, and
/// the names `.` and `..` are refused.
#[derive(Debug, Clone)]
pub struct FileSecretSource {
    directory: PathBuf,
}

impl FileSecretSource {
    /// A source over `directory`.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self { directory: directory.into() }
    }
}

#[async_trait]
impl SecretSource for FileSecretSource {
    async fn fetch(&self, secret_ref: &SecretRef) -> Result<SecretValue, SecretSourceError> {
        if matches!(secret_ref.as_str(), "." | "..") {
            return Err(SecretSourceError::NotFound);
        }
        let path = self.directory.join(secret_ref.as_str());
        let read = tokio::time::timeout(FILE_READ_TIMEOUT, tokio::fs::read_to_string(path)).await;
        match read {
            Err(_) => Err(SecretSourceError::Timeout(FILE_READ_TIMEOUT)),
            Ok(Ok(text)) => SecretValue::new(text).map_err(|error| {
                SecretSourceError::Failed(format!("secret file {secret_ref} is unusable: {error}"))
            }),
            // A missing file is an unknown name, but a missing directory is the operator's fault, not the
            // client's: the source is broken.
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => match self.ping().await {
                Ok(()) => Err(SecretSourceError::NotFound),
                Err(broken) => Err(broken),
            },
            Ok(Err(error)) => Err(SecretSourceError::Failed(format!(
                "cannot read secret file {secret_ref}: {}",
                error.kind()
            ))),
        }
    }

    fn location(&self, secret_ref: &SecretRef) -> Option<String> {
        Some(format!("the file {}", self.directory.join(secret_ref.as_str()).display()))
    }

    async fn ping(&self) -> Result<(), SecretSourceError> {
        match tokio::fs::metadata(&self.directory).await {
            Ok(metadata) if metadata.is_dir() => Ok(()),
            Ok(_) => {
                Err(SecretSourceError::Failed(format!("{} is not a directory", self.directory.display())))
            }
            Err(error) => Err(SecretSourceError::Failed(format!(
                "cannot read {}: {}",
                self.directory.display(),
                error.kind()
            ))),
        }
    }
}

/// Real keys from one TOML file of `name = "key"` lines (a `[secrets]` table, or top-level keys):
/// what an operator keeps for a bridge. Read again at each fetch, so an edited file is picked up.
#[derive(Debug, Clone)]
pub struct TomlFileSecretSource {
    path: PathBuf,
}

impl TomlFileSecretSource {
    /// A source over the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    async fn read(&self) -> Result<toml::Table, SecretSourceError> {
        let read = tokio::time::timeout(FILE_READ_TIMEOUT, tokio::fs::read_to_string(&self.path)).await;
        let text = zeroize::Zeroizing::new(
            read.map_err(|_| SecretSourceError::Timeout(FILE_READ_TIMEOUT))?.map_err(|error| {
                SecretSourceError::Failed(format!("cannot read {}: {}", self.path.display(), error.kind()))
            })?,
        );
        // The parser's message may quote the file, which holds keys: only say where it failed.
        text.parse::<toml::Table>().map_err(|error| {
            SecretSourceError::Failed(format!(
                "{} is not valid TOML (at byte {:?})",
                self.path.display(),
                error.span().map(|span| span.start)
            ))
        })
    }
}

#[async_trait]
impl SecretSource for TomlFileSecretSource {
    async fn fetch(&self, secret_ref: &SecretRef) -> Result<SecretValue, SecretSourceError> {
        let mut table = self.read().await?;
        let secrets = match table.remove("secrets") {
            Some(toml::Value::Table(secrets)) => secrets,
            _ => table,
        };
        // Names are case-insensitive: the file may spell one `OpenAI-Prod`, but not twice.
        let mut spellings =
            secrets.into_iter().filter(|(name, _)| name.eq_ignore_ascii_case(secret_ref.as_str()));
        let value = spellings.next().map(|(_, value)| value);
        if spellings.next().is_some() {
            return Err(SecretSourceError::Failed(format!(
                "secret {secret_ref} is in the TOML file more than once, spelled in different cases"
            )));
        }
        match value {
            Some(toml::Value::String(text)) => SecretValue::new(text).map_err(|error| {
                SecretSourceError::Failed(format!(
                    "secret {secret_ref} in the TOML file is unusable: {error}"
                ))
            }),
            Some(_) => Err(SecretSourceError::Failed(format!(
                "secret {secret_ref} in the TOML file is not a string"
            ))),
            None => Err(SecretSourceError::NotFound),
        }
    }

    async fn ping(&self) -> Result<(), SecretSourceError> {
        self.read().await.map(drop)
    }

    fn location(&self, secret_ref: &SecretRef) -> Option<String> {
        Some(format!("the key {secret_ref:?} of {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_sources_parse_from_their_configured_text_and_print_back() {
        for text in ["env", "file:/run/secrets", "toml:/etc/sidekey/keys.toml"] {
            let source: LocalSource = text.parse().unwrap();
            assert_eq!(source.to_string(), text);
        }
        assert_eq!("file:/d".parse::<LocalSource>(), Ok(LocalSource::File("/d".into())));
        for bad in ["", "ENV", "file:", "toml:", "vault:kv", "redis://x"] {
            assert!(bad.parse::<LocalSource>().is_err(), "{bad:?}");
        }
    }

    fn name(text: &str) -> SecretRef {
        SecretRef::parse(text).unwrap()
    }

    #[test]
    fn env_var_names_are_one_to_one_with_names() {
        assert_eq!(secret_env_var(&name("openai-prod")).as_deref(), Some("SIDEKEY_SECRET_OPENAI_PROD"));
        assert_eq!(
            secret_env_var(&name("OpenAI-PROD")).as_deref(),
            Some("SIDEKEY_SECRET_OPENAI_PROD"),
            "one name"
        );
        for ambiguous in ["openai_prod", "openai.prod", "openai:prod"] {
            assert_eq!(
                secret_env_var(&name(ambiguous)),
                None,
                "{ambiguous} would share openai-prod's variable"
            );
        }
    }

    #[tokio::test]
    async fn the_env_source_says_where_it_looked_and_refuses_names_it_cannot_tell_apart() {
        let source = EnvSecretSource;
        assert_eq!(
            source.location(&name("openai-prod")).as_deref(),
            Some("the environment variable SIDEKEY_SECRET_OPENAI_PROD")
        );
        assert_eq!(source.fetch(&name("openai_prod")).await.unwrap_err(), SecretSourceError::NotFound);
        assert!(source.location(&name("openai_prod")).unwrap().contains("letters, digits and -"));
    }

    #[tokio::test]
    async fn the_file_source_reads_trims_and_reports_missing_files() {
        let directory = std::env::temp_dir().join(format!("sidekey-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join("openai-prod"), "sk-file-123\n").unwrap();
        let source = FileSecretSource::new(&directory);
        assert_eq!(source.fetch(&name("openai-prod")).await.unwrap().expose(), "sk-file-123");
        assert_eq!(source.fetch(&name("absent")).await.unwrap_err(), SecretSourceError::NotFound);
        assert_eq!(source.fetch(&name("..")).await.unwrap_err(), SecretSourceError::NotFound);
        assert!(source.ping().await.is_ok());
        std::fs::remove_dir_all(&directory).unwrap();
        assert!(source.ping().await.is_err());
        assert!(matches!(source.fetch(&name("openai-prod")).await, Err(SecretSourceError::Failed(_))));
    }

    #[tokio::test]
    async fn the_toml_source_reads_a_secrets_table_or_top_level_keys_and_never_quotes_the_file() {
        let path =
            std::env::temp_dir().join(format!("sidekey-secrets-{}-{}.toml", std::process::id(), line!()));
        let source = TomlFileSecretSource::new(&path);
        assert!(matches!(source.ping().await, Err(SecretSourceError::Failed(_))));
        std::fs::write(&path, "[secrets]\n\"openai-prod\" = \"sk-toml-1\"\nnumber = 3\n").unwrap();
        assert_eq!(source.fetch(&name("openai-prod")).await.unwrap().expose(), "sk-toml-1");
        assert_eq!(source.fetch(&name("absent")).await.unwrap_err(), SecretSourceError::NotFound);
        assert!(matches!(source.fetch(&name("number")).await, Err(SecretSourceError::Failed(_))));
        std::fs::write(&path, "Anthropic = \"sk-top-level\"\n").unwrap();
        assert_eq!(source.fetch(&name("anthropic")).await.unwrap().expose(), "sk-top-level", "any case");
        std::fs::write(&path, "Anthropic = \"sk-one\"\nanthropic = \"sk-other\"\n").unwrap();
        let Err(SecretSourceError::Failed(cause)) = source.fetch(&name("anthropic")).await else {
            panic!("two spellings of one name must not pick one of them")
        };
        assert!(cause.contains("more than once") && !cause.contains("sk-"), "{cause}");
        std::fs::write(&path, "broken = \"sk-leaky-secret\n").unwrap();
        let Err(SecretSourceError::Failed(cause)) = source.fetch(&name("broken")).await else {
            panic!("a broken file must fail")
        };
        assert!(!cause.contains("sk-leaky"), "{cause}");
        std::fs::remove_file(&path).unwrap();
    }
}
