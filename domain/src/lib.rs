//! sidekey's domain: the values a session is made of and the pure rules that govern them.
//!
//! This crate does no I/O, reads no clock and knows no framework: every rule that depends on time takes
//! `now` as an argument, so it can be tested at the exact instant where it changes its answer. The one
//! exception is [`Token::generate`], which draws its 256 bits from the operating system's CSPRNG, because a
//! token that could be built from anything weaker must not be representable.
//!
//! Depends on nothing of sidekey's; `application`, `adapters` and `bin` depend on it.
//!
//! # Layout
//! - [`secret_ref`]: [`SecretRef`], the validated *name* of a real credential (`secret_key_id`).
//! - [`secret_value`]: [`SecretValue`], the real credential itself: redacted, zeroed on drop.
//! - [`token`]: [`Token`] (`skt_` + base62 body + checksum), its [`TokenDigest`] and short fingerprint,
//!   and the [`TokenKeys`] a store may know (digest and [`SealingKey`]).
//! - [`ticket`]: [`Ticket`] (`skq_`), the one-time stand-in for a token in a browser's query, its
//!   [`TicketDigest`], and the token sealed under it.
//! - [`session`]: [`SessionId`], [`Subject`], [`Metadata`], [`CallerSession`] and [`Session`] with its
//!   expiry arithmetic.
//! - [`metering`]: the [`TokenUsage`] of a request, the budgets that span sessions ([`SubjectLimits`],
//!   [`SecretKeyLimits`]) and the UTC calendar [`Window`]s they reset with.
//! - [`policy`]: [`SessionPolicy`], the configured TTL bounds and maximum lifetime, and the [`Ttl`] it grants.
//! - [`scope`]: what a scoped session may reach ([`Scope`] of [`UpstreamName`]s, [`RoutePattern`]s,
//!   [`ModelPattern`]s and [`Origin`]s) and consume ([`Limits`], bounded by a [`LimitsPolicy`]), the
//!   canonical [`ProxyPath`] that routes are matched against, and the narrowing checks for issuance.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod metering;
pub mod policy;
pub mod scope;
pub mod secret_ref;
pub mod secret_value;
pub mod session;
pub mod ticket;
pub mod token;

pub use metering::{Period, SecretKeyLimits, SubjectLimits, TokenUsage, Window};
pub use policy::{PolicyError, SessionPolicy, Ttl, TtlError};
pub use scope::{
    LimitError, LimitField, Limits, LimitsParts, LimitsPolicy, LimitsPolicyError, ModelPattern,
    ModelPatternError, Origin, OriginError, PathError, ProxyPath, RouteError, RoutePattern, Scope,
    ScopeError, ScopeParts, UpstreamName, UpstreamNameError, UpstreamPolicy, ZeroLimitError,
    check_models_within, check_routes_within,
};
pub use secret_ref::{SecretPattern, SecretRef, SecretRefError};
pub use secret_value::{SecretValue, SecretValueError};
pub use session::{
    CallerSession, CallerSessionError, Metadata, MetadataError, RESERVED_METADATA_PREFIX, Session, SessionId,
    SessionIdError, SessionParts, SessionPartsError, Subject, SubjectError,
};
pub use ticket::{TICKET_LIFETIME, TICKET_PREFIX, Ticket, TicketDigest, TicketParseError};
pub use token::{EntropyError, SealingKey, Token, TokenDigest, TokenFingerprint, TokenKeys, TokenParseError};
