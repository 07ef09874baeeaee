//! The configuration's keys, read from the JSON Schema of [`Config`] that schemars derives from the
//! settings types: their doc comments, serde attributes and defaults. One source for the unknown-key
//! check, the flags' help, `sidekey config --defaults` and the README test.

use std::path::Path;
use std::sync::OnceLock;

use figment::value::{Dict, Value as FigmentValue};
use figment::{Figment, Provider};
use serde_json::{Map, Value};
use sidekey_settings::SECRET_MARK;

use super::Config;

/// One key of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The dotted path (`store.url`; `upstreams[].name` for a field of an array of tables).
    pub path: String,
    /// The doc comment of its field.
    pub description: String,
    /// What it reads.
    pub kind: Kind,
    /// Whether it holds a secret (printed redacted).
    pub secret: bool,
    /// Whether it must be given (a field of `[[upstreams]]` without a default).
    pub required: bool,
    /// Its default, when the schema states one.
    pub default: Option<Value>,
}

/// What a key reads, as far as the environment and flags care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// Anything else (text, a list, a table).
    Other,
}

/// A section of the configuration: a table (`[store]`), or an array of tables (`[[upstreams]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// The table's name (empty for the top level).
    pub name: String,
    /// Whether it is an array of tables.
    pub array: bool,
    /// The section's doc comment.
    pub description: String,
    /// Its keys, in the schema's order.
    pub keys: Vec<Key>,
}

/// The sections of the configuration, the top level first.
pub fn sections() -> &'static [Section] {
    static SECTIONS: OnceLock<Vec<Section>> = OnceLock::new();
    SECTIONS.get_or_init(|| {
        let schema = serde_json::to_value(schemars::schema_for!(Config)).expect("a schema is JSON");
        let defs = schema.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
        let resolver = Resolver { defs };
        let mut top =
            Section { name: String::new(), array: false, description: String::new(), keys: Vec::new() };
        let mut sections = Vec::new();
        for (name, property) in resolver.properties(&schema) {
            let property = resolver.resolve(&property);
            let description = text(&property, "description");
            if let Some(items) = property.get("items").map(|items| resolver.resolve(items))
                && resolver.is_table(&items)
            {
                resolver.sections(&name, true, description, &items, &mut sections);
            } else if resolver.is_table(&property) {
                resolver.sections(&name, false, description, &property, &mut sections);
            } else {
                top.keys.push(resolver.key(name, &property, false));
            }
        }
        sections.insert(0, top);
        sections
    })
}

/// Every key, as dotted paths.
pub fn keys() -> impl Iterator<Item = &'static Key> {
    sections().iter().flat_map(|section| section.keys.iter())
}

/// The key at `path`, if this build has it.
pub fn find(path: &str) -> Option<&'static Key> {
    keys().find(|key| key.path == path)
}

/// Whether this build has the key `path`.
pub fn is_known(path: &str) -> bool {
    find(path).is_some()
}

/// What `path` reads.
pub fn kind(path: &str) -> Kind {
    find(path).map_or(Kind::Other, |key| key.kind)
}

/// The doc comment of `path`.
pub fn description(path: &str) -> &'static str {
    find(path).map_or("", |key| key.description.as_str())
}

/// Follows `$ref`s into the schema's definitions and merges `allOf` parts (schemars writes flattened
/// fields that way), and takes the non-null branch of an `Option`.
struct Resolver {
    defs: Map<String, Value>,
}

impl Resolver {
    fn resolve(&self, schema: &Value) -> Value {
        let mut schema = schema.clone();
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap_or_default();
            let mut target = self.resolve(self.defs.get(name).unwrap_or(&Value::Null));
            // Keywords beside the reference (the field's own description) win over the definition's.
            if let (Some(target), Some(own)) = (target.as_object_mut(), schema.as_object()) {
                for (keyword, value) in own.iter().filter(|(keyword, _)| *keyword != "$ref") {
                    target.insert(keyword.clone(), value.clone());
                }
            }
            schema = target;
        }
        for combinator in ["anyOf", "oneOf"] {
            let Some(branches) = schema.get(combinator).and_then(Value::as_array).cloned() else { continue };
            let concrete: Vec<_> =
                branches.iter().filter(|branch| branch.get("type") != Some(&"null".into())).collect();
            if let [only] = concrete.as_slice() {
                let mut merged = self.resolve(only);
                if let (Some(merged), Some(own)) = (merged.as_object_mut(), schema.as_object()) {
                    for (keyword, value) in own.iter().filter(|(keyword, _)| *keyword != combinator) {
                        merged.insert(keyword.clone(), value.clone());
                    }
                }
                schema = merged;
            }
        }
        schema
    }

    /// The properties of an object schema, its `allOf` parts' included, in order.
    fn properties(&self, schema: &Value) -> Vec<(String, Value)> {
        let mut properties: Vec<(String, Value)> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| properties.iter().map(|(name, value)| (name.clone(), value.clone())).collect())
            .unwrap_or_default();
        for part in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            properties.extend(self.properties(&self.resolve(part)));
        }
        properties
    }

    /// Whether a schema is a table of named keys (not a map of free keys such as `headers`).
    fn is_table(&self, schema: &Value) -> bool {
        !self.properties(schema).is_empty()
    }

    /// The section `name` and, after it, the tables nested in it (`[limits.default]`).
    fn sections(&self, name: &str, array: bool, description: String, schema: &Value, out: &mut Vec<Section>) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let prefix = if array { format!("{name}[].") } else { format!("{name}.") };
        let mut keys = Vec::new();
        let mut nested = Vec::new();
        for (key, property) in self.properties(schema) {
            let property = self.resolve(&property);
            if !array && self.is_table(&property) {
                nested.push((format!("{name}.{key}"), text(&property, "description"), property));
            } else {
                let required = array && required.contains(&key.as_str());
                keys.push(self.key(format!("{prefix}{key}"), &property, required));
            }
        }
        out.push(Section { name: name.to_owned(), array, description, keys });
        for (name, description, property) in nested {
            self.sections(&name, false, description, &property, out);
        }
    }

    fn key(&self, path: String, schema: &Value, required: bool) -> Key {
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(kind)) => vec![kind.as_str()],
            Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let kind = if types.contains(&"integer") {
            Kind::Integer
        } else if types.contains(&"boolean") {
            Kind::Boolean
        } else {
            Kind::Other
        };
        Key {
            path,
            description: text(schema, "description"),
            kind,
            secret: schema.get(SECRET_MARK) == Some(&Value::Bool(true)),
            required,
            default: schema.get("default").cloned(),
        }
    }
}

