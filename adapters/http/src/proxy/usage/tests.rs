//! Tests of the usage module: real answers of every format (`samples`), and what must hold for any
//! chunking of them.
//!
//! # Layout
//! - `samples`: short real answers and events, in the shapes the official SDKs parse.
//! - `request`: [`prepare_request`](super::prepare_request), [`Endpoint::of`](super::Endpoint::of),
//!   the query helpers.
//! - `sse`: the event-stream framing.
//! - `meter`: [`UsageMeter`](super::UsageMeter) on JSON answers and streams, cut, broken and stripped.

mod meter;
mod request;
mod samples;
mod sse;
