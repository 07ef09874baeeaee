//! Scoped sessions: what a session may reach (its [`Scope`]), what it may consume (its [`Limits`]), and
//! the pure rules that check a proxied request against them.
//!
//! A scope can only narrow what the configuration allows, never widen it: each field left out (`None`)
//! restricts nothing beyond the configuration, and issuance checks each field given against the
//! upstream's own lists ([`check_routes_within`], [`check_models_within`]).
//!
//! # Layout
//! - [`upstream_name`]: [`UpstreamName`], the `{upstream}` of `/v1/proxy/{upstream}/…`.
//! - [`path`]: [`ProxyPath`], the path below an upstream in the one canonical form that is both matched
//!   and forwarded, and the rules (with their reasons) that refuse the ambiguous ones.
//! - [`route`]: [`RoutePattern`], `"METHOD /path"` with an optional final `/*`.
//! - [`model`]: [`ModelPattern`], a model name or a trailing-`*` prefix.
//! - [`origin`]: [`Origin`], a browser origin compared with the `Origin` header.
//! - [`limits`]: [`Limits`] on requests and tokens, and the [`LimitsPolicy`] (default and ceiling) that
//!   resolves a session's request into them.
//! - here: [`Scope`], its size bounds, and the narrowing checks used at issuance.

pub mod limits;
pub mod model;
pub mod origin;
pub mod path;
pub mod route;
pub mod upstream_name;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::secret_ref::{SecretPattern, SecretRef};

pub use limits::{
    LimitError, LimitField, Limits, LimitsParts, LimitsPolicy, LimitsPolicyError, ZeroLimitError,
};
pub use model::{ModelPattern, ModelPatternError};
pub use origin::{Origin, OriginError};
pub use path::{PathError, ProxyPath};
pub use route::{RouteError, RoutePattern};
pub use upstream_name::{UpstreamName, UpstreamNameError};

// A scope travels with every session: it is kept in the session store and repeated, for forward-auth,
// in the `X-Sidekey-Scope-*` headers of every verified request. These bounds keep both small (a few KiB
// at worst) while staying well above what a real deployment configures.

/// Most upstreams a scope may name: more than any deployment configures.
pub const MAX_SCOPE_UPSTREAMS: usize = 16;
/// Most route patterns a scope may hold: the whole of a large API is a few dozen routes, fewer with `/*`.
pub const MAX_SCOPE_ROUTES: usize = 64;
/// Most model patterns a scope may hold: a provider's catalogue is a few dozen names, fewer with `*`.
pub const MAX_SCOPE_MODELS: usize = 64;
/// Most origins a scope may hold: one frontend has a handful (production, staging, local development).
pub const MAX_SCOPE_ORIGINS: usize = 16;

/// What a session may reach. Each field is `None` when the session does not restrict it beyond the
/// configuration; a field that is set is never empty (a scope that admits nothing is a mistake, refused
/// by [`Scope::new`]). [`Scope::default`] is unrestricted.
///
/// The fields sit behind an `Arc` (and an unrestricted scope holds nothing), because a session, scope
/// included, is cloned on every verification: cloning a scope must cost a reference count, not a copy
/// of its lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Option<Arc<ScopeParts>>);

/// The fields of a [`Scope`] before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are the scope's, documented on its accessors
pub struct ScopeParts {
    pub upstreams: Option<BTreeSet<UpstreamName>>,
    pub routes: Option<Vec<RoutePattern>>,
    pub models: Option<Vec<ModelPattern>>,
    pub origins: Option<BTreeSet<Origin>>,
}

/// A scope that cannot be built, or that would widen what the configuration allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A field is set but empty.
    #[error("{field} must not be empty: leave it out to not restrict it")]
    Empty {
        /// The field (`scope.routes`).
        field: &'static str,
    },
    /// A field holds more entries than its bound.
    #[error("{field} may hold at most {max} entries, got {count}")]
    TooMany {
        /// The field (`scope.routes`).
        field: &'static str,
        /// Its bound ([`MAX_SCOPE_ROUTES`], …).
        max: usize,
        /// How many it holds.
        count: usize,
    },
    /// An entry admits something the upstream's configuration does not.
    #[error("{field} entry {entry:?} is outside what the upstream allows")]
    Widens {
        /// The field (`scope.routes`, `scope.models`).
        field: &'static str,
        /// The offending entry, as its pattern prints.
        entry: String,
    },
}

