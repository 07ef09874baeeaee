//! Token usage read from LLM answers as they stream through the proxy, and the rules applied to a request
//! body before it is forwarded. Pure: no I/O, no async, no HTTP types; bytes in, bytes and numbers out.
//!
//! # Design
//! - The client never waits for the meter. [`UsageMeter::feed`] returns what to forward *now*: the
//!   chunk itself (the meter reads it in passing), or, when stripping the usage-only chunk sidekey asked
//!   for on the client's behalf, every complete event of it minus that one. Only the bytes of an event
//!   whose end has not arrived yet are ever held back, and only while stripping.
//! - JSON answers are read once whole, from a copy that stops growing at [`MAX_JSON_ANSWER_BYTES`].
//! - Streams are framed by a hand-written WHATWG server-sent-event parser (`sse`) that knows where each
//!   event's bytes end; an event past [`MAX_EVENT_BYTES`] stops the reading, never the forwarding.
//! - Nothing an upstream sends can make this module panic or hold unbounded memory; what it cannot read
//!   is reported ([`UsageReport::unreadable`]) so that the caller settles with its reservation.
//!
//! # Layout
//! - [`request`]: [`prepare_request`] (model, stream, output ceiling, `include_usage`), [`Endpoint`],
//!   [`UsageFormat`], [`model_from_query`].
//! - `json_object`: byte spans of a JSON object's members, for editing a body in place.
//! - `sse`: server-sent-event framing with event byte offsets.
//! - `formats`: where each API puts its usage, in JSON answers and in stream events.
//! - this file: [`Usage`], [`UsageReport`], [`UsageMeter`], [`realtime_usage`], [`fuzz_one`].

mod formats;
mod json_object;
pub mod request;
mod sse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use formats::{Dialect, StreamReader};
pub use request::{
    BodyError, Endpoint, PreparedRequest, RequestRules, UsageFormat, model_from_query, models_from_query,
    prepare_request,
};
use sse::{SseItem, SseParser};

/// The most of a JSON answer kept to read its usage. An answer is its generated text plus a few KiB:
/// 8 MiB holds the longest text answers (128k output tokens are about 0.5 MB) with room to spare.
/// Above it the report is `unreadable` and the request settles with its reservation.
pub const MAX_JSON_ANSWER_BYTES: usize = 8 << 20;

/// The most bytes one server-sent event may span before the meter stops reading the stream. Chunks and
/// deltas are well under 10 KiB; the largest event that must be read is `response.completed`, which
/// repeats the whole answer (128k output tokens are about 0.5 MB of text). 4 MiB bounds the memory of
/// a stream in flight while leaving that event room. Events carrying generated images (base64) can be
/// larger: their streams are then `unreadable` and settle with the reservation.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// The largest token count believed. Far above any context window (a few million tokens), far below
/// the 2^53 that float counters and JSON hold exactly and the 2^63 of Redis's `INCRBY`, so the sum of a
/// few counts never overflows. A larger count is a broken upstream: `unreadable`.
pub const MAX_PLAUSIBLE_TOKENS: u64 = 1 << 40;

/// Tokens an answer used, as its upstream reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Every billed input token (for Anthropic, cache writes and reads included).
    pub input_tokens: u64,
    /// Every billed output token (reasoning included).
    pub output_tokens: u64,
}

impl Usage {
    /// Input and output together; cannot overflow for counts up to [`MAX_PLAUSIBLE_TOKENS`].
    #[must_use]
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// What the meter learnt from an answer.
///
/// Settling: `complete` → settle with `usage`. Otherwise the answer was cut, refused or unread; settle
/// with the reservation, or with `usage` when that is larger (a cut Anthropic stream reports its input
/// and the output so far). `unreadable` says the upstream's format was not understood somewhere: worth
/// a log line and a metric, as it means usage is silently not being metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageReport {
    /// The usage seen so far; final only when `complete`.
    pub usage: Option<Usage>,
    /// The answer's final usage was seen.
    pub complete: bool,
    /// Something where usage should be could not be parsed (malformed JSON, wrong types, an absurd
    /// number, an answer or event over its size limit).
    pub unreadable: bool,
}