fn text(schema: &Value, keyword: &str) -> String {
    schema.get(keyword).and_then(Value::as_str).unwrap_or_default().replace('\n', " ")
}

/// Refuses any key the configuration does not have, naming it, where it came from, and the closest
/// known key.
///
/// # Errors
/// The first unknown key.
pub fn refuse_unknown_keys(figment: &Figment, file: Option<&Path>) -> anyhow::Result<()> {
    let data = figment.data().map_err(|error| explain(error, file))?;
    let Some(root) = data.values().next() else { return Ok(()) };
    let mut unknown = Vec::new();
    walk(root, "", &mut unknown);
    let Some(path) = unknown.into_iter().next() else { return Ok(()) };
    let origin = match file {
        Some(file) => format!(" in {}", as_given(file)),
        None => String::new(),
    };
    let hint = match closest(&path, keys().map(|key| key.path.as_str())) {
        Some(close) => format!(" (did you mean {close}?)"),
        None => String::new(),
    };
    // No backticks: the key is a bare word, and a shell or a log viewer shows the message as it is.
    anyhow::bail!("unknown key {path}{origin}{hint}")
}

fn walk(dict: &Dict, prefix: &str, unknown: &mut Vec<String>) {
    for (name, value) in dict {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        if is_known(&path) {
            continue;
        }
        match value {
            FigmentValue::Dict(_, inner)
                if sections().iter().any(|section| section.name == path && !section.array) =>
            {
                walk(inner, &path, unknown);
            }
            FigmentValue::Array(_, items)
                if sections().iter().any(|section| section.name == path && section.array) =>
            {
                for item in items {
                    if let FigmentValue::Dict(_, inner) = item {
                        walk(inner, &format!("{path}[]"), unknown);
                    }
                }
            }
            _ => unknown.push(path),
        }
    }
}

/// The known name nearest to `wanted` by edit distance, when it is near enough to be a typo.
pub fn closest<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let wanted_lower = wanted.to_ascii_lowercase();
    known
        .map(|name| (edit_distance(&wanted_lower, &name.to_ascii_lowercase()), name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// A figment error rewritten for an operator: the key (without figment's profile), what was wrong, and
/// the file as given on the command line.
pub fn explain(error: figment::Error, file: Option<&Path>) -> anyhow::Error {
    let key: Vec<&str> =
        error.path.iter().map(String::as_str).skip_while(|part| *part == "default").collect();
    let from_file = error
        .metadata
        .as_ref()
        .is_some_and(|metadata| metadata.source.as_ref().is_some_and(|source| source.file_path().is_some()));
    let outside = super::outside::SETTINGS.iter().find(|setting| key.join(".") == setting.key);
    let origin = match (file, from_file, outside) {
        (Some(file), true, _) => format!(" in {}", as_given(file)),
        (_, false, Some(setting)) if error.metadata.is_some() => match setting.flag {
            Some(flag) => format!(" (from {} or --{flag})", setting.env),
            None => format!(" (from {})", setting.env),
        },
        _ if error.metadata.is_some() => " (from the environment or a flag)".to_owned(),
        _ => String::new(),
    };
    // serde quotes names in backticks; the message quotes nothing, so none are nested.
    let what = error.kind.to_string().replace('`', "");
    if key.is_empty() {
        anyhow::anyhow!("invalid configuration{origin}: {what}")
    } else {
        anyhow::anyhow!("invalid value for key {}{origin}: {what}", key.join("."))
    }
}

/// The file as the operator named it (figment would print a path relative to the working directory).
fn as_given(file: &Path) -> String {
    file.display().to_string()
}
