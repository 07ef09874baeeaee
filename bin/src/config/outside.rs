//! The settings that may come from outside the file: `SIDEKEY_*` environment variables and flags.
//!
//! [`SETTINGS`] is the one table of them: which key each variable and flag sets, and which subcommands
//! take the flag. The flags are built from it ([`flags`]), the help lists the variables from it
//! ([`environment_help`]), and [`from_environment`] reads the variables through it. A secret has a
//! variable and never a flag: a flag would show it to every user of `ps`.

use std::collections::BTreeMap;

use clap::{Arg, ArgMatches, Command};

/// One key that an environment variable or a flag may set.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The configuration key it sets (`store.url`).
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The flag (without `--`), when there is one.
    pub flag: Option<&'static str>,
    /// The subcommands whose flags include it.
    pub used_by: &'static [Subcommand],
}

/// The subcommands that read a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    /// `sidekey serve`.
    Serve,
    /// `sidekey bridge`.
    Bridge,
    /// `sidekey announce`.
    Announce,
}

use Subcommand::{Announce, Bridge, Serve};

const ALL: &[Subcommand] = &[Serve, Bridge, Announce];
const SERVE: &[Subcommand] = &[Serve];
const BUS: &[Subcommand] = &[Serve, Bridge, Announce];

/// The settings that come from outside the file. A key missing from this build (its feature off) is
/// skipped when read, with a warning if its variable is set.
pub const SETTINGS: &[Setting] = &[
    Setting { key: "listen", env: "SIDEKEY_LISTEN", flag: Some("listen"), used_by: SERVE },
    Setting {
        key: "session.default_ttl_seconds",
        env: "SIDEKEY_DEFAULT_TTL",
        flag: Some("default-ttl"),
        used_by: SERVE,
    },
    Setting { key: "session.min_ttl_seconds", env: "SIDEKEY_MIN_TTL", flag: Some("min-ttl"), used_by: SERVE },
    Setting { key: "session.max_ttl_seconds", env: "SIDEKEY_MAX_TTL", flag: Some("max-ttl"), used_by: SERVE },
    Setting {
        key: "session.max_lifetime_seconds",
        env: "SIDEKEY_MAX_LIFETIME",
        flag: Some("max-lifetime"),
        used_by: SERVE,
    },
    Setting { key: "store.url", env: "SIDEKEY_STORE", flag: Some("store"), used_by: SERVE },
    Setting { key: "store.prefix", env: "SIDEKEY_STORE_PREFIX", flag: Some("store-prefix"), used_by: SERVE },
    Setting { key: "secrets.source", env: "SIDEKEY_SECRETS", flag: Some("secrets"), used_by: BUS },
    Setting {
        key: "secrets.timeout_ms",
        env: "SIDEKEY_SECRETS_TIMEOUT_MS",
        flag: Some("secrets-timeout-ms"),
        used_by: SERVE,
    },
    Setting {
        key: "bridge.source",
        env: "SIDEKEY_BRIDGE_SOURCE",
        flag: Some("bridge-source"),
        used_by: &[Bridge],
    },
    Setting { key: "bridge.secret", env: "SIDEKEY_BRIDGE_SECRET", flag: None, used_by: BUS },
    Setting { key: "admin.token", env: "SIDEKEY_ADMIN_TOKEN", flag: None, used_by: SERVE },
    Setting { key: "admin.listen", env: "SIDEKEY_ADMIN_LISTEN", flag: Some("admin-listen"), used_by: SERVE },
    Setting { key: "auth.mode", env: "SIDEKEY_AUTH_MODE", flag: Some("auth-mode"), used_by: SERVE },
    Setting { key: "auth.jwks_url", env: "SIDEKEY_AUTH_JWKS_URL", flag: Some("jwks-url"), used_by: SERVE },
    Setting { key: "auth.hs256_secret", env: "SIDEKEY_AUTH_HS256_SECRET", flag: None, used_by: SERVE },
    Setting { key: "auth.better_auth_secret", env: "SIDEKEY_BETTER_AUTH_SECRET", flag: None, used_by: SERVE },
    Setting { key: "directory.url", env: "SIDEKEY_DIRECTORY_URL", flag: Some("directory"), used_by: SERVE },
    Setting { key: "log.format", env: "SIDEKEY_LOG_FORMAT", flag: Some("log-format"), used_by: ALL },
    Setting { key: "log.filter", env: "SIDEKEY_LOG", flag: Some("log"), used_by: ALL },
];

/// The variable naming the configuration file (read by clap for `--config`).
pub const CONFIG_VARIABLE: &str = "SIDEKEY_CONFIG";
/// The prefix of the variables that hold real keys for the `env` secret source (not settings).
pub const SECRET_VARIABLE_PREFIX: &str = "SIDEKEY_SECRET_";

/// The settings of this build: those whose key the configuration knows.
pub fn available() -> impl Iterator<Item = &'static Setting> {
    SETTINGS.iter().filter(|setting| super::schema::is_known(setting.key))
}