/// Reads the usage of one upstream answer while its bytes go on to the client.
///
/// Feed it every chunk of the body in order with [`feed`](Self::feed) and forward what it returns;
/// at the end of the body (complete or cut) call [`finish`](Self::finish) and forward what it returns;
/// then read [`report`](Self::report).
pub struct UsageMeter {
    state: MeterState,
    finished: bool,
}

enum MeterState {
    /// Nothing to read: format `none`, or an endpoint without usage.
    Off,
    Json(JsonAnswer),
    Stream(Box<StreamAnswer>),
}

impl fmt::Debug for UsageMeter {
    // The held bytes are the user's answer: only the mode and what has been learnt.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.state {
            MeterState::Off => "off",
            MeterState::Json(_) => "json",
            MeterState::Stream(_) => "stream",
        };
        f.debug_struct("UsageMeter").field("mode", &mode).field("report", &self.report()).finish()
    }
}

impl UsageMeter {
    /// A meter for an answer of `endpoint` on an upstream of `format`. `content_type` is the answer's
    /// `Content-Type`: `text/event-stream` is read as a stream, anything else (or none) as one JSON
    /// document. `strip_usage_chunk` removes the usage-only chunk from an OpenAI chat stream (set it when
    /// [`PreparedRequest::include_usage_injected`]); it is ignored for every other kind of answer.
    ///
    /// The body must reach the meter as the upstream encoded it *for the client*: a compressed body
    /// (`Content-Encoding: gzip`) cannot be read, so the proxy asks metered upstreams for identity.
    #[must_use]
    pub fn new(
        format: UsageFormat,
        endpoint: Endpoint,
        content_type: Option<&str>,
        strip_usage_chunk: bool,
    ) -> Self {
        let Some(dialect) = Dialect::of(format, endpoint) else {
            return Self { state: MeterState::Off, finished: false };
        };
        let state = if content_type.is_some_and(is_event_stream) {
            let strip = if strip_usage_chunk && dialect == Dialect::OpenAiChat {
                Strip::Watching { held: Vec::new() }
            } else {
                Strip::Off
            };
            MeterState::Stream(Box::new(StreamAnswer {
                parser: SseParser::new(MAX_EVENT_BYTES),
                reader: StreamReader::new(dialect),
                strip,
                overflowed: false,
            }))
        } else {
            MeterState::Json(JsonAnswer { dialect, copy: Vec::new(), overflowed: false, report: None })
        };
        Self { state, finished: false }
    }

    /// Reads `chunk` and returns what to forward now. Without stripping that is `chunk` itself.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.finished || chunk.is_empty() {
            return chunk;
        }
        match &mut self.state {
            MeterState::Off => chunk,
            MeterState::Json(json) => {
                json.observe(&chunk);
                chunk
            }
            MeterState::Stream(stream) => stream.feed(chunk),
        }
    }

    /// The body ended (whole or cut): reads what was waiting for more and returns any bytes still held
    /// (the start of an event whose end never came). Later calls return nothing.
    pub fn finish(&mut self) -> Bytes {
        if std::mem::replace(&mut self.finished, true) {
            return Bytes::new();
        }
        match &mut self.state {
            MeterState::Off => Bytes::new(),
            MeterState::Json(json) => {
                json.finish();
                Bytes::new()
            }
            MeterState::Stream(stream) => stream.finish(),
        }
    }

    /// What has been learnt so far; final after [`finish`](Self::finish). A JSON answer is only read at
    /// `finish`: before it, its report is empty.
    #[must_use]
    pub fn report(&self) -> UsageReport {
        match &self.state {
            MeterState::Off => UsageReport::default(),
            MeterState::Json(json) => json.report.unwrap_or(UsageReport {
                usage: None,
                complete: false,
                unreadable: json.overflowed,
            }),
            MeterState::Stream(stream) => {
                let mut report = stream.reader.report();
                report.unreadable |= stream.overflowed;
                report
            }
        }
    }
}

