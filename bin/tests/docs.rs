//! The documents agree with the code: every problem code is in `docs/errors.md`, every configuration key
//! (with its variable and default) in `docs/configuration.md`, and no link in the README or `docs/` leaves
//! the repository or points at nothing.

use std::path::{Path, PathBuf};

use sidekey::config::{outside, schema};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bin/ is in the workspace").to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The codes `ErrorCode::as_str` maps to, read from its source so that a new code cannot be missed.
fn problem_codes() -> Vec<String> {
    let source = read("adapters/http/src/problem.rs");
    let body = source
        .split("pub fn as_str(self) -> &'static str {")
        .nth(1)
        .and_then(|rest| rest.split("\n    }\n").next())
        .expect("problem.rs has ErrorCode::as_str");
    body.lines()
        .filter_map(|line| line.split("=> \"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_problem_code_is_in_the_errors_page() {
    let codes = problem_codes();
    assert!(codes.len() >= 20, "the codes were not found in problem.rs: {codes:?}");
    let page = read("docs/errors.md");
    let missing: Vec<_> = codes.iter().filter(|code| !page.contains(&format!("| `{code}` |"))).collect();
    assert!(missing.is_empty(), "docs/errors.md has no row for {missing:?}");
}

#[test]
fn every_configuration_key_is_in_the_configuration_page_with_its_variable_and_default() {
    let page = read("docs/configuration.md");
    for key in schema::keys() {
        let row = page
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", key.path)))
            .unwrap_or_else(|| panic!("docs/configuration.md has no row for {}", key.path));
        if let Some(default) = key.default.as_ref().filter(|default| !default.is_null()) {
            let shown = format!("`{default}`").replace('|', "\\|");
            assert!(row.contains(&shown), "{}: the default {shown} is not in {row}", key.path);
        }
        for setting in outside::available().filter(|setting| setting.key == key.path) {
            assert!(
                row.contains(&format!("`{}`", setting.env)),
                "{}: {} missing in {row}",
                key.path,
                setting.env
            );
            if let Some(flag) = setting.flag {
                assert!(row.contains(&format!("`--{flag}`")), "{}: --{flag} missing in {row}", key.path);
            }
        }
    }
}

/// The links of a Markdown text: the targets of `[text](target)`.
fn links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn no_link_in_the_readme_or_docs_leaves_the_repository_or_points_at_nothing() {
    let root = root().canonicalize().unwrap();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let name = page.strip_prefix(&root).unwrap().display().to_string();
        if text.contains("/work/") || text.contains("shared/CONTRACT") {
            broken.push(format!("{name} names a path outside the repository"));
        }
        for target in links(&text) {
            let path = target.split('#').next().unwrap_or_default();
            if target.starts_with("https://") || target.starts_with("http://") || path.is_empty() {
                continue;
            }
            let resolved = page.parent().unwrap().join(path);
            match resolved.canonicalize() {
                Ok(resolved) if resolved.starts_with(&root) => {}
                Ok(_) => broken.push(format!("{name}: {target} leaves the repository")),
                Err(_) => broken.push(format!("{name}: {target} does not exist")),
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}
