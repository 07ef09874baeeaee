use std::path::PathBuf;

use super::*;

fn write(content: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("sidekey-config-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

fn from_file(content: &str) -> anyhow::Result<Config> {
    load(Some(&write(content)), [], [])
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
}

#[test]
fn no_file_gives_the_contract_defaults() {
    let config = load(None, [], []).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen, "127.0.0.1:8080");
    assert_eq!(config.session.default_ttl_seconds, 3600);
    assert_eq!(config.store.url, StoreUrl::Memory);
    assert_eq!(config.secrets.source, SecretsSource::Local(LocalSource::Env));
    #[cfg(feature = "redis")]
    assert_eq!(config.secrets.bus.timeout_ms, 5000);
}

#[test]
fn an_empty_file_is_valid_and_the_contract_example_parses() {
    assert_eq!(from_file("").unwrap(), Config::default());
    let example = r#"
listen = "127.0.0.1:9000"
[session]
default_ttl_seconds = 600
min_ttl_seconds = 1
max_ttl_seconds = 7200
max_lifetime_seconds = 86400
[store]
url = "memory"
prefix = "sidekey"
[secrets]
source = "env"
timeout_ms = 5000
[bridge]
source = "env"
secret = "bridge-secret"
[admin]
token = "admin-secret"
[auth]
mode = "none"
jwks_url = "http://127.0.0.1:3000/api/auth/jwks"
hs256_secret = "hs"
issuer = "http://127.0.0.1:3000"
audience = "http://127.0.0.1:3000"
leeway_seconds = 30
better_auth_secret = "ba"
[directory]
url = "postgres://postgres@127.0.0.1:5432/app"
[[upstreams]]
name = "openai"
base_url = "https://api.openai.com"
allowed_secret_key_ids = ["openai-*"]
credential_header = "authorization"
credential_scheme = "Bearer"
[cors]
allowed_origins = ["http://localhost:3000"]
"#;
    let config = from_file(example).unwrap();
    assert_eq!(config.listen, "127.0.0.1:9000");
    assert_eq!(config.session.default_ttl_seconds, 600);
    assert_eq!(config.admin.token.as_ref().unwrap().expose(), "admin-secret");
    assert_eq!(config.upstreams[0].allowed_secret_key_ids, ["openai-*"]);
    assert_eq!(config.upstreams[0].response_timeout_ms, 300_000);
    assert_eq!(config.cors.allowed_origins, ["http://localhost:3000"]);
    let printed = format!("{config:?}");
    for secret in ["admin-secret", "bridge-secret", "\"hs\"", "\"ba\""] {
        assert!(!printed.contains(secret), "Debug shows {secret}: {printed}");
    }
}

#[test]
fn the_environment_beats_the_file_and_flags_beat_both() {
    let file =
        write("listen = \"127.0.0.1:9001\"\n[session]\ndefault_ttl_seconds = 900\nmax_ttl_seconds = 1000\n");
    let environment = env(&[
        ("SIDEKEY_DEFAULT_TTL", "120"),
        ("SIDEKEY_STORE_PREFIX", "from-env"),
        ("SIDEKEY_ADMIN_TOKEN", "0123456789"),
        ("SIDEKEY_LISTEN", ""),
    ]);
    let config = load(Some(&file), environment.clone(), [("store.prefix", "from-flag".to_owned())]).unwrap();
    assert_eq!(config.listen, "127.0.0.1:9001", "an empty variable counts as unset");
    assert_eq!(config.session.default_ttl_seconds, 120);
    assert_eq!(config.session.max_ttl_seconds, 1000);
    assert_eq!(config.store.prefix, "from-flag");
    assert_eq!(config.admin.token.unwrap().expose(), "0123456789", "a secret of digits stays text");
}

#[test]
fn unknown_keys_wrong_types_and_missing_files_are_refused_naming_the_key_and_the_file() {
    let file = write("[session]\ndefault_ttl = 5\n");
    let refused = format!("{:#}", load(Some(&file), [], []).unwrap_err());
    assert!(refused.contains("unknown key session.default_ttl in "), "{refused}");
    assert!(!refused.contains('`'), "no backticks: {refused}");
    assert!(refused.contains("did you mean session.default_ttl_seconds?"), "{refused}");
    assert!(refused.contains(&file.display().to_string()), "{refused}");

    let refused = format!("{:#}", from_file("listne = \"x\"\n").unwrap_err());
    assert!(refused.contains("listne") && refused.contains("did you mean listen?"), "{refused}");

    let refused = format!("{:#}", from_file("[session]\ndefault_ttl_seconds = \"long\"\n").unwrap_err());
    assert!(refused.contains("key session.default_ttl_seconds"), "{refused}");
    assert!(!refused.contains("default."), "no figment profile in the key: {refused}");
    assert!(!refused.contains('`'), "no backticks: {refused}");

    let refused = format!("{:#}", from_file("[[upstreams]]\nname = \"a\"\ntimeout = 1\n").unwrap_err());
    assert!(refused.contains("unknown key upstreams[].timeout"), "{refused}");

    assert!(load(Some(&PathBuf::from("/nonexistent/sidekey.toml")), [], []).is_err());
}

#[test]
fn choices_are_parsed_at_load_and_a_bad_one_is_refused_without_quoting_a_url() {
    let config =
        from_file("[store]\nurl = \"redis://:pw@127.0.0.1:6379\"\n[secrets]\nsource = \"file:/run/keys\"\n")
            .unwrap();
    assert!(
        matches!(&config.store.url, StoreUrl::Redis(url) if url.expose() == "redis://:pw@127.0.0.1:6379")
    );
    assert_eq!(config.secrets.source, SecretsSource::Local(LocalSource::File("/run/keys".into())));
    let refused = format!("{:#}", from_file("[store]\nurl = \"postgres://:hunter2@h/db\"\n").unwrap_err());
    assert!(refused.contains("store.url") && !refused.contains("hunter2"), "{refused}");
    assert!(from_file("[secrets]\nsource = \"vault:kv\"\n").is_err());
    assert!(from_file("[auth]\nmode = \"oauth\"\n").is_err());
}

#[test]
fn an_upstream_with_every_key_is_read_into_the_adapters_settings() {
    let config = from_file(
        r#"
[[upstreams]]
name = "anthropic"
base_url = "https://api.anthropic.com"
allowed_secret_key_ids = ["anthropic-prod", "anthropic-*"]
credential_header = "x-api-key"
credential_scheme = ""
headers = { "anthropic-version" = "2023-06-01" }
connect_timeout_ms = 1000
response_timeout_ms = 2000
idle_timeout_ms = 3000
max_request_body_bytes = 4096

[[upstreams]]
name = "gemini"
base_url = "https://generativelanguage.googleapis.com/v1beta"
allowed_secret_key_ids = ["gemini"]
credential_query = "key"

[cors]
allowed_origins = ["http://localhost:3000"]
max_age_seconds = 60
"#,
    )
    .unwrap();
    let anthropic = &config.upstreams[0];
    assert_eq!(anthropic.credential_header, "x-api-key");
    assert_eq!(anthropic.credential_scheme, "");
    assert_eq!(anthropic.headers["anthropic-version"], "2023-06-01");
    assert_eq!((anthropic.connect_timeout_ms, anthropic.response_timeout_ms), (1000, 2000));
    assert_eq!((anthropic.idle_timeout_ms, anthropic.max_request_body_bytes), (3000, 4096));
    let gemini = &config.upstreams[1];
    assert_eq!(gemini.credential_query.as_deref(), Some("key"));
    assert_eq!(gemini.credential_header, "authorization");
    assert_eq!(gemini.credential_scheme, "Bearer");
    assert_eq!(gemini.response_timeout_ms, 300_000);
    assert_eq!(config.cors.max_age_seconds, 60);
    assert!(from_file("[[upstreams]]\nbase_url = \"http://x\"\n").is_err(), "an upstream needs a name");
}

#[test]
fn contradictory_session_bounds_are_refused() {
    let mut config = Config::default();
    config.session.default_ttl_seconds = 100_000;
    assert!(config.session_policy().is_err());
    assert!(Config::default().session_policy().is_ok());
}

#[test]
fn host_names_are_accepted_where_addresses_are() {
    let config = Config { listen: "localhost:8092".to_owned(), ..Config::default() };
    assert_eq!(config.listen_addr().unwrap().port(), 8092);
    assert!(Config { listen: "localhost".to_owned(), ..Config::default() }.listen_addr().is_err());
}

#[test]
fn the_defaults_file_names_every_key_and_loads_back_as_the_defaults() {
    let defaults = print::defaults();
    for key in schema::keys() {
        let field = key.path.rsplit(['.', ']']).next().unwrap();
        assert!(defaults.contains(&format!("{field} =")), "{} is missing:\n{defaults}", key.path);
    }
    assert!(defaults.contains("# (environment SIDEKEY_STORE, flag --store)"), "{defaults}");
    assert_eq!(from_file(&defaults).unwrap(), Config::default(), "the printed defaults are the defaults");
}

#[test]
fn the_effective_configuration_prints_without_secrets_or_url_passwords() {
    let mut config = Config::default();
    config.admin.token = Some(Secret::new("admin-token-never-printed"));
    config.store.url = "redis://:redis-password@10.0.0.1:6379".parse().unwrap();
    let printed = print::effective(&config).unwrap();
    assert!(
        !printed.contains("admin-token-never-printed") && !printed.contains("redis-password"),
        "{printed}"
    );
    assert!(printed.contains("redis://***@10.0.0.1:6379"), "{printed}");
}

#[test]
fn unknown_sidekey_variables_are_named_with_the_closest_known_one() {
    let warnings = outside::environment_warnings(env(&[
        ("SIDEKEY_LISTN", "x"),
        ("SIDEKEY_SECRETS_OPENAI_PROD", "x"),
        ("SIDEKEY_SECRET_OPENAI_PROD", "sk-never-named"),
        ("SIDEKEY_LISTEN", "x"),
        ("HOME", "/root"),
    ]));
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[0].contains("SIDEKEY_LISTN") && warnings[0].contains("SIDEKEY_LISTEN"), "{warnings:#?}");
    assert!(
        warnings[1].contains("SIDEKEY_SECRETS_OPENAI_PROD")
            && warnings[1].contains("did you mean SIDEKEY_SECRET_OPENAI_PROD?"),
        "{warnings:#?}"
    );
    assert!(warnings.iter().all(|warning| !warning.contains("sk-never-named")), "{warnings:#?}");
}

