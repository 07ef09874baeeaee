//! The routes of the OpenAPI document and what they share.
//!
//! # Layout
//! - [`auth`]: the bearer extractors ([`auth::VerifiedSession`] for any route that needs a session).
//! - [`json_body`]: the size-limited JSON body extractor that names invalid fields.
//! - [`terms`]: a session's scope, limits, usage and what remains, as the API spells them.
//! - [`session`], [`admin`], [`operations`]: the routes of the contract's sections.

pub mod admin;
pub mod auth;
pub mod json_body;
pub mod operations;
pub mod session;
pub mod terms;
