//! Scoped sessions: the values a session's scope and limits are made of, and their pure rules.
//!
//! # Layout
//! - [`upstream_name`]: [`UpstreamName`], the `{upstream}` of `/v1/proxy/{upstream}/…`.
//! - [`path`]: [`ProxyPath`], the path below an upstream in the one canonical form that is both matched
//!   and forwarded, and the rules (with their reasons) that refuse the ambiguous ones.

pub mod path;
pub mod upstream_name;

pub use path::{PathError, ProxyPath};
pub use upstream_name::{UpstreamName, UpstreamNameError};