/// Whether a `Content-Type` value is `text/event-stream` (parameters and case aside).
fn is_event_stream(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

struct JsonAnswer {
    dialect: Dialect,
    copy: Vec<u8>,
    overflowed: bool,
    report: Option<UsageReport>,
}

impl JsonAnswer {
    fn observe(&mut self, chunk: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.copy.len() + chunk.len() > MAX_JSON_ANSWER_BYTES {
            self.overflowed = true;
            self.copy = Vec::new();
        } else {
            self.copy.extend_from_slice(chunk);
        }
    }

    fn finish(&mut self) {
        let copy = std::mem::take(&mut self.copy);
        self.report = Some(if self.overflowed {
            UsageReport { usage: None, complete: false, unreadable: true }
        } else {
            formats::json_answer(self.dialect, &copy)
        });
    }
}

struct StreamAnswer {
    parser: SseParser,
    reader: StreamReader,
    strip: Strip,
    /// An event outgrew `MAX_EVENT_BYTES`: nothing more is read, everything is forwarded.
    overflowed: bool,
}

/// Removing the usage-only chunk from an OpenAI chat stream.
enum Strip {
    /// Not stripping (never asked, already done, or given up): every chunk is forwarded as it comes.
    Off,
    /// Looking for the chunk: complete events are forwarded, the start of an incomplete one is held.
    Watching { held: Vec<u8> },
    /// Just removed it, and it ended with a `\r` that was the chunk's last byte: a `\n` starting the
    /// next chunk is the rest of its terminator and goes too.
    DropNextLf,
}

impl StreamAnswer {
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        match std::mem::replace(&mut self.strip, Strip::Off) {
            Strip::Off => {
                self.observe(&chunk);
                chunk
            }
            Strip::DropNextLf => {
                self.observe(&chunk);
                if chunk.first() == Some(&b'\n') { chunk.slice(1..) } else { chunk }
            }
            Strip::Watching { held } => self.feed_watching(chunk, held),
        }
    }

    /// Reads `chunk` without changing what is forwarded.
    fn observe(&mut self, chunk: &[u8]) {
        if self.overflowed {
            return;
        }
        let Self { parser, reader, overflowed, .. } = self;
        parser.feed(chunk, &mut |item| match item {
            SseItem::EventEnd { event: Some(event), .. } => {
                reader.on_event(event.data, false);
            }
            SseItem::Overflow => *overflowed = true,
            SseItem::EventEnd { event: None, .. } | SseItem::TerminatorTail { .. } => {}
        });
    }

    fn feed_watching(&mut self, chunk: Bytes, held: Vec<u8>) -> Bytes {
        /// Where the stream stops being watched within this chunk.
        enum Stop {
            /// The usage-only chunk's bytes end here.
            Stripped(usize),
            /// `[DONE]` ended the stream here: nothing after it is stripped.
            PastTheEnd(usize),
            /// The event starting here outgrew the limit.
            Overflow(usize),
        }
        let mut forward = Forward::new(held);
        let mut event_start = 0;
        let mut stop = None;
        let Self { parser, reader, overflowed, .. } = self;
        parser.feed(&chunk, &mut |item| {
            let usage_only = match &item {
                SseItem::EventEnd { event: Some(event), .. } => reader.on_event(event.data, false),
                _ => false,
            };
            if stop.is_some() {
                // The reader still reads what follows; the forwarding is settled below.
                if matches!(item, SseItem::Overflow) {
                    *overflowed = true;
                }
                return;
            }
            match item {
                SseItem::EventEnd { end, .. } if usage_only => {
                    forward.drop_held();
                    stop = Some(Stop::Stripped(end));
                }
                SseItem::EventEnd { end, .. } => {
                    forward.range(event_start..end);
                    event_start = end;
                    if reader.past_the_end() {
                        stop = Some(Stop::PastTheEnd(end));
                    }
                }
                SseItem::TerminatorTail { end } => {
                    // The previous event was forwarded (a stripped one stops the watching): so is this.
                    forward.range(event_start..end);
                    event_start = end;
                }
                SseItem::Overflow => {
                    *overflowed = true;
                    stop = Some(Stop::Overflow(event_start));
                }
            }
        });
        let len = chunk.len();
        match stop {
            None => {
                // The start of an event whose end is still to come: held until it completes.
                let held = forward.hold(&chunk[event_start..]);
                self.strip = Strip::Watching { held };
            }
            Some(Stop::Stripped(end)) => {
                let ended_by_cr = chunk[end - 1] == b'\r';
                let rest = if ended_by_cr && chunk.get(end) == Some(&b'\n') { end + 1 } else { end };
                forward.range(rest..len);
                if ended_by_cr && end == len {
                    self.strip = Strip::DropNextLf;
                }
            }
            Some(Stop::PastTheEnd(from) | Stop::Overflow(from)) => forward.range(from..len),
        }
        forward.into_bytes(&chunk)
    }

    fn finish(&mut self) -> Bytes {
        if !self.overflowed {
            let reader = &mut self.reader;
            self.parser.finish(&mut |event| {
                reader.on_event(event.data, true);
            });
        }
        match std::mem::replace(&mut self.strip, Strip::Off) {
            // An event the stream ended inside of is not an event: forwarded as it is, never stripped.
            Strip::Watching { held } => Bytes::from(held),
            Strip::Off | Strip::DropNextLf => Bytes::new(),
        }
    }
}

