//! [`RoutePattern`]: which proxied requests a route admits, written `"METHOD /path"`.
//!
//! Patterns are compared with a [`ProxyPath`]'s canonical text, so a pattern's path must itself be
//! canonical and unambiguous: it follows the same segment rules, and holds no `%` at all (an escape in a
//! pattern would have to be spelled exactly as the canonical form does, a trap for whoever writes it).
//! The only wildcard is a final `/*` segment, matched on segment boundaries, because a textual prefix
//! (`/v1/responses*`) would also admit `/v1/responsesX`, a different resource.

use std::fmt;

use super::path::{PathError, ProxyPath};

/// Longest route pattern, in bytes: far longer than any API path, and a bound on what a scope carries.
pub const MAX_ROUTE_LEN: usize = 1024;

/// A route pattern: a method (or `ANY`) and a path, exact or with a final `/*`.
///
/// `POST /v1/responses/*` admits `POST` to `/v1/responses`, `/v1/responses/abc` and
/// `/v1/responses/abc/cancel`, not to `/v1/responsesX`; `ANY /*` admits every request.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoutePattern {
    method: RouteMethod,
    /// The path without its `/*`; `""` for `/*`. Canonical: valid as a [`ProxyPath`] and free of `%`.
    base: Box<str>,
    /// Whether the pattern ended in `/*`: the base and everything below it.
    subtree: bool,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum RouteMethod {
    Any,
    /// An upper-case method token; HTTP methods are case-sensitive (RFC 9110 §9.1).
    Named(Box<str>),
}

/// Why a route pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Longer than [`MAX_ROUTE_LEN`].
    #[error("a route must be at most {MAX_ROUTE_LEN} characters")]
    TooLong,
    /// Not a method, one space and a path.
    #[error("a route is a method, one space and a path, e.g. \"POST /v1/chat/completions\"")]
    Format,
    /// The method holds lower-case letters.
    #[error(
        "the route method {0:?} must be written in upper case (e.g. POST): HTTP methods are case-sensitive"
    )]
    LowerCaseMethod(String),
    /// The method is neither `ANY` nor made of upper-case letters.
    #[error("the route method must be ANY or an HTTP method of upper-case letters (GET, POST, DELETE, …)")]
    InvalidMethod,
    /// The path holds a `%`.
    #[error("a route path must not contain %: write each character as it is")]
    Escape,
    /// A `*` that is not the whole last segment.
    #[error("a route path may only use * as its whole last segment (/v1/responses/*)")]
    MisplacedWildcard,
    /// The path has a trailing `/` (an empty last segment).
    #[error(
        "a route path must not end with / (write /path for the path alone, /path/* for everything below)"
    )]
    TrailingSlash,
    /// The path breaks a rule of proxied paths.
    #[error("the route path is not valid: {0}")]
    Path(PathError),
}