/// A value from the environment or a flag for `key`, typed as the configuration declares the key: a
/// number or a boolean when the key is one (and the text reads as one), else the text as it is, so a
/// secret of digits stays a string.
pub fn value_of(key: &str, text: &str) -> figment::value::Value {
    let as_text = || figment::value::Value::from(text.to_owned());
    match super::schema::kind(key) {
        super::schema::Kind::Integer => {
            text.parse::<u64>().map_or_else(|_| as_text(), figment::value::Value::from)
        }
        super::schema::Kind::Boolean => {
            text.parse::<bool>().map_or_else(|_| as_text(), figment::value::Value::from)
        }
        super::schema::Kind::Other => as_text(),
    }
}

/// The (key, value) pairs the environment sets: each known variable that is set and not empty (an empty
/// variable counts as unset, as shells leave them).
pub fn from_environment(
    environment: impl IntoIterator<Item = (String, String)>,
) -> Vec<(&'static str, figment::value::Value)> {
    let environment: BTreeMap<String, String> = environment.into_iter().collect();
    available()
        .filter_map(|setting| {
            let value = environment.get(setting.env).filter(|value| !value.is_empty())?;
            Some((setting.key, value_of(setting.key, value)))
        })
        .collect()
}

/// What is wrong with the `SIDEKEY_*` variables of `environment`: each one sidekey does not read (with
/// the closest variable it does read, when one is close), and each one this build cannot honour.
pub fn environment_warnings(environment: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, _) in environment {
        if !name.starts_with("SIDEKEY_")
            || name.starts_with(SECRET_VARIABLE_PREFIX)
            || name == CONFIG_VARIABLE
        {
            continue;
        }
        match SETTINGS.iter().find(|setting| setting.env == name) {
            Some(setting) if !super::schema::is_known(setting.key) => warnings.push(format!(
                "{name} is set, but this build of sidekey has no {} (a cargo feature is off)",
                setting.key
            )),
            Some(_) => {}
            None => {
                let known = SETTINGS.iter().map(|setting| setting.env).chain([CONFIG_VARIABLE]);
                let hint = match super::schema::closest(&name, known)
                    .map(str::to_owned)
                    .or_else(|| secret_variable_meant(&name))
                {
                    Some(close) => format!(" (did you mean {close}?)"),
                    None => String::new(),
                };
                warnings.push(format!("{name} is not a sidekey setting and is ignored{hint}"));
            }
        }
    }
    warnings
}

/// The secret variable a mistyped `name` most likely meant: `SIDEKEY_SECRETS_OPENAI_PROD` (its first word
/// one edit from `SECRET`) is `SIDEKEY_SECRET_OPENAI_PROD`. Secret names are free, so only the word that
/// marks a secret can be matched; the rest is kept as typed.
fn secret_variable_meant(name: &str) -> Option<String> {
    let (word, rest) = name.strip_prefix("SIDEKEY_")?.split_once('_')?;
    let marker = SECRET_VARIABLE_PREFIX.trim_start_matches("SIDEKEY_").trim_end_matches('_');
    let near = super::schema::closest(word, [marker].into_iter()).is_some();
    (near && !rest.is_empty()).then(|| format!("{SECRET_VARIABLE_PREFIX}{rest}"))
}

/// `command` with the flags of `subcommand`, each described by its key's documentation.
pub fn flags(command: Command, subcommand: Subcommand) -> Command {
    let args = available().filter(|setting| setting.used_by.contains(&subcommand)).filter_map(|setting| {
        let flag = setting.flag?;
        let help =
            format!("{} [{}; env: {}]", super::schema::description(setting.key), setting.key, setting.env);
        Some(Arg::new(setting.key).long(flag).value_name(value_name(setting.key)).help(help))
    });
    command.args(args).after_help(environment_help(subcommand))
}

fn value_name(key: &'static str) -> &'static str {
    key.rsplit('.').next().unwrap_or(key)
}

/// The help's list of environment variables for `subcommand`, those without a flag (the secrets) first.
pub fn environment_help(subcommand: Subcommand) -> String {
    let mut lines = vec!["Environment (each overrides the file; flags override both):".to_owned()];
    let settings: Vec<_> = available().filter(|setting| setting.used_by.contains(&subcommand)).collect();
    for setting in settings.iter().filter(|setting| setting.flag.is_none()) {
        lines.push(format!(
            "  {:<28} {} (environment only: a flag would show it in `ps`)",
            setting.env, setting.key
        ));
    }
    for setting in settings.iter().filter(|setting| setting.flag.is_some()) {
        lines.push(format!("  {:<28} {}", setting.env, setting.key));
    }
    lines.push(format!("  {:<28} the configuration file (--config)", CONFIG_VARIABLE));
    if subcommand != Announce {
        lines.push(format!(
            "  {:<28} real keys for the `env` source: openai-prod is {}OPENAI_PROD",
            "SIDEKEY_SECRET_<ID>", SECRET_VARIABLE_PREFIX
        ));
    }
    lines.join("\n")
}

/// The (key, value) pairs the flags of `matches` set.
pub fn from_flags(matches: &ArgMatches) -> Vec<(&'static str, String)> {
    available()
        .filter(|setting| setting.flag.is_some())
        .filter_map(|setting| {
            let value = matches.try_get_one::<String>(setting.key).ok().flatten()?;
            Some((setting.key, value.clone()))
        })
        .collect()
}
