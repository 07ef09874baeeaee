//! Scoped sessions: the values a session's scope and limits are made of, and their pure rules.
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

pub mod limits;
pub mod model;
pub mod origin;
pub mod path;
pub mod route;
pub mod upstream_name;

pub use limits::{
    LimitError, LimitField, Limits, LimitsParts, LimitsPolicy, LimitsPolicyError, ZeroLimitError,
};
pub use model::{ModelPattern, ModelPatternError};
pub use origin::{Origin, OriginError};
pub use path::{PathError, ProxyPath};
pub use route::{RouteError, RoutePattern};
pub use upstream_name::{UpstreamName, UpstreamNameError};
