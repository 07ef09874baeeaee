//! Server-sent-event framing, as the WHATWG HTML standard parses an `text/event-stream` (§9.2.6), fed
//! whatever chunks the network delivers.
//!
//! Hand-written rather than `sse-stream` or `eventsource-stream` because the meter needs what those
//! crates hide: the byte offset where each event's bytes end (to cut out exactly one event when
//! stripping), the `\n` of a `\r\n` that arrives in the next chunk, and a bound on what one event may
//! hold in memory. Framing rules:
//! - a line ends at `\r\n`, `\n` or `\r`; a `\r` at the end of a chunk ends its line at once, and a `\n`
//!   starting the next chunk belongs to that same line end;
//! - a blank line ends an event; an event without `data` dispatches nothing;
//! - `field:value`, one space after the colon dropped; a line without a colon is a field with an empty
//!   value; `data` lines are joined with `\n`; `event` names the event; a line starting with `:` is a
//!   comment; other fields (`id`, `retry`, unknown) are ignored;
//! - a UTF-8 byte-order mark at the very start of the stream is dropped.
//!
//! An event's "bytes" run from just after the previous event's blank line through its own blank line
//! (comments and `event:` lines included); [`SseItem::EventEnd`] reports where they end.

/// What [`SseParser::feed`] reports, in stream order. Offsets are into the chunk being fed.
#[derive(Debug)]
pub(super) enum SseItem<'a> {
    /// A blank line ended an event's bytes at `end`; `event` is `None` when it had no `data`.
    EventEnd { end: usize, event: Option<SseEvent<'a>> },
    /// The `\n` just before `end` completes the `\r\n` whose `\r` ended the previous event (the `\r`
    /// was the last byte of an earlier chunk, or of this one): its bytes belong to that event.
    TerminatorTail { end: usize },
    /// The current event grew past the limit: parsing stops here for good.
    Overflow,
}

/// One dispatched event.
#[derive(Debug)]
pub(super) struct SseEvent<'a> {
    /// The `event` field, `b"message"` when absent (as the standard defaults it).
    #[cfg_attr(not(test), expect(dead_code, reason = "the usage readers go by the JSON `type` instead"))]
    pub name: &'a [u8],
    /// The `data` lines joined with `\n`.
    pub data: &'a [u8],
}

/// Buffers above this are released after use rather than kept for the next event: one large event
/// must not pin its memory for the rest of a long stream.
const RETAINED_BUFFER_BYTES: usize = 64 * 1024;

const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

pub(super) struct SseParser {
    /// The most bytes one event may span (see `UsageMeter`'s `MAX_EVENT_BYTES`).
    max_event_bytes: usize,
    /// The current line, when it started in an earlier chunk.
    line: Vec<u8>,
    /// The current event's `data` lines, each followed by `\n`.
    data: Vec<u8>,
    /// The current event's `event` field.
    name: Vec<u8>,
    /// The previous byte was a `\r` line end: a `\n` now is part of it.
    after_cr: bool,
    /// ...and that `\r` was a blank line, ending an event.
    cr_ended_event: bool,
    /// Bytes of the current event seen so far.
    event_bytes: usize,
    /// No line has ended yet (the byte-order mark can only lead the first line).
    first_line: bool,
    overflowed: bool,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            data: Vec::new(),
            name: Vec::new(),
            after_cr: false,
            cr_ended_event: false,
            event_bytes: 0,
            first_line: true,
            overflowed: false,
        }
    }

    /// Parses `chunk`, reporting each event end (and overflow) to `sink` as it is found.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl FnMut(SseItem<'_>)) {
        let mut at = 0;
        while at < chunk.len() && !self.overflowed {
            if self.after_cr {
                self.after_cr = false;
                if chunk[at] == b'\n' {
                    at += 1;
                    if self.cr_ended_event {
                        sink(SseItem::TerminatorTail { end: at });
                    } else {
                        self.count(1, sink);
                    }
                    continue;
                }
            }
            let rest = &chunk[at..];
            let Some(offset) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.count(rest.len(), sink);
                if !self.overflowed {
                    self.line.extend_from_slice(rest);
                }
                return;
            };
            self.count(offset + 1, sink);
            if self.overflowed {
                return;
            }
            self.after_cr = rest[offset] == b'\r';
            at += offset + 1;
            let dispatched = if self.line.is_empty() {
                self.end_line(&rest[..offset], at, sink)
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..offset]);
                let dispatched = self.end_line(&line, at, sink);
                line.clear();
                if line.capacity() <= RETAINED_BUFFER_BYTES {
                    self.line = line;
                }
                dispatched
            };
            self.cr_ended_event = dispatched && self.after_cr;
        }
    }

    /// The stream ended: an event cut before its blank line is reported to `on_event` all the same
    /// (a browser would drop it, but the upstream sent, and billed, what it says).
    pub fn finish(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.overflowed {
            return;
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let line =
                if self.first_line { line.strip_prefix(BYTE_ORDER_MARK).unwrap_or(&line) } else { &line };
            self.field(line);
        }
        if let Some(event) = self.take_event() {
            on_event(event);
        }
        self.data.clear();
        self.name.clear();
    }

    /// Counts `bytes` more of the current event, reporting an overflow once.
    fn count(&mut self, bytes: usize, sink: &mut impl FnMut(SseItem<'_>)) {
        self.event_bytes = self.event_bytes.saturating_add(bytes);
        if self.event_bytes > self.max_event_bytes {
            self.overflowed = true;
            self.line = Vec::new();
            self.data = Vec::new();
            sink(SseItem::Overflow);
        }
    }

    /// Handles one complete line (its terminator at `end - 1`); whether it ended an event.
    fn end_line(&mut self, line: &[u8], end: usize, sink: &mut impl FnMut(SseItem<'_>)) -> bool {
        let line = if std::mem::take(&mut self.first_line) {
            line.strip_prefix(BYTE_ORDER_MARK).unwrap_or(line)
        } else {
            line
        };
        if !line.is_empty() {
            self.field(line);
            return false;
        }
        self.event_bytes = 0;
        let event = self.take_event();
        sink(SseItem::EventEnd { end, event });
        self.data.clear();
        self.name.clear();
        if self.data.capacity() > RETAINED_BUFFER_BYTES {
            self.data = Vec::new();
        }
        true
    }

    fn field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            _ => {}
        }
    }

    /// The event gathered so far, if it has data (its last `\n` left out).
    fn take_event(&self) -> Option<SseEvent<'_>> {
        let data = self.data.strip_suffix(b"\n")?;
        let name = if self.name.is_empty() { &b"message"[..] } else { &self.name };
        Some(SseEvent { name, data })
    }
}