impl Scope {
    /// Validates a scope's fields: none set but empty, none over its bound.
    ///
    /// # Errors
    /// [`ScopeError::Empty`] or [`ScopeError::TooMany`], naming the first field at fault.
    pub fn new(parts: ScopeParts) -> Result<Self, ScopeError> {
        check_size("scope.upstreams", parts.upstreams.as_ref().map(BTreeSet::len), MAX_SCOPE_UPSTREAMS)?;
        check_size("scope.routes", parts.routes.as_ref().map(Vec::len), MAX_SCOPE_ROUTES)?;
        check_size("scope.models", parts.models.as_ref().map(Vec::len), MAX_SCOPE_MODELS)?;
        check_size("scope.origins", parts.origins.as_ref().map(BTreeSet::len), MAX_SCOPE_ORIGINS)?;
        let restricts = parts.upstreams.is_some()
            || parts.routes.is_some()
            || parts.models.is_some()
            || parts.origins.is_some();
        Ok(Self(restricts.then(|| Arc::new(parts))))
    }

    /// Whether the session may use `upstream`.
    pub fn admits_upstream(&self, upstream: &UpstreamName) -> bool {
        self.upstreams().is_none_or(|upstreams| upstreams.contains(upstream))
    }

    /// Whether the session may send `method` to `path`.
    pub fn admits_route(&self, method: &str, path: &ProxyPath) -> bool {
        self.routes().is_none_or(|routes| routes.iter().any(|route| route.matches(method, path)))
    }

    /// Whether the session may ask for `model` (as the client sent it).
    pub fn admits_model(&self, model: &str) -> bool {
        self.models().is_none_or(|models| models.iter().any(|pattern| pattern.matches(model)))
    }

    /// Whether a request carrying this `Origin` header (`None`: no header) may pass. Without origins in
    /// the scope any request passes; with them, only one whose header names one of them: a request
    /// without the header is refused, since a browser always sends it on the cross-origin calls that the
    /// restriction is about, and its absence cannot be told from a script that left it out.
    pub fn admits_origin(&self, header: Option<&str>) -> bool {
        match (self.origins(), header) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(origins), Some(header)) => origins.iter().any(|origin| origin.matches_header(header)),
        }
    }

    /// Whether the scope restricts nothing.
    pub fn is_unrestricted(&self) -> bool {
        self.0.is_none()
    }

    /// The upstreams the session may use, if restricted.
    pub fn upstreams(&self) -> Option<&BTreeSet<UpstreamName>> {
        self.0.as_deref()?.upstreams.as_ref()
    }
    /// The routes the session may call, if restricted.
    pub fn routes(&self) -> Option<&[RoutePattern]> {
        self.0.as_deref()?.routes.as_deref()
    }
    /// The models the session may ask for, if restricted.
    pub fn models(&self) -> Option<&[ModelPattern]> {
        self.0.as_deref()?.models.as_deref()
    }
    /// The browser origins the session's proxied calls must come from, if restricted.
    pub fn origins(&self) -> Option<&BTreeSet<Origin>> {
        self.0.as_deref()?.origins.as_ref()
    }

    /// The scope's fields, for a store to keep.
    pub fn to_parts(&self) -> ScopeParts {
        self.0.as_deref().cloned().unwrap_or_default()
    }
}

fn check_size(field: &'static str, count: Option<usize>, max: usize) -> Result<(), ScopeError> {
    match count {
        Some(0) => Err(ScopeError::Empty { field }),
        Some(count) if count > max => Err(ScopeError::TooMany { field, max, count }),
        _ => Ok(()),
    }
}

/// What the configuration allows through one upstream: which real keys may go there, and (when set)
/// which routes and models. A session's [`Scope`] can only narrow this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPolicy {
    /// The upstream.
    pub name: UpstreamName,
    /// The `secret_key_id`s whose real key may be sent there.
    pub allowed_keys: Vec<SecretPattern>,
    /// The routes it admits; `None`: any.
    pub routes: Option<Vec<RoutePattern>>,
    /// The models it admits; `None`: any.
    pub models: Option<Vec<ModelPattern>>,
}