#[test]
fn every_outside_setting_names_a_key_of_the_configuration() {
    for setting in outside::SETTINGS {
        assert!(schema::is_known(setting.key), "{} sets the unknown key {}", setting.env, setting.key);
    }
}

/// The README's configuration table and the configuration agree both ways: every key the README lists
/// exists, and the README lists every key.
#[test]
fn the_readme_names_exactly_the_configurations_keys() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = readme.split("| file key |").nth(1).expect("the README has a configuration table");
    let listed: std::collections::BTreeSet<String> = table
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| {
            cell.split(',').map(|key| key.trim().trim_matches('`').to_owned()).collect::<Vec<_>>()
        })
        .filter(|key| {
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '[' | ']'))
        })
        .collect();
    let known: std::collections::BTreeSet<String> = schema::keys().map(|key| key.path.clone()).collect();
    let unknown: Vec<_> = listed.difference(&known).collect();
    let missing: Vec<_> = known.difference(&listed).collect();
    assert!(unknown.is_empty(), "the README lists keys the configuration does not have: {unknown:?}");
    assert!(missing.is_empty(), "the README does not list these keys: {missing:?}");
}

/// `examples/sidekey.toml`, the commented configuration shipped with the project.
fn example() -> (PathBuf, String) {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sidekey.toml"));
    let text = std::fs::read_to_string(&path).expect("examples/sidekey.toml exists");
    (path, text)
}