/// The bytes to forward for one chunk: what was held from earlier chunks, then ranges of the chunk.
struct Forward {
    held: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

impl Forward {
    fn new(held: Vec<u8>) -> Self {
        Self { held, ranges: Vec::new() }
    }

    /// The event now stripped takes its held start with it, unless an earlier event of this chunk
    /// already completed (and so owns what was held).
    fn drop_held(&mut self) {
        if self.ranges.is_empty() {
            self.held.clear();
        }
    }

    fn range(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        match self.ranges.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => self.ranges.push(range),
        }
    }

    /// Keeps `rest` for the next chunk; returns what to hold. Whatever was held before and has not been
    /// forwarded yet belongs to the same, still incomplete event.
    fn hold(&mut self, rest: &[u8]) -> Vec<u8> {
        let mut held = if self.ranges.is_empty() { std::mem::take(&mut self.held) } else { Vec::new() };
        held.extend_from_slice(rest);
        held
    }

    fn into_bytes(self, chunk: &Bytes) -> Bytes {
        match (self.held.is_empty(), self.ranges.as_slice()) {
            (_, []) if self.held.is_empty() => Bytes::new(),
            (true, [only]) => chunk.slice(only.clone()),
            _ => {
                let len = self.held.len() + self.ranges.iter().map(|range| range.len()).sum::<usize>();
                let mut out = self.held;
                out.reserve(len - out.len());
                for range in self.ranges {
                    out.extend_from_slice(&chunk[range]);
                }
                Bytes::from(out)
            }
        }
    }
}

/// The usage of an OpenAI Realtime `response.done` server event (`response.usage.input_tokens` /
/// `output_tokens`, both optional in the API's types, so one of them suffices); `None` for any other
/// event, or when the usage is absent or not readable.
#[must_use]
pub fn realtime_usage(event_json: &str) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "type")]
        kind: String,
        response: Option<Response>,
    }
    #[derive(Deserialize)]
    struct Response {
        usage: Option<Value>,
    }
    let event: Event = serde_json::from_str(event_json).ok()?;
    if event.kind != "response.done" {
        return None;
    }
    let usage = event.response?.usage?;
    let count = |name: &str| match usage.get(name) {
        None | Some(Value::Null) => Some(None),
        Some(value) => value.as_u64().filter(|n| *n <= MAX_PLAUSIBLE_TOKENS).map(Some),
    };
    match (count("input_tokens")?, count("output_tokens")?) {
        (None, None) => None,
        (input, output) => {
            Some(Usage { input_tokens: input.unwrap_or(0), output_tokens: output.unwrap_or(0) })
        }
    }
}

