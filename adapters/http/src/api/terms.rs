//! A session's terms as the API spells them: its `scope`, its `limits`, its `usage` and what remains.
//!
//! The same objects serve the request (`POST /v1/sessions`) and the answers: a session is shown with
//! the scope and limits it was granted, which may be narrower than asked (defaults and ceilings apply).

use std::collections::BTreeSet;

use poem_openapi::Object;
use serde::Deserialize;
use sidekey_application::ports::SessionUsage;
use sidekey_domain::{
    Limits, LimitsParts, ModelPattern, Origin, RoutePattern, Scope, ScopeParts, UpstreamName,
};

use crate::problem::ApiError;

/// What a session may reach. Each field left out (or null) restricts nothing beyond the configuration;
/// a session can only narrow what the configuration allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(rename = "Scope")]
pub struct ScopeObject {
    /// Upstreams the session may call (`/v1/proxy/{upstream}/…`); default: every upstream that may
    /// receive its key.
    #[oai(nullable, validator(max_items = 16))]
    pub upstreams: Option<Vec<String>>,
    /// Routes it may call: `"METHOD /path"`, a final `/*` for a path and everything below it, `ANY` for
    /// every method.
    #[oai(nullable, validator(max_items = 64))]
    pub routes: Option<Vec<String>>,
    /// Models it may ask for (the JSON body's `model`, or a `model` query parameter): exact names or
    /// trailing-`*` patterns.
    #[oai(nullable, validator(max_items = 64))]
    pub models: Option<Vec<String>>,
    /// Browser origins its proxied calls must come from (`scheme://host[:port]`): a call without one of
    /// these `Origin`s is refused.
    #[oai(nullable, validator(max_items = 16))]
    pub origins: Option<Vec<String>>,
}

/// What a session may consume. Each field left out takes the configured default, capped by the
/// configured ceiling; asking above a ceiling is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(rename = "Limits")]
pub struct LimitsObject {
    /// Proxied requests over the session's life.
    #[oai(nullable, validator(minimum(value = "1")))]
    pub max_requests: Option<u64>,
    /// Proxied requests per minute (a burst of the whole minute's allowance, then one per interval).
    #[oai(nullable, validator(minimum(value = "1")))]
    pub requests_per_minute: Option<u32>,
    /// Input and output tokens over the session's life, metered from the upstream's answers.
    #[oai(nullable, validator(minimum(value = "1")))]
    pub max_tokens: Option<u64>,
    /// The most output tokens one request may ask for: `max_tokens`, `max_completion_tokens` and
    /// `max_output_tokens` in a proxied body are clamped to it, or set when absent.
    #[oai(nullable, validator(minimum(value = "1")))]
    pub max_output_tokens_per_request: Option<u32>,
}

/// What a session has used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Object)]
#[oai(rename = "Usage")]
pub struct UsageObject {
    /// Proxied requests admitted.
    pub requests: u64,
    /// Input tokens the upstreams reported.
    pub input_tokens: u64,
    /// Output tokens the upstreams reported.
    pub output_tokens: u64,
}

/// What a session may still use under its own limits (null where it has none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Object)]
#[oai(rename = "Remaining")]
pub struct RemainingObject {
    /// Proxied requests left; null without `max_requests`.
    #[oai(nullable)]
    pub requests: Option<u64>,
    /// Tokens left, reservations of requests in flight deducted; null without `max_tokens`.
    #[oai(nullable)]
    pub tokens: Option<u64>,
}

impl ScopeObject {
    /// The domain's scope, each entry validated; the error names the field and the entry.
    ///
    /// # Errors
    /// `validation_failed` naming the field.
    pub fn to_scope(&self) -> Result<Scope, ApiError> {
        let parts = ScopeParts {
            upstreams: parse_all::<BTreeSet<_>, _, _>(
                "scope.upstreams",
                self.upstreams.as_deref(),
                UpstreamName::parse,
            )?,
            routes: parse_all("scope.routes", self.routes.as_deref(), RoutePattern::parse)?,
            models: parse_all("scope.models", self.models.as_deref(), ModelPattern::parse)?,
            origins: parse_all::<BTreeSet<_>, _, _>("scope.origins", self.origins.as_deref(), Origin::parse)?,
        };
        Scope::new(parts).map_err(|error| ApiError::invalid("scope", error))
    }

    /// The API's view of `scope`.
    pub fn of(scope: &Scope) -> Self {
        let texts = |items: Option<Vec<String>>| items;
        Self {
            upstreams: texts(scope.upstreams().map(|set| set.iter().map(ToString::to_string).collect())),
            routes: texts(scope.routes().map(|list| list.iter().map(ToString::to_string).collect())),
            models: texts(scope.models().map(|list| list.iter().map(ToString::to_string).collect())),
            origins: texts(scope.origins().map(|set| set.iter().map(ToString::to_string).collect())),
        }
    }
}

fn parse_all<C, T, E: std::fmt::Display>(
    field: &str,
    texts: Option<&[String]>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<C>, ApiError>
where
    C: FromIterator<T>,
{
    texts
        .map(|texts| {
            texts
                .iter()
                .map(|text| {
                    parse(text).map_err(|error| ApiError::invalid(field, format!("{text:?}: {error}")))
                })
                .collect::<Result<C, _>>()
        })
        .transpose()
}

impl LimitsObject {
    /// The domain's limits as asked for.
    ///
    /// # Errors
    /// `validation_failed` naming a field set to zero.
    pub fn to_limits(&self) -> Result<Limits, ApiError> {
        Limits::new(LimitsParts {
            max_requests: self.max_requests,
            requests_per_minute: self.requests_per_minute,
            max_tokens: self.max_tokens,
            max_output_tokens_per_request: self.max_output_tokens_per_request,
        })
        .map_err(|error| ApiError::invalid(error.field.request_path(), "must be at least 1"))
    }

    /// The API's view of `limits`.
    pub fn of(limits: &Limits) -> Self {
        Self {
            max_requests: limits.max_requests(),
            requests_per_minute: limits.requests_per_minute(),
            max_tokens: limits.max_tokens(),
            max_output_tokens_per_request: limits.max_output_tokens_per_request(),
        }
    }
}

impl UsageObject {
    /// The API's view of `usage`.
    pub fn of(usage: &SessionUsage) -> Self {
        Self {
            requests: usage.requests,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
        }
    }
}

impl RemainingObject {
    /// What `limits` leave after `usage`.
    pub fn of(limits: &Limits, usage: &SessionUsage) -> Self {
        let spent =
            usage.input_tokens.saturating_add(usage.output_tokens).saturating_add(usage.reserved_tokens);
        Self {
            requests: limits.max_requests().map(|max| max.saturating_sub(usage.requests)),
            tokens: limits.max_tokens().map(|max| max.saturating_sub(spent)),
        }
    }
}
