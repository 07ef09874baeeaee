//! The answer of a metered request: its body passes through a [`UsageMeter`] on its way to the client
//! (every chunk at once; only the usage-only chunk sidekey asked for is removed), and when it ends —
//! completely, cut by either side, or dropped — its reservation is settled with what the upstream
//! reported.
//!
//! What a reservation is settled with:
//! - an answer whose final usage was read: that usage;
//! - a non-success answer (4xx/5xx) whose usage says nothing: nothing (the upstream generated nothing);
//! - a stream cut before its final usage: the usage reported so far, or the whole reservation when none
//!   was reported (never zero: a cut stream may have cost anything up to it);
//! - an answer whose usage cannot be read (malformed, a format mismatch), or an upstream whose `usage`
//!   setting is `none`: the whole reservation, logged once per upstream.

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use sidekey_application::Metering;
use sidekey_application::ports::Reservation;
use sidekey_domain::TokenUsage;

use super::body::ResponseBody;
use super::usage::{UsageFormat, UsageMeter};

/// What a reservation stands for, to settle a cut or unreadable answer with.
#[derive(Debug, Clone, Copy)]
pub struct Reserved {
    /// The request body's input estimate.
    pub input: u64,
    /// The output ceiling reserved.
    pub output: u64,
}

/// The settling side of a metered answer: settles exactly once, when the body ends or is dropped.
pub struct Settlement {
    metering: Arc<Metering>,
    reservation: Option<Box<Reservation>>,
    reserved: Reserved,
    upstream: Arc<str>,
    format: UsageFormat,
    success: bool,
}

impl Settlement {
    /// A settlement of `reservation` for an answer of `upstream`.
    pub fn new(
        metering: Arc<Metering>,
        reservation: Box<Reservation>,
        reserved: Reserved,
        upstream: Arc<str>,
        format: UsageFormat,
        success: bool,
    ) -> Self {
        Self { metering, reservation: Some(reservation), reserved, upstream, format, success }
    }

    /// Settles with what `meter` read (once; later calls do nothing).
    fn settle(&mut self, meter: &UsageMeter) {
        let Some(reservation) = self.reservation.take() else { return };
        let usage = self.usage(meter);
        let upstream = self.upstream.to_string();
        metrics::counter!("sidekey_proxy_tokens_total", "upstream" => upstream.clone(), "kind" => "input")
            .increment(usage.input);
        metrics::counter!("sidekey_proxy_tokens_total", "upstream" => upstream, "kind" => "output")
            .increment(usage.output);
        let metering = self.metering.clone();
        let settle = async move { metering.settle(&reservation, usage).await };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(settle);
            }
            Err(_) => tracing::warn!("no runtime to settle a reservation on; it will lapse"),
        }
    }

    fn usage(&self, meter: &UsageMeter) -> TokenUsage {
        let whole = TokenUsage { input: self.reserved.input, output: self.reserved.output };
        if self.format == UsageFormat::None {
            return whole;
        }
        let report = meter.report();
        match report.usage {
            Some(usage) if report.complete => {
                TokenUsage { input: usage.input_tokens, output: usage.output_tokens }
            }
            _ if report.unreadable => {
                unreadable_once(&self.upstream);
                whole
            }
            None if !self.success => TokenUsage::default(),
            Some(partial) => TokenUsage { input: partial.input_tokens, output: partial.output_tokens },
            None => whole,
        }
    }
}

/// Logs, once per upstream, that its answers' usage could not be read.
fn unreadable_once(upstream: &str) {
    static LOGGED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut logged = LOGGED.lock().unwrap_or_else(PoisonError::into_inner);
    if logged.get_or_insert_with(HashSet::new).insert(upstream.to_owned()) {
        tracing::warn!(
            upstream,
            "the upstream's answer carried no readable token usage (check its `usage` setting); \
             counted as its reservation"
        );
    }
}

/// The upstream's body, read by a meter on its way to the client, settled when it ends.
pub struct MeteredBody {
    inner: ResponseBody,
    meter: UsageMeter,
    settlement: Settlement,
    ended: bool,
}

impl MeteredBody {
    /// Wraps `inner`, reading it with `meter` and settling with `settlement`.
    pub fn new(inner: ResponseBody, meter: UsageMeter, settlement: Settlement) -> Self {
        Self { inner, meter, settlement, ended: false }
    }
}

impl MeteredBody {
    /// The upstream's body has ended whole: reads what the meter was waiting on, settles, and returns
    /// `forward` followed by any bytes the meter still held.
    fn end(&mut self, forward: Bytes) -> Bytes {
        self.ended = true;
        let rest = self.meter.finish();
        self.settlement.settle(&self.meter);
        match (forward.is_empty(), rest.is_empty()) {
            (_, true) => forward,
            (true, false) => rest,
            (false, false) => [forward, rest].concat().into(),
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let mut forward = this.meter.feed(data);
                        // A body of declared length is complete with its last byte, and a server that
                        // has written that many bytes stops polling: the end must be seen here, or the
                        // answer would be settled unread when it is dropped.
                        if this.inner.is_end_stream() {
                            forward = this.end(forward);
                        }
                        // A chunk that was only the stripped usage event leaves nothing to send.
                        if !forward.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(forward))));
                        }
                        if this.ended {
                            return Poll::Ready(None);
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(error))) => {
                    this.ended = true;
                    this.settlement.settle(&this.meter);
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    let rest = this.end(Bytes::new());
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        // Stripping may shorten the body: never promise the upstream's length.
        SizeHint::default()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // The client went away mid-answer, or the body was never read: settle with what was read.
        self.settlement.settle(&self.meter);
    }
}