/// The keys `text` sets or shows commented out (`# key = …`), as dotted paths of the schema.
fn keys_shown(text: &str) -> std::collections::BTreeSet<String> {
    let mut section = String::new();
    let mut shown = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("[[").and_then(|rest| rest.strip_suffix("]]")) {
            section = format!("{name}[].");
        } else if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            section = format!("{name}.");
        } else {
            let candidate = line.strip_prefix("# ").unwrap_or(line);
            let Some((name, _)) = candidate.split_once(" = ") else { continue };
            if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                shown.insert(format!("{section}{name}"));
            }
        }
    }
    shown
}

#[test]
fn the_example_configuration_loads() {
    let (path, _) = example();
    let config = load(Some(&path), [], []).unwrap_or_else(|error| panic!("{error:#}"));
    config.session_policy().unwrap();
    config.limits.policy().unwrap();
    assert_eq!(config.upstreams.len(), 2, "the example's upstreams are read");
}

#[test]
fn the_example_configuration_shows_every_key_and_no_other() {
    let (_, text) = example();
    let shown = keys_shown(&text);
    let known: std::collections::BTreeSet<String> = schema::keys().map(|key| key.path.clone()).collect();
    let missing: Vec<_> = known.difference(&shown).collect();
    let unknown: Vec<_> = shown.difference(&known).collect();
    assert!(missing.is_empty(), "examples/sidekey.toml lacks {missing:?}");
    assert!(
        unknown.is_empty(),
        "examples/sidekey.toml shows keys the configuration does not have: {unknown:?}"
    );
}

#[test]
fn the_example_configuration_sets_each_key_it_sets_to_its_default() {
    let (_, text) = example();
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    let parsed = serde_json::to_value(parsed).unwrap();
    // The first upstream shows each default; the rest of the file sets nothing but defaults.
    let examples = ["upstreams[].name", "upstreams[].base_url", "upstreams[].allowed_secret_key_ids"];
    for key in schema::keys().filter(|key| !examples.contains(&key.path.as_str())) {
        // A default of null is "unset": the example may show a value.
        let Some(default) = key.default.as_ref().filter(|default| !default.is_null()) else { continue };
        let mut value = &parsed;
        for part in key.path.split('.') {
            value = match part.strip_suffix("[]") {
                Some(array) => &value[array][0],
                None => &value[part],
            };
        }
        if !value.is_null() {
            assert_eq!(value, default, "{} in examples/sidekey.toml is not its default", key.path);
        }
    }
}
