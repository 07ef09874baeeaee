//! `sidekey config`: the effective configuration, or every key with its default.

use serde_json::Value;

use super::Config;
use super::outside::SETTINGS;
use super::schema::{Key, Section, sections};

/// The effective configuration as TOML, secrets redacted (they serialize so) and URLs without their
/// credentials.
///
/// # Errors
/// Never in practice: the configuration is plain data.
pub fn effective(config: &Config) -> anyhow::Result<String> {
    Ok(toml::to_string_pretty(config)?)
}

/// A complete, commented TOML file of every key with its default: each key's doc comment, the variable
/// and flag that override it, and the default value (commented out when it has none).
pub fn defaults() -> String {
    let defaults = serde_json::to_value(Config::default()).expect("the configuration is plain data");
    let mut out = String::from(
        "# sidekey's configuration: every key with its default (`sidekey config --defaults`).\n\
         # Every key is optional; environment variables override the file, and flags override both.\n",
    );
    for section in sections() {
        out.push('\n');
        write_section(&mut out, section, &defaults);
    }
    out
}

fn write_section(out: &mut String, section: &Section, defaults: &Value) {
    let values = if section.name.is_empty() {
        Some(defaults)
    } else {
        section.name.split('.').try_fold(defaults, |values, part| values.get(part))
    };
    let comment = |out: &mut String, text: &str| {
        for line in wrap(text, 100) {
            out.push_str("# ");
            out.push_str(&line);
            out.push('\n');
        }
    };
    if !section.description.is_empty() {
        comment(out, &section.description);
    }
    if section.array {
        out.push_str(&format!("# One table per entry, e.g.:\n# [[{}]]\n", section.name));
    } else if !section.name.is_empty() {
        out.push_str(&format!("[{}]\n", section.name));
    }
    for key in &section.keys {
        let field = key.path.rsplit(['.', ']']).next().unwrap_or(&key.path);
        comment(out, &key.description);
        if let Some(setting) = SETTINGS.iter().find(|setting| setting.key == key.path) {
            let flag = setting.flag.map_or(String::new(), |flag| format!(", flag --{flag}"));
            out.push_str(&format!("# (environment {}{flag})\n", setting.env));
        }
        let value =
            if section.array { key.default.as_ref() } else { values.and_then(|values| values.get(field)) };
        out.push_str(&line(field, key, value, section.array));
    }
}

/// `field = default`, commented out when the key has no default (unset) or is part of an example.
fn line(field: &str, key: &Key, value: Option<&Value>, example: bool) -> String {
    let rendered = value.filter(|value| !value.is_null()).and_then(toml_value);
    match (rendered, example) {
        (Some(rendered), false) => format!("{field} = {rendered}\n"),
        (Some(rendered), true) => format!("# {field} = {rendered}\n"),
        (None, _) if key.required => format!("# {field} = …   (required)\n"),
        (None, _) => format!("# {field} =   (unset)\n"),
    }
}

/// A JSON value as a TOML value (inline).
fn toml_value(value: &Value) -> Option<String> {
    let as_toml: toml::Value = serde_json::from_value(value.clone()).ok()?;
    Some(as_toml.to_string())
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        if !current.is_empty() && current.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}