impl RoutePattern {
    /// Parses `"METHOD /path"`, white space around it ignored.
    ///
    /// # Errors
    /// [`RouteError`] names the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let text = text.trim();
        if text.len() > MAX_ROUTE_LEN {
            return Err(RouteError::TooLong);
        }
        let (method, path) = text.split_once(' ').ok_or(RouteError::Format)?;
        let method = parse_method(method)?;
        if !path.starts_with('/') {
            return Err(RouteError::Format);
        }
        let (base, subtree) = match path.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (path, false),
        };
        if base.contains('%') {
            return Err(RouteError::Escape);
        }
        if base.contains('*') {
            return Err(RouteError::MisplacedWildcard);
        }
        // The root alone (`ANY /`) is a path; any other trailing `/`, and `//*`, is an empty segment.
        let is_root_alone = base == "/" && !subtree;
        if base.ends_with('/') && !is_root_alone {
            return Err(RouteError::TrailingSlash);
        }
        // Without `%` nothing is rewritten, so the canonical text is the base itself.
        let base = ProxyPath::parse(base).map_err(RouteError::Path)?;
        Ok(Self { method, base: Box::from(base.as_str()), subtree })
    }

    /// Whether a request with `method` (as sent: case-sensitive) to `path` lies within this route.
    pub fn matches(&self, method: &str, path: &ProxyPath) -> bool {
        self.admits_method(method) && self.admits_path(path.as_str())
    }

    /// Whether every request `other` admits, this route admits too.
    ///
    /// Exact for single patterns, and for a list too: a request `other` admits is covered by some pattern
    /// of a list only if one pattern covers all of `other` (finitely many exact patterns cannot cover the
    /// endless paths below a `/*`, nor every method of an `ANY`), so checking each pattern alone suffices.
    pub fn covers(&self, other: &RoutePattern) -> bool {
        let methods = match (&self.method, &other.method) {
            (RouteMethod::Any, _) => true,
            (RouteMethod::Named(_), RouteMethod::Any) => false,
            (RouteMethod::Named(mine), RouteMethod::Named(theirs)) => mine == theirs,
        };
        // `other`'s base is always one of the paths it admits, and the paths below a subtree's base lie
        // below this route's base whenever the base itself does; an exact route admits one path only.
        let paths = match (self.subtree, other.subtree) {
            (true, _) => self.admits_path(&other.base),
            (false, true) => false,
            (false, false) => self.base == other.base,
        };
        methods && paths
    }

    fn admits_method(&self, method: &str) -> bool {
        match &self.method {
            RouteMethod::Any => true,
            RouteMethod::Named(named) => **named == *method,
        }
    }

    /// Segment-aligned: the base itself, or the base followed by `/` and anything.
    fn admits_path(&self, path: &str) -> bool {
        if !self.subtree {
            return path == &*self.base;
        }
        match path.strip_prefix(&*self.base) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

fn parse_method(method: &str) -> Result<RouteMethod, RouteError> {
    if method == "ANY" {
        return Ok(RouteMethod::Any);
    }
    if method.is_empty() {
        return Err(RouteError::Format);
    }
    if method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Ok(RouteMethod::Named(Box::from(method)));
    }
    if method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(RouteError::LowerCaseMethod(method.to_owned()));
    }
    Err(RouteError::InvalidMethod)
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.method {
            RouteMethod::Any => f.write_str("ANY")?,
            RouteMethod::Named(named) => f.write_str(named)?,
        }
        write!(f, " {}", self.base)?;
        if self.subtree {
            f.write_str("/*")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoutePattern({:?})", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(text: &str) -> RoutePattern {
        RoutePattern::parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
    }

    fn path(raw: &str) -> ProxyPath {
        ProxyPath::parse(raw).unwrap()
    }

    #[test]
    fn parse_accepts_methods_paths_and_wildcards_and_prints_them_canonically() {
        for text in [
            "POST /v1/chat/completions",
            "GET /v1/models",
            "DELETE /v1/files/*",
            "ANY /*",
            "ANY /",
            "PROPFIND /dav/a;b",
            "GET /models/gemini-2.0-flash:generateContent",
        ] {
            assert_eq!(route(text).to_string(), text);
        }
        assert_eq!(route("  POST /v1/responses/*\n").to_string(), "POST /v1/responses/*");
        assert_eq!(format!("{:?}", route("ANY /*")), "RoutePattern(\"ANY /*\")");
    }

    #[test]
    fn parse_refuses_a_malformed_route() {
        for text in
            ["", "POST", "/v1/models", "POST  /v1/models", "POST\t/v1/models", "POST v1/models", "POST *"]
        {
            assert_eq!(RoutePattern::parse(text), Err(RouteError::Format), "{text:?}");
        }
        assert_eq!(RoutePattern::parse(&format!("GET /{}", "a".repeat(1024))), Err(RouteError::TooLong));
    }

    #[test]
    fn parse_refuses_a_lower_case_or_foreign_method_with_a_clear_error() {
        assert_eq!(RoutePattern::parse("post /v1/x"), Err(RouteError::LowerCaseMethod("post".into())));
        assert_eq!(RoutePattern::parse("Get /v1/x"), Err(RouteError::LowerCaseMethod("Get".into())));
        assert!(RoutePattern::parse("post /v1/x").unwrap_err().to_string().contains("upper case"));
        for text in ["P0ST /v1/x", "M-SEARCH /x", "POST* /x", "ÉCRIRE /x"] {
            assert_eq!(RoutePattern::parse(text), Err(RouteError::InvalidMethod), "{text:?}");
        }
    }

    #[test]
    fn parse_refuses_paths_a_request_could_not_match_unambiguously() {
        assert_eq!(RoutePattern::parse("GET /v1/%41"), Err(RouteError::Escape));
        for text in ["GET /v1/*/x", "GET /v1*", "GET /v1/x*", "GET /*/*", "GET /v1/**"] {
            assert_eq!(RoutePattern::parse(text), Err(RouteError::MisplacedWildcard), "{text:?}");
        }
        for text in ["GET /v1/", "GET /v1//*", "GET //*"] {
            assert_eq!(RoutePattern::parse(text), Err(RouteError::TrailingSlash), "{text:?}");
        }
        assert_eq!(RoutePattern::parse("GET /a//b"), Err(RouteError::Path(PathError::EmptySegment)));
        assert_eq!(RoutePattern::parse("GET /a/../b"), Err(RouteError::Path(PathError::DotSegment)));
        assert_eq!(RoutePattern::parse("GET /a/..;x/*"), Err(RouteError::Path(PathError::DotSegment)));
        assert_eq!(
            RoutePattern::parse("GET /a\\b"),
            Err(RouteError::Path(PathError::EncodedSlashOrBackslash))
        );
        assert_eq!(RoutePattern::parse("GET /a?b"), Err(RouteError::Path(PathError::QueryOrFragment)));
        assert_eq!(RoutePattern::parse("GET /a b"), Err(RouteError::Path(PathError::InvalidCharacter)));
    }

    #[test]
    fn an_exact_route_admits_its_method_and_path_only() {
        let chat = route("POST /v1/chat/completions");
        assert!(chat.matches("POST", &path("/v1/chat/completions")));
        assert!(!chat.matches("post", &path("/v1/chat/completions")));
        assert!(!chat.matches("GET", &path("/v1/chat/completions")));
        assert!(!chat.matches("POST", &path("/v1/chat/completions/")));
        assert!(!chat.matches("POST", &path("/v1/chat/completions/x")));
        assert!(!chat.matches("POST", &path("/v1/chat")));
        // Spellings that canonicalise to the route's path match it.
        assert!(chat.matches("POST", &path("/v1/chat/%63ompletions")));
    }

    #[test]
    fn a_wildcard_route_admits_its_base_and_what_lies_below_it_segment_aligned() {
        let responses = route("POST /v1/responses/*");
        for below in ["/v1/responses", "/v1/responses/", "/v1/responses/abc", "/v1/responses/abc/cancel"] {
            assert!(responses.matches("POST", &path(below)), "{below}");
        }
        for outside in ["/v1/responsesX", "/v1/response", "/v1", "", "/", "/v2/responses/abc"] {
            assert!(!responses.matches("POST", &path(outside)), "{outside}");
        }
        let everything = route("ANY /*");
        for anywhere in ["", "/", "/a", "/a/b/c/"] {
            assert!(everything.matches("PATCH", &path(anywhere)), "{anywhere}");
        }
        assert!(!route("ANY /").matches("GET", &path("")));
    }

    #[test]
    fn covers_compares_methods_and_paths() {
        let cases = [
            ("ANY /*", "POST /v1/chat/completions", true),
            ("ANY /*", "ANY /*", true),
            ("POST /*", "ANY /v1/x", false),
            ("POST /v1/*", "POST /v1", true),
            ("POST /v1/*", "POST /v1/a/*", true),
            ("POST /v1/*", "POST /v1/*", true),
            ("POST /v1/*", "POST /v2/a", false),
            ("POST /v1/*", "POST /v1x/a", false),
            ("POST /v1/*", "GET /v1/a", false),
            ("POST /v1/a", "POST /v1/a", true),
            ("POST /v1/a", "POST /v1/a/*", false),
            ("POST /v1/a", "POST /v1/b", false),
            ("ANY /v1/a", "DELETE /v1/a", true),
            ("POST /v1/a/*", "POST /v1/*", false),
        ];
        for (wide, narrow, expected) in cases {
            assert_eq!(route(wide).covers(&route(narrow)), expected, "{wide} covers {narrow}");
        }
    }

    fn route_text() -> impl Strategy<Value = String> {
        let method = prop_oneof![Just("ANY"), Just("GET"), Just("POST")];
        let segments = proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("ab")], 0..4);
        (method, segments, any::<bool>()).prop_map(|(method, segments, subtree)| {
            let base: String = segments.iter().map(|s| format!("/{s}")).collect();
            match (base.is_empty(), subtree) {
                (_, true) => format!("{method} {base}/*"),
                (true, false) => format!("{method} /"),
                (false, false) => format!("{method} {base}"),
            }
        })
    }

    fn request() -> impl Strategy<Value = (String, ProxyPath)> {
        let method = prop_oneof![Just("GET".to_owned()), Just("POST".to_owned()), Just("PUT".to_owned())];
        let segments = proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("ab")], 0..5);
        (method, segments, any::<bool>()).prop_map(|(method, segments, trailing)| {
            let mut raw: String = segments.iter().map(|s| format!("/{s}")).collect();
            if trailing {
                raw.push('/');
            }
            (method, ProxyPath::parse(&raw).unwrap())
        })
    }

    proptest! {
        #[test]
        fn a_covering_route_admits_every_request_the_covered_one_admits(
            wide in route_text(), narrow in route_text(), (method, path) in request(),
        ) {
            let (wide, narrow) = (route(&wide), route(&narrow));
            if wide.covers(&narrow) && narrow.matches(&method, &path) {
                let admitted = wide.matches(&method, &path);
                prop_assert!(admitted, "{} covers {} but not {} {}", wide, narrow, method, path);
            }
        }

        #[test]
        fn a_route_covers_itself_and_reparses_from_its_display(text in route_text()) {
            let parsed = route(&text);
            prop_assert!(parsed.covers(&parsed));
            prop_assert_eq!(route(&parsed.to_string()), parsed);
        }

        #[test]
        fn parse_never_panics(text in "(?s).{0,40}") {
            if let Ok(parsed) = RoutePattern::parse(&text) {
                prop_assert_eq!(RoutePattern::parse(&parsed.to_string()), Ok(parsed));
            }
        }
    }
}