impl UpstreamPolicy {
    /// Whether a session for `secret_ref` may have its real key sent here.
    pub fn allows_key(&self, secret_ref: &SecretRef) -> bool {
        self.allowed_keys.iter().any(|pattern| pattern.matches(secret_ref))
    }

    /// Whether a request of `method` to `path` may go here (before the session's own scope).
    pub fn admits_route(&self, method: &str, path: &ProxyPath) -> bool {
        self.routes.as_ref().is_none_or(|routes| routes.iter().any(|route| route.matches(method, path)))
    }

    /// Whether `model` may be asked for here (before the session's own scope).
    pub fn admits_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|models| models.iter().any(|pattern| pattern.matches(model)))
    }

    /// Whether a model rule applies here or in `scope` (the request's model must then be read).
    pub fn restricts_models(&self, scope: &Scope) -> bool {
        self.models.is_some() || scope.models().is_some()
    }
}

impl Scope {
    /// Checks at issuance that this scope, for a session of `secret_ref`, only narrows what `upstreams`
    /// allow: each upstream it names exists and may receive the key, and each route and model it names
    /// lies within what at least one of its upstreams admits (every upstream that may receive the key,
    /// when it names none). Without any upstream to go through (forward-auth only), routes and models
    /// are the session's own to state: there is nothing they could widen.
    ///
    /// # Errors
    /// [`ScopeError::Widens`] naming the field and the first entry at fault.
    pub fn check_within(
        &self,
        secret_ref: &SecretRef,
        upstreams: &[UpstreamPolicy],
    ) -> Result<(), ScopeError> {
        let usable: Vec<&UpstreamPolicy> =
            upstreams.iter().filter(|policy| policy.allows_key(secret_ref)).collect();
        let in_scope: Vec<&UpstreamPolicy> = match self.upstreams() {
            None => usable,
            Some(named) => {
                for name in named {
                    if !usable.iter().any(|policy| &policy.name == name) {
                        return Err(ScopeError::Widens { field: "scope.upstreams", entry: name.to_string() });
                    }
                }
                usable.into_iter().filter(|policy| named.contains(&policy.name)).collect()
            }
        };
        if in_scope.is_empty() {
            return Ok(());
        }
        if let Some(routes) = self.routes()
            && let Some(route) = routes.iter().find(|route| {
                !in_scope.iter().any(|policy| {
                    check_routes_within(std::slice::from_ref(route), policy.routes.as_deref()).is_ok()
                })
            })
        {
            return Err(ScopeError::Widens { field: "scope.routes", entry: route.to_string() });
        }
        if let Some(models) = self.models()
            && let Some(model) = models.iter().find(|model| {
                !in_scope.iter().any(|policy| {
                    check_models_within(std::slice::from_ref(model), policy.models.as_deref()).is_ok()
                })
            })
        {
            return Err(ScopeError::Widens { field: "scope.models", entry: model.to_string() });
        }
        Ok(())
    }
}

/// Checks at issuance that every requested route lies within one the upstream allows (`None`: the
/// upstream admits any route). Comparing each requested pattern with each allowed one is exact (see
/// [`RoutePattern::covers`]).
///
/// # Errors
/// [`ScopeError::Widens`] with `scope.routes` and the first requested route no allowed route covers.
pub fn check_routes_within(
    requested: &[RoutePattern],
    allowed: Option<&[RoutePattern]>,
) -> Result<(), ScopeError> {
    let Some(allowed) = allowed else { return Ok(()) };
    match requested.iter().find(|route| !allowed.iter().any(|wide| wide.covers(route))) {
        Some(route) => Err(ScopeError::Widens { field: "scope.routes", entry: route.to_string() }),
        None => Ok(()),
    }
}