/// Runs every parser of this module over `data`, whole and split at positions derived from it, and
/// checks what must hold for any input: no panic; the same report whatever the chunking; forwarding
/// that returns the input unchanged, or (when stripping) minus one contiguous run of bytes; a prepared
/// body that is valid JSON and that a second preparation leaves alone. Panics (by design) when a
/// property fails. For a libFuzzer target: `fuzz_target!(|data: &[u8]| <path to>::usage::fuzz_one(data));`
pub fn fuzz_one(data: &[u8]) {
    let splits = split_points(data);
    let content_types = [Some("text/event-stream"), Some("application/json")];
    let endpoints = [
        Endpoint::ChatCompletions,
        Endpoint::Responses,
        Endpoint::AnthropicMessages,
        Endpoint::LegacyCompletions,
        Endpoint::Other,
    ];
    for format in [UsageFormat::OpenAi, UsageFormat::Anthropic, UsageFormat::None] {
        for endpoint in endpoints {
            for content_type in content_types {
                for strip in [false, true] {
                    let (whole_out, whole_report) =
                        meter_run(format, endpoint, content_type, strip, data, &[]);
                    let (split_out, split_report) =
                        meter_run(format, endpoint, content_type, strip, data, &splits);
                    assert_eq!(whole_report, split_report, "the report depends on the chunking");
                    assert_eq!(whole_out, split_out, "the forwarded bytes depend on the chunking");
                    assert!(
                        is_input_minus_one_run(data, &whole_out),
                        "forwarding changed more than one event"
                    );
                    if !strip {
                        assert_eq!(whole_out, data, "forwarding changed an answer it was not asked to strip");
                    }
                }
            }
        }
    }

    let text = String::from_utf8_lossy(data);
    let _ = model_from_query(&text);
    let _ = models_from_query(&text);
    let _ = realtime_usage(&text);
    let _ = Endpoint::of(&text, UsageFormat::Anthropic);

    for endpoint in endpoints {
        for (max_output_tokens, inject_include_usage) in [(None, false), (Some(0), true), (Some(1000), true)]
        {
            let rules = RequestRules {
                endpoint,
                format: UsageFormat::OpenAi,
                max_output_tokens,
                inject_include_usage,
            };
            let Ok(prepared) = prepare_request(data, &rules) else { continue };
            let Some(body) = prepared.body else { continue };
            let again = prepare_request(&body, &rules).expect("a prepared body is valid JSON");
            assert_eq!(again.model, prepared.model, "preparing changed the model");
            assert!(again.body.is_none(), "preparing a prepared body changed it again");
        }
    }
}

/// A few cut positions taken from the data itself, so the fuzzer can steer them.
fn split_points(data: &[u8]) -> Vec<usize> {
    let len = data.len();
    let mut points: Vec<usize> = data.iter().take(4).map(|byte| usize::from(*byte) * len / 256).collect();
    points.extend([len / 2, len.saturating_sub(1)]);
    points.sort_unstable();
    points.dedup();
    points.retain(|point| *point > 0 && *point < len);
    points
}

fn meter_run(
    format: UsageFormat,
    endpoint: Endpoint,
    content_type: Option<&str>,
    strip: bool,
    data: &[u8],
    splits: &[usize],
) -> (Vec<u8>, UsageReport) {
    let mut meter = UsageMeter::new(format, endpoint, content_type, strip);
    let mut out = Vec::with_capacity(data.len());
    let mut from = 0;
    for &to in splits.iter().chain([data.len()].iter()) {
        out.extend_from_slice(&meter.feed(Bytes::copy_from_slice(&data[from..to])));
        from = to;
    }
    out.extend_from_slice(&meter.finish());
    (out, meter.report())
}

/// Whether `output` is `input` with at most one contiguous run of bytes removed.
fn is_input_minus_one_run(input: &[u8], output: &[u8]) -> bool {
    if output.len() > input.len() {
        return false;
    }
    let prefix = input.iter().zip(output).take_while(|(a, b)| a == b).count();
    let suffix = input.iter().rev().zip(output.iter().rev()).take_while(|(a, b)| a == b).count();
    prefix + suffix >= output.len()
}