/// Checks at issuance that every requested model pattern lies within one the upstream allows (`None`: the
/// upstream admits any model).
///
/// # Errors
/// [`ScopeError::Widens`] with `scope.models` and the first requested pattern no allowed pattern covers.
pub fn check_models_within(
    requested: &[ModelPattern],
    allowed: Option<&[ModelPattern]>,
) -> Result<(), ScopeError> {
    let Some(allowed) = allowed else { return Ok(()) };
    match requested.iter().find(|model| !allowed.iter().any(|wide| wide.covers(model))) {
        Some(model) => Err(ScopeError::Widens { field: "scope.models", entry: model.to_string() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(
        name: &str,
        keys: &[&str],
        routes_: Option<&[&str]>,
        models_: Option<&[&str]>,
    ) -> UpstreamPolicy {
        UpstreamPolicy {
            name: UpstreamName::parse(name).unwrap(),
            allowed_keys: keys.iter().map(|key| SecretPattern::parse(key).unwrap()).collect(),
            routes: routes_.map(routes),
            models: models_.map(models),
        }
    }

    #[test]
    fn a_scope_may_only_narrow_the_upstreams_that_may_receive_the_key() {
        let key = SecretRef::parse("openai-prod").unwrap();
        let policies = [
            policy(
                "openai",
                &["openai-*"],
                Some(&["POST /v1/chat/completions", "GET /v1/models"]),
                Some(&["gpt-4o-mini", "gpt-4.1-*"]),
            ),
            policy("anthropic", &["anthropic-*"], None, None),
            policy("open", &["openai-prod"], None, None),
        ];
        let scope = |upstreams_: Option<&[&str]>, routes_: Option<&[&str]>, models_: Option<&[&str]>| {
            Scope::new(ScopeParts {
                upstreams: upstreams_.map(upstreams),
                routes: routes_.map(routes),
                models: models_.map(models),
                origins: None,
            })
            .unwrap()
        };
        let narrow = scope(Some(&["openai"]), Some(&["POST /v1/chat/completions"]), Some(&["gpt-4.1-mini"]));
        assert_eq!(narrow.check_within(&key, &policies), Ok(()));
        let widens = |scope: Scope| match scope.check_within(&key, &policies) {
            Err(ScopeError::Widens { field, entry }) => (field, entry),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            widens(scope(Some(&["anthropic"]), None, None)),
            ("scope.upstreams", "anthropic".to_owned())
        );
        assert_eq!(widens(scope(Some(&["nowhere"]), None, None)), ("scope.upstreams", "nowhere".to_owned()));
        assert_eq!(
            widens(scope(Some(&["openai"]), Some(&["GET /v1/files"]), None)),
            ("scope.routes", "GET /v1/files".to_owned())
        );
        assert_eq!(
            widens(scope(Some(&["openai"]), None, Some(&["o1-pro"]))),
            ("scope.models", "o1-pro".to_owned())
        );
        // Without named upstreams, a route any usable upstream admits is within (here `open` admits all).
        assert_eq!(
            scope(None, Some(&["GET /v1/files"]), Some(&["o1-pro"])).check_within(&key, &policies),
            Ok(())
        );
    }

    fn routes(texts: &[&str]) -> Vec<RoutePattern> {
        texts.iter().map(|text| RoutePattern::parse(text).unwrap()).collect()
    }

    fn models(texts: &[&str]) -> Vec<ModelPattern> {
        texts.iter().map(|text| ModelPattern::parse(text).unwrap()).collect()
    }

    fn upstreams(names: &[&str]) -> BTreeSet<UpstreamName> {
        names.iter().map(|name| UpstreamName::parse(name).unwrap()).collect()
    }

    fn origins(texts: &[&str]) -> BTreeSet<Origin> {
        texts.iter().map(|text| Origin::parse(text).unwrap()).collect()
    }

    fn path(raw: &str) -> ProxyPath {
        ProxyPath::parse(raw).unwrap()
    }

    #[test]
    fn the_default_scope_is_unrestricted_and_admits_everything() {
        let scope = Scope::default();
        assert!(scope.is_unrestricted());
        assert_eq!(Scope::new(ScopeParts::default()), Ok(Scope::default()));
        assert!(scope.admits_upstream(&UpstreamName::parse("anything").unwrap()));
        assert!(scope.admits_route("DELETE", &path("/v1/files/x")));
        assert!(scope.admits_model("any-model"));
        assert!(scope.admits_origin(None));
        assert!(scope.admits_origin(Some("null")));
    }

    #[test]
    fn a_field_set_but_empty_is_refused_naming_it() {
        let cases = [
            (ScopeParts { upstreams: Some(BTreeSet::new()), ..ScopeParts::default() }, "scope.upstreams"),
            (ScopeParts { routes: Some(Vec::new()), ..ScopeParts::default() }, "scope.routes"),
            (ScopeParts { models: Some(Vec::new()), ..ScopeParts::default() }, "scope.models"),
            (ScopeParts { origins: Some(BTreeSet::new()), ..ScopeParts::default() }, "scope.origins"),
        ];
        for (parts, field) in cases {
            assert_eq!(Scope::new(parts), Err(ScopeError::Empty { field }));
        }
    }

    #[test]
    fn each_field_is_bounded_at_its_limit() {
        let many_upstreams =
            |count: usize| (0..count).map(|i| UpstreamName::parse(&format!("u{i}")).unwrap()).collect();
        let many_routes =
            |count: usize| (0..count).map(|i| RoutePattern::parse(&format!("GET /r{i}")).unwrap()).collect();
        let many_models =
            |count: usize| (0..count).map(|i| ModelPattern::parse(&format!("m{i}")).unwrap()).collect();
        let many_origins = |count: usize| {
            (0..count).map(|i| Origin::parse(&format!("https://o{i}.example")).unwrap()).collect()
        };

        assert!(
            Scope::new(ScopeParts { upstreams: Some(many_upstreams(16)), ..ScopeParts::default() }).is_ok()
        );
        assert_eq!(
            Scope::new(ScopeParts { upstreams: Some(many_upstreams(17)), ..ScopeParts::default() }),
            Err(ScopeError::TooMany { field: "scope.upstreams", max: 16, count: 17 })
        );
        assert!(Scope::new(ScopeParts { routes: Some(many_routes(64)), ..ScopeParts::default() }).is_ok());
        assert_eq!(
            Scope::new(ScopeParts { routes: Some(many_routes(65)), ..ScopeParts::default() }),
            Err(ScopeError::TooMany { field: "scope.routes", max: 64, count: 65 })
        );
        assert!(Scope::new(ScopeParts { models: Some(many_models(64)), ..ScopeParts::default() }).is_ok());
        assert_eq!(
            Scope::new(ScopeParts { models: Some(many_models(65)), ..ScopeParts::default() }),
            Err(ScopeError::TooMany { field: "scope.models", max: 64, count: 65 })
        );
        assert!(Scope::new(ScopeParts { origins: Some(many_origins(16)), ..ScopeParts::default() }).is_ok());
        let error =
            Scope::new(ScopeParts { origins: Some(many_origins(17)), ..ScopeParts::default() }).unwrap_err();
        assert_eq!(error.to_string(), "scope.origins may hold at most 16 entries, got 17");
    }

    #[test]
    fn a_scoped_session_admits_only_what_its_scope_lists() {
        let scope = Scope::new(ScopeParts {
            upstreams: Some(upstreams(&["openai"])),
            routes: Some(routes(&["POST /v1/chat/completions", "GET /v1/models/*"])),
            models: Some(models(&["gpt-4o-mini", "gpt-4.1-*"])),
            origins: Some(origins(&["https://app.example.com"])),
        })
        .unwrap();
        assert!(!scope.is_unrestricted());

        assert!(scope.admits_upstream(&UpstreamName::parse("openai").unwrap()));
        assert!(!scope.admits_upstream(&UpstreamName::parse("anthropic").unwrap()));

        assert!(scope.admits_route("POST", &path("/v1/chat/completions")));
        assert!(scope.admits_route("GET", &path("/v1/models/gpt-4o")));
        assert!(!scope.admits_route("GET", &path("/v1/chat/completions")));
        assert!(!scope.admits_route("POST", &path("/v1/files")));

        assert!(scope.admits_model("gpt-4o-mini"));
        assert!(scope.admits_model("gpt-4.1-nano"));
        assert!(!scope.admits_model("gpt-4o"));

        assert!(scope.admits_origin(Some("https://app.example.com")));
        assert!(!scope.admits_origin(Some("https://evil.example.com")));
        assert!(!scope.admits_origin(Some("null")));
        assert!(!scope.admits_origin(None));
    }

    #[test]
    fn a_scope_restricting_one_field_leaves_the_others_open() {
        let scope =
            Scope::new(ScopeParts { models: Some(models(&["gpt-4o-mini"])), ..ScopeParts::default() })
                .unwrap();
        assert!(!scope.is_unrestricted());
        assert!(scope.admits_origin(None));
        assert!(scope.admits_route("PUT", &path("/anything")));
        assert!(!scope.admits_model("gpt-4o"));
        assert_eq!(Scope::new(scope.to_parts()), Ok(scope.clone()));
        assert_eq!(scope.models(), Some(&models(&["gpt-4o-mini"])[..]));
        assert_eq!(scope.routes(), None);
    }

    #[test]
    fn routes_within_the_upstreams_pass_and_the_first_wider_one_is_named() {
        let allowed = routes(&["POST /v1/chat/completions", "ANY /v1/responses/*", "GET /v1/models"]);
        let narrower = routes(&["POST /v1/responses/abc/*", "POST /v1/chat/completions"]);
        assert_eq!(check_routes_within(&narrower, Some(&allowed)), Ok(()));
        let wider = routes(&["GET /v1/models", "GET /v1/models/*", "POST /v1/files"]);
        let error = check_routes_within(&wider, Some(&allowed)).unwrap_err();
        assert_eq!(error, ScopeError::Widens { field: "scope.routes", entry: "GET /v1/models/*".into() });
        assert_eq!(
            error.to_string(),
            "scope.routes entry \"GET /v1/models/*\" is outside what the upstream allows"
        );
        assert_eq!(check_routes_within(&routes(&["ANY /*"]), None), Ok(()));
        assert!(check_routes_within(&routes(&["ANY /v1/chat/completions"]), Some(&allowed)).is_err());
    }

    #[test]
    fn models_within_the_upstreams_pass_and_the_first_wider_one_is_named() {
        let allowed = models(&["gpt-4o-mini", "gpt-4.1-*"]);
        assert_eq!(
            check_models_within(&models(&["gpt-4.1-mini", "gpt-4.1-nano-*", "gpt-4o-mini"]), Some(&allowed)),
            Ok(())
        );
        let error = check_models_within(&models(&["gpt-4o-mini", "gpt-*"]), Some(&allowed)).unwrap_err();
        assert_eq!(error, ScopeError::Widens { field: "scope.models", entry: "gpt-*".into() });
        assert_eq!(error.to_string(), "scope.models entry \"gpt-*\" is outside what the upstream allows");
        assert_eq!(check_models_within(&models(&["*"]), None), Ok(()));
    }

    fn route_strategy() -> impl Strategy<Value = RoutePattern> {
        let method = prop_oneof![Just("ANY"), Just("GET"), Just("POST")];
        let base =
            proptest::collection::vec(prop_oneof![Just("/a"), Just("/b")], 0..3).prop_map(|s| s.concat());
        (method, base, any::<bool>()).prop_map(|(method, base, subtree)| {
            let text = match (base.is_empty(), subtree) {
                (_, true) => format!("{method} {base}/*"),
                (true, false) => format!("{method} /"),
                (false, false) => format!("{method} {base}"),
            };
            RoutePattern::parse(&text).unwrap()
        })
    }

    proptest! {
        #[test]
        fn a_scope_that_passes_the_route_check_admits_no_request_the_upstream_refuses(
            requested in proptest::collection::vec(route_strategy(), 1..4),
            allowed in proptest::collection::vec(route_strategy(), 1..4),
            method in prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
            raw in "(/[ab]){0,3}/?",
        ) {
            let Ok(path) = ProxyPath::parse(&raw) else { return Ok(()) };
            if check_routes_within(&requested, Some(&allowed)).is_ok()
                && requested.iter().any(|route| route.matches(method, &path))
            {
                prop_assert!(allowed.iter().any(|route| route.matches(method, &path)));
            }
        }
    }
}
